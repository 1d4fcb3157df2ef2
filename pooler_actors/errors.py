"""Exceptions raised by the pool, one per way an operation can fail."""

from __future__ import annotations

from collections.abc import Hashable

import pykka

__all__ = [
    "AcquireTimeout",
    "CapacityUnavailable",
    "FactoryError",
    "NotPoolable",
    "PoolClosedError",
    "TooManyWaiters",
    "short_repr",
]

#: The longest repr of a key (or other value) written into a message or event.
REPR_LIMIT = 200


def short_repr(value: object, limit: int = REPR_LIMIT) -> str:
    """`repr(value)`, cut to at most `limit` characters (`...` marks a cut).

    A key can be anything hashable, a megabyte string included: messages and
    log events never carry more than this of it. A `repr` that raises is
    shown as `<unrepresentable T>`.
    """
    try:
        text = repr(value)
    except Exception:
        text = f"<unrepresentable {type(value).__name__}>"
    if len(text) <= limit:
        return text
    return text[: limit - 3] + "..."


class FactoryError(Exception):
    """The factory failed to make a resource for `key`.

    The message names the pool, the key and the cause, as in
    `pool 'x': factory failed for key 'a': ConnectionError: refused`.
    `__cause__` is the factory's own exception (a `TypeError` when it
    returned something the pool cannot ping and close, a `TimeoutError` when
    it did not return within `create_timeout`).

    Attributes:
        key: The key whose resource could not be made.
        pool_name: The pool's name (`None` if not known).
    """

    def __init__(
        self,
        key: Hashable,
        message: str | None = None,
        *,
        pool: str | None = None,
        cause: BaseException | None = None,
    ) -> None:
        head = "" if pool is None else f"pool {pool!r}: "
        text = f"{head}{message or 'factory failed'} for key {short_repr(key)}"
        if cause is not None:
            text += f": {type(cause).__name__}"
            detail = _cause_text(cause)
            if detail:
                text += f": {detail}"
        super().__init__(text)
        self.key = key
        self.pool_name = pool
        if cause is not None:
            self.__cause__ = cause


def _cause_text(cause: BaseException) -> str:
    try:
        text = str(cause)
    except Exception:
        return ""
    if len(text) > 2 * REPR_LIMIT:
        return text[: 2 * REPR_LIMIT - 3] + "..."
    return text


class NotPoolable(TypeError):
    """The factory returned something the pool cannot ping and close.

    The `__cause__` of a [FactoryError][pooler_actors.FactoryError]; a
    `TypeError`, never retried (it is a program's error, not a transient one).
    """


class AcquireTimeout(TimeoutError):
    """The acquire's deadline passed before the resource was ready."""

    def __init__(self, key: Hashable, timeout: float | None) -> None:
        super().__init__(
            f"acquire of key {short_repr(key)} timed out after {timeout} s"
        )
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
            f"acquire of key {short_repr(key)} rejected: {max_waiting} callers "
            "already wait"
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
