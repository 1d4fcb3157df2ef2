"""Exceptions raised by the pool, one per way an operation can fail."""

from __future__ import annotations

from collections.abc import Hashable

import pykka

__all__ = [
    "AcquireTimeout",
    "CapacityUnavailable",
    "FactoryError",
    "PoolClosedError",
    "TooManyWaiters",
]


class FactoryError(Exception):
    """The factory failed to make a resource for `key`.

    `__cause__` is the factory's own exception (a `TypeError` when it
    returned something that is not [Reusable][pooler_actors.Reusable]).
    """

    def __init__(self, key: Hashable, message: str = "pool: factory error") -> None:
        super().__init__(f"{message} (key={key!r})")
        self.key = key


class AcquireTimeout(TimeoutError):
    """The acquire's deadline passed before the resource was ready."""

    def __init__(self, key: Hashable, timeout: float | None) -> None:
        super().__init__(f"acquire of key {key!r} timed out after {timeout} s")
        self.key = key
        self.timeout = timeout


class PoolClosedError(pykka.ActorDeadError):
    """The pool is closed, or closed while the caller was waiting.

    A subclass of `pykka.ActorDeadError`: the supervisor actor is gone.
    """

    def __init__(self, name: str) -> None:
        super().__init__(f"pool {name!r} is closed")
        self.pool_name = name


class TooManyWaiters(RuntimeError):
    """The acquire would queue while `max_waiting` callers already wait."""

    def __init__(self, key: Hashable, max_waiting: int) -> None:
        super().__init__(
            f"acquire of key {key!r} rejected: {max_waiting} callers already wait"
        )
        self.key = key
        self.max_waiting = max_waiting


class CapacityUnavailable(Exception):
    """The fleet-wide capacity engine could not answer, so no global slot was had.

    Raised by a global capacity (such as
    [RedisCapacity][pooler_actors.redis.RedisCapacity]) when its server is
    unreachable, paused past the socket timeout, or refuses the request; a
    pool reports it as the `__cause__` of the
    [AcquireTimeout][pooler_actors.AcquireTimeout] of a creation that failed
    closed. `__cause__` of this exception is the engine's own error.

    Attributes:
        capacity: The name of the global capacity (the semaphore's name).
        reason: What went wrong, in a few words.
    """

    def __init__(self, capacity: str, reason: str) -> None:
        super().__init__(f"global capacity {capacity!r} unavailable: {reason}")
        self.capacity = capacity
        self.reason = reason
