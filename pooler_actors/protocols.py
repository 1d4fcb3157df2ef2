"""The shapes the pool works with: resources, factories and the pool itself."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Protocol, TypeAlias, TypeVar, runtime_checkable

from pooler_actors.stats import Stats

__all__ = ["Factory", "Pooler", "Reusable"]

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
K_contra = TypeVar("K_contra", bound=Hashable, contravariant=True)


@runtime_checkable
class Reusable(Protocol):
    """A resource the pool can hold: it closes, and it answers a health check.

    In an [AsyncPool][pooler_actors.AsyncPool] either method may be
    `async def` (or return an awaitable): it is awaited on the pool's event
    loop. A [Pool][pooler_actors.Pool] takes sync methods only.
    """

    def close(self) -> Awaitable[Any] | None:
        """Release whatever the resource holds. Called once, in its actor."""

    def ping(self) -> Awaitable[Any] | None:
        """Check the resource; raise when it is unhealthy."""


Factory: TypeAlias = Callable[[K], T] | Callable[[], T]
"""What makes a resource: `factory(key)` when it takes a positional
parameter, else `factory()`. `Factory[str, Conn]` is either a
`(key: str) -> Conn` or a `() -> Conn`."""


@runtime_checkable
class Pooler(Protocol[K_contra, T_co]):
    """The Go package's `Pooler` interface; [Pool][pooler_actors.Pool] has it."""

    def acquire(self, key: K_contra, timeout: float | None = None) -> T_co:
        """Return the resource for `key`, creating it when needed."""
        ...

    def release(self, key: K_contra) -> bool:
        """Close and remove the resource for `key`."""
        ...

    def contains(self, key: K_contra) -> bool:
        """Whether a resource exists for `key`."""
        ...

    def release_all(self) -> None:
        """Close and remove every resource."""
        ...

    def stats(self) -> Stats:
        """A snapshot of the pool's statistics."""
        ...
