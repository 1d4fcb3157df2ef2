"""A lease: one holder's use of one pooled resource, until it is checked in."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["Lease"]

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
    """

    __slots__ = ("_handle", "_lid", "_once", "_pool", "_rid", "key", "resource")

    def __init__(
        self,
        key: K,
        resource: T,
        *,
        pool: object,
        rid: int,
        lid: int,
        handle: object = None,
    ):
        self.key = key
        self.resource = resource
        self._pool = pool
        self._rid = rid
        self._lid = lid
        self._handle = handle  # the core's record of the resource (hit path)
        self._once = [True]  # popped by the one checkin that counts

    def claim_checkin(self) -> bool:
        """Whether this is the lease's first checkin (atomic: `list.pop`)."""
        try:
            self._once.pop()
        except IndexError:
            return False
        return True

    @property
    def handle(self) -> object:
        """The pool's record of the resource (for the pool's own hit path)."""
        return self._handle

    def __repr__(self) -> str:
        return f"<Lease #{self._lid} of {self.key!r}>"

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
