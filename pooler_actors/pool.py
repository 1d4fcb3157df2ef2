"""``Pool``: the synchronous facade with the Go package's method set.

It holds no pool state of its own; every call is one message to the
supervisor, whose ``ActorRef`` is :attr:`Pool.actor_ref`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, cast

from pooler_actors.messages import (
    Acquire,
    Contains,
    GetStats,
    ListResources,
    Prewarm,
    Refresh,
    Release,
    ReleaseAll,
)
from pooler_actors.options import PoolOptions
from pooler_actors.stats import Stats
from pooler_actors.supervisor import PoolRef, PoolSupervisor

__all__ = ["Pool"]

T = TypeVar("T")


def build_options(options: PoolOptions | None, kwargs: dict[str, Any]) -> PoolOptions:
    """Options from ``options=`` or from keyword fields, not both."""
    if options is not None:
        if kwargs:
            raise TypeError(
                "pass either options= or option keywords, not both "
                f"(got {', '.join(sorted(kwargs))})"
            )
        if not isinstance(options, PoolOptions):
            raise TypeError(f"options must be a PoolOptions, got {options!r}")
        return options
    unknown = set(kwargs) - PoolOptions.field_names()
    if unknown:
        raise TypeError(f"unknown pool option(s): {', '.join(sorted(unknown))}")
    return PoolOptions(**kwargs)


class Pool(Generic[T]):
    """A keyed pool of resources, safe to use from any number of threads.

    ``Pool(factory, max_open_resources=3, health_check_interval=30)`` starts
    a :class:`PoolSupervisor`; the options are those of :class:`PoolOptions`.
    A resource is shared by every caller of its key: ``acquire`` returns the
    same object until the key is released or evicted.

    Example::

        with Pool(connect, max_open_resources=5) as pool:
            conn = pool.acquire("tenant-a", timeout=2.0)
    """

    def __init__(
        self,
        factory: Callable[[], T] | Callable[[Hashable], T],
        *,
        options: PoolOptions | None = None,
        logger: Any = None,
        **option_fields: Any,
    ) -> None:
        opts = build_options(options, option_fields)
        self.options = opts
        self.name = opts.name
        self._ref = cast(PoolRef, PoolSupervisor.start(factory, opts, logger=logger))

    def __repr__(self) -> str:
        state = "open" if self._ref.is_alive() else "closed"
        return f"<{type(self).__name__} {self.name!r} ({state})>"

    @property
    def actor_ref(self) -> PoolRef:
        """The supervisor's ref, for ``ask``/``tell`` from actors."""
        return self._ref

    def acquire(self, key: Hashable, timeout: float | None = None) -> T:
        """Return the resource for ``key``, creating it or waiting for a slot.

        Raises:
            AcquireTimeout: ``timeout`` seconds passed first.
            FactoryError: the factory failed (``__cause__`` says why).
            TooManyWaiters: ``max_waiting`` callers already wait.
            PoolClosedError: the pool is closed.
            TypeError / ValueError: an unhashable key or a negative timeout.
        """
        return cast(T, self._ref.ask(Acquire(key, timeout)))

    def release(self, key: Hashable) -> bool:
        """Close and remove ``key``'s resource; ``True`` if one was open."""
        return cast(bool, self._ref.ask(Release(key)))

    def contains(self, key: Hashable) -> bool:
        """Whether a resource exists (open or being created) for ``key``."""
        return cast(bool, self._ref.ask(Contains(key)))

    def release_all(self) -> None:
        """Close every resource; returns once none of them exists."""
        self._ref.ask(ReleaseAll())

    def stats(self) -> Stats:
        """A snapshot of the pool's gauges and counters."""
        return cast(Stats, self._ref.ask(GetStats()))

    def all(self) -> Iterator[tuple[Hashable, T]]:
        """Iterate ``(key, resource)`` over a snapshot, in creation order."""
        return iter(cast(list[tuple[Hashable, T]], self._ref.ask(ListResources())))

    def walk(
        self,
    ) -> tuple[
        Callable[[], tuple[Hashable | None, T | None, bool]], Callable[[], None]
    ]:
        """A pull iterator over a snapshot: ``next, stop = pool.walk()``.

        ``next()`` returns ``(key, resource, True)`` per resource, then
        ``(None, None, False)``; ``stop()`` ends the iteration early.
        """
        items: Iterator[tuple[Hashable, T]] | None = self.all()

        def next_() -> tuple[Hashable | None, T | None, bool]:
            nonlocal items
            if items is not None:
                for key, value in items:
                    return key, value, True
                items = None
            return None, None, False

        def stop() -> None:
            nonlocal items
            items = None

        return next_, stop

    def prewarm(self, keys: Iterable[Hashable]) -> dict[Hashable, str]:
        """Create resources for ``keys`` ahead of demand, as far as the cap allows.

        Returns, per key: ``"created"``, ``"open"``, ``"not_created"`` or
        ``"failed"``.
        """
        return cast(dict[Hashable, str], self._ref.ask(Prewarm(keys)))

    def refresh(self, key: Hashable) -> bool:
        """Replace ``key``'s resource with a fresh one; ``False`` if none was open."""
        return cast(bool, self._ref.ask(Refresh(key)))

    def close(self) -> None:
        """Fail waiters, close every resource and stop every actor. Idempotent.

        Returns once every thread of the pool has ended, except one stuck in
        user code (abandoned after ``close_timeout``).
        """
        self._ref.stop(block=True)
        self._ref.join(self.options.close_timeout)

    @property
    def closed(self) -> bool:
        """Whether the pool has been closed."""
        return not self._ref.is_alive()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
