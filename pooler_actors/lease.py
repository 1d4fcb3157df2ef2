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

    __slots__ = ("_lid", "_pool", "_rid", "key", "resource")

    def __init__(self, key: K, resource: T, *, pool: object, rid: int, lid: int):
        self.key = key
        self.resource = resource
        self._pool = pool
        self._rid = rid
        self._lid = lid

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
