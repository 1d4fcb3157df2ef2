"""A lease: one holder's use of one pooled resource, until it is checked in."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from pooler_actors.errors import short_repr

__all__ = ["Lease", "not_a_lease"]

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


class Lease(Generic[K, T]):
    """One holder's use of a resource, from checkout to checkin.

    While a lease is out, its resource is never closed: a release, an eviction
    or an expiry only *retires* it, and it is closed when its last holder
    checks in (or `drain_timeout` passes).

    Attributes:
        key: the key the resource belongs to.
        resource: the resource itself.
        reason: why a broken checkin was broken, for the `pool.lease.broken`
            event: unset (`"checkin"`, a `checkin(lease, broken=True)`), the
            repr of the exception `is_broken` judged, or `"lost"`.
    """

    __slots__ = (
        "_handle",
        "_lid",
        "_out",
        "_pool",
        "_resetting",
        "_rid",
        "key",
        "on_lost",
        "reason",
        "resource",
    )

    reason: str  # unset unless a broken checkin says why

    def __init__(
        self,
        key: K,
        resource: T,
        *,
        pool: object,
        rid: int,
        lid: int,
        handle: object = None,
        on_lost: Callable[[Lease[Any, Any]], None] | None = None,
    ):
        self._fill(key, resource, pool, rid, lid, handle, on_lost)

    @classmethod
    def issue(  # noqa: PLR0917 (positional: a checkout's hot path)
        cls,
        key: K,
        resource: T,
        pool: object,
        rid: int,
        lid: int,
        handle: object,
        on_lost: Callable[[Lease[Any, Any]], None] | None,
    ) -> Lease[K, T]:
        """A new lease, as `Lease(...)` makes it, for the pool's counter:
        positional and without the type call (a checkout's hot path: a third
        cheaper)."""
        lease = object.__new__(cls)
        lease._fill(key, resource, pool, rid, lid, handle, on_lost)
        return lease

    def _fill(  # noqa: PLR0917 (positional: a checkout's hot path)
        self,
        key: K,
        resource: T,
        pool: object,
        rid: int,
        lid: int,
        handle: object,
        on_lost: Callable[[Lease[Any, Any]], None] | None,
    ) -> None:
        """Every slot of a new lease, for `__init__` and `issue` alike."""
        self.key = key
        self.resource = resource
        self._pool = pool
        self._rid = rid
        self._lid = lid
        self._handle = handle  # the core's record of the resource (hit path)
        self._out = True  # until the one checkin that counts
        self._resetting = False  # a checkin runs the pool's `reset` first
        #: Called with the lease if it is collected while still out (set by
        #: the pool): a lease dropped without a checkin is not lost for good.
        self.on_lost = on_lost

    def claim_checkin(self, reset: bool = False) -> bool:
        """Whether this is the lease's first checkin (under the pool's counter
        lock: see `_counter`); `reset`: by the checkin that held it for its
        `reset` (`hold_for_reset`), the only one that may then."""
        if not self._out or (self._resetting and not reset):
            return False
        self._out = self._resetting = False
        return True

    def hold_for_reset(self) -> bool:
        """Reserve the checkin for one that runs the pool's `reset` first
        (under the counter lock); `False` if checked in or reserved already."""
        if not self._out or self._resetting:
            return False
        self._resetting = True
        return True

    def unclaim_checkin(self, reset: bool = False) -> None:
        """Undo `claim_checkin` (a checkin interrupted before it counted)."""
        self._out, self._resetting = True, reset

    @property
    def checked_in(self) -> bool:
        """Whether the lease has been given back."""
        return not self._out

    def __del__(self) -> None:
        # Runs in whatever thread drops the last reference, perhaps inside
        # the pool's own locked code: `on_lost` only puts a message in the
        # supervisor's mailbox (a reentrant queue), taking no lock.
        # (getattr: an interrupt may have cut `__init__` short.)
        if not getattr(self, "_out", False):  # (checked in: the common case)
            return
        on_lost = getattr(self, "on_lost", None)
        if on_lost is not None:
            with contextlib.suppress(BaseException):  # at exit: nobody to tell
                on_lost(self)  # resurrects it until the supervisor is done

    @property
    def handle(self) -> object:
        """The pool's record of the resource (for the pool's own hit path)."""
        return self._handle

    def __repr__(self) -> str:
        return f"<Lease #{self._lid} of {short_repr(self.key)}>"

    @property
    def pool(self) -> object:
        """The identity of the pool that granted the lease."""
        return self._pool

    @property
    def rid(self) -> int:
        """The id of the resource the lease holds."""
        return self._rid

    @property
    def lid(self) -> int:
        """The lease's own id, unique in its pool."""
        return self._lid


def not_a_lease(value: object) -> TypeError:
    """The error of a checkin given `value`, not a lease (the same message
    for `Pool.checkin`, `AsyncPool.checkin` and the `Checkin` message)."""
    return TypeError(
        f"checkin needs a Lease, got {short_repr(value)} (a {type(value).__qualname__})"
    )
