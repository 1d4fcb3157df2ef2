"""The messages a [PoolSupervisor][pooler_actors.PoolSupervisor] answers.

Each is a small immutable command object. Send it with `ref.ask(...)` for
its reply, or `ref.ask(..., block=False)` for a future of it.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pykka
from structlog.contextvars import get_contextvars

from pooler_actors.errors import short_repr
from pooler_actors.lease import Lease, not_a_lease

__all__ = [
    "Acquire",
    "Checkin",
    "Checkout",
    "Contains",
    "GetStats",
    "ListResources",
    "PoolStopped",
    "PopStats",
    "Prewarm",
    "Refresh",
    "Release",
    "ReleaseAll",
    "Resize",
    "Unwatch",
    "Watch",
]


#: A timeout this long (about 31 years) or longer means no deadline.
FOREVER = 1e9


def check_timeout(t: object) -> float | None:
    """`t` as a timeout the pool can do arithmetic with: `None` stays `None`
    (the pool's `acquire_timeout`), any size of number is valid -- from
    `FOREVER` up (`2**1024`, `1e308`, `inf`) it is `inf`, no deadline.

    Raises:
        TypeError: not a number (a `bool` is not one).
        ValueError: negative, or `nan`.
    """
    if t is None:
        return None
    if type(t) is float or type(t) is int:  # the common case, quickly
        pass
    elif isinstance(t, bool) or not isinstance(t, int | float):
        raise TypeError(f"timeout must be a number of seconds or None, got {t!r}")
    if (isinstance(t, float) and math.isnan(t)) or t < 0:
        raise ValueError(f"timeout must be >= 0 or None, got {t!r}")
    return math.inf if t >= FOREVER else float(t)


def _check_key(key: object) -> None:
    try:
        hash(key)
    except TypeError:
        raise TypeError(
            "pool keys must be hashable, got unhashable "
            f"{type(key).__name__}: {short_repr(key)}"
        ) from None


@dataclass(frozen=True, slots=True)
class _Request:
    """What `Acquire` and `Checkout` share: a key, a timeout, the caller's context."""

    key: Hashable
    timeout: float | None = None
    context: dict[str, Any] = field(
        default_factory=get_contextvars, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        _check_key(self.key)
        object.__setattr__(self, "timeout", check_timeout(self.timeout))


@dataclass(frozen=True, slots=True)
class Acquire(_Request):
    """Get the shared resource for `key`, creating it if needed; reply: the
    resource.

    `timeout` bounds the whole acquire, queueing and creation: `None` uses
    the pool's `acquire_timeout` (default: 30 s), `0` never queues
    for a slot. The caller's structlog context variables are taken when the
    message is made and travel with it.
    """


@dataclass(frozen=True, slots=True)
class Checkout(_Request):
    """Hold one resource of `key` until it is checked in; reply: a `Lease`.

    `timeout` bounds the whole checkout as for `Acquire`. The caller's
    structlog context travels with it.
    """


@dataclass(frozen=True, slots=True)
class Checkin:
    """Give `lease` back (`broken=True` retires its resource); reply: `False`
    if it was already checked in."""

    lease: Lease[Any, Any]
    broken: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.lease, Lease):
            raise not_a_lease(self.lease)


@dataclass(frozen=True, slots=True)
class Release:
    """Close and remove the resource for ``key``; reply: whether one was open."""

    key: Hashable

    def __post_init__(self) -> None:
        _check_key(self.key)


@dataclass(frozen=True, slots=True)
class ReleaseAll:
    """Close every resource; reply (``None``) once none of the pool exists."""


@dataclass(frozen=True, slots=True)
class Contains:
    """Whether a resource exists (open or being created) for ``key``."""

    key: Hashable

    def __post_init__(self) -> None:
        _check_key(self.key)


@dataclass(frozen=True, slots=True)
class GetStats:
    """Reply: a [Stats][pooler_actors.Stats] snapshot."""


@dataclass(frozen=True, slots=True)
class PopStats:
    """Reply: a [Stats][pooler_actors.Stats] snapshot whose counters count
    since the last `PopStats` (since the start for the first), which resets
    them; gauges are current values. `GetStats` is unaffected."""


@dataclass(frozen=True, slots=True)
class Resize:
    """Set `max_open_resources` to `max_open_resources` at run time; reply
    `None` when done.

    Growing frees slots at once (waiting callers are served). Shrinking
    retires resources in service until at most the new cap are: idle ones
    first (least recently used first), then creations nobody waits for,
    then held ones, which close at their last checkin, never under a holder.
    Done: every resource it retired is closed, or retiring with holders.
    An int >= 1 (else `TypeError` / `ValueError` here); the pool refuses one
    below `max_per_key` with `ValueError`, changing nothing.
    """

    max_open_resources: int

    def __post_init__(self) -> None:
        n = self.max_open_resources
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"max_open_resources must be an int, got {n!r}")
        if n < 1:
            raise ValueError(f"max_open_resources must be >= 1, got {n!r}")


@dataclass(frozen=True, slots=True)
class ListResources:
    """Reply: a list of ``(key, resource)`` of open resources, creation order."""


@dataclass(frozen=True, slots=True)
class Prewarm:
    """Create resources for ``keys`` ahead of demand, as far as the cap allows.

    Reply, once every creation it started has finished: a dict of key to one
    of ``"created"``, ``"open"`` (already open), ``"not_created"`` (no free
    slot) or ``"failed"``.
    """

    keys: tuple[Hashable, ...]

    def __init__(self, keys: Iterable[Hashable]) -> None:
        if isinstance(keys, str | bytes) or not isinstance(keys, Iterable):
            raise TypeError(
                f"Prewarm takes an iterable of keys, not {type(keys).__name__} "
                f"{keys!r} (wrap one key in a list)"
            )
        keys = tuple(keys)
        for key in keys:
            _check_key(key)
        object.__setattr__(self, "keys", keys)


@dataclass(frozen=True, slots=True)
class Refresh:
    """Replace ``key``'s resource with a fresh one; reply: ``False`` if none."""

    key: Hashable

    def __post_init__(self) -> None:
        _check_key(self.key)


@dataclass(frozen=True, slots=True)
class Watch:
    """Ask the pool to tell ``watcher`` a `PoolStopped` when it stops."""

    watcher: pykka.ActorRef[Any]


@dataclass(frozen=True, slots=True)
class Unwatch:
    """Stop telling ``watcher`` about the pool stopping."""

    watcher: pykka.ActorRef[Any]


@dataclass(frozen=True, slots=True)
class PoolStopped:
    """Told to watchers when the pool stops: ``reason`` is ``"closed"`` or the
    error that made the supervisor fail."""

    name: str
    reason: str
