"""``AsyncPool``: the asyncio facade. Awaiting never blocks the event loop.

Each call sends one message to the supervisor and awaits its reply future,
which wakes the loop through ``call_soon_threadsafe``. Cancelling a task that
awaits ``acquire`` withdraws the caller from the wait queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Hashable, Iterable
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, cast

from pykka.messages import _ActorStop

from pooler_actors._future import PoolFuture
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
from pooler_actors.pool import build_options
from pooler_actors.stats import Stats
from pooler_actors.supervisor import PoolRef, PoolSupervisor

__all__ = ["AsyncPool"]

T = TypeVar("T")


class AsyncPool(Generic[T]):
    """A keyed pool for asyncio code; the options are those of ``PoolOptions``.

    Example::

        async with AsyncPool(connect, max_open_resources=5) as pool:
            conn = await pool.acquire("tenant-a", timeout=2.0)
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
        """The supervisor's ref."""
        return self._ref

    async def _ask(self, message: object) -> Any:
        future = cast(PoolFuture[Any], self._ref.ask(message, block=False))
        return await future

    async def acquire(self, key: Hashable, timeout: float | None = None) -> T:
        """Return ``key``'s resource; see :meth:`Pool.acquire`.

        Cancelling the awaiting task withdraws it from the wait queue.
        """
        return cast(T, await self._ask(Acquire(key, timeout)))

    async def release(self, key: Hashable) -> bool:
        """Close and remove ``key``'s resource; ``True`` if one was open."""
        return cast(bool, await self._ask(Release(key)))

    async def contains(self, key: Hashable) -> bool:
        """Whether a resource exists for ``key``."""
        return cast(bool, await self._ask(Contains(key)))

    async def release_all(self) -> None:
        """Close every resource; returns once none of them exists."""
        await self._ask(ReleaseAll())

    async def stats(self) -> Stats:
        """A snapshot of the pool's statistics."""
        return cast(Stats, await self._ask(GetStats()))

    async def snapshot(self) -> list[tuple[Hashable, T]]:
        """``(key, resource)`` pairs of open resources, in creation order."""
        return cast(list[tuple[Hashable, T]], await self._ask(ListResources()))

    async def all(self) -> AsyncIterator[tuple[Hashable, T]]:
        """``async for key, resource in pool.all()`` over a snapshot."""
        for item in await self.snapshot():
            yield item

    async def prewarm(self, keys: Iterable[Hashable]) -> dict[Hashable, str]:
        """See :meth:`Pool.prewarm`."""
        return cast(dict[Hashable, str], await self._ask(Prewarm(keys)))

    async def refresh(self, key: Hashable) -> bool:
        """See :meth:`Pool.refresh`."""
        return cast(bool, await self._ask(Refresh(key)))

    async def close(self) -> None:
        """Close the pool; see :meth:`Pool.close`. Idempotent.

        Awaits the supervisor's answer to its stop message directly (no
        executor thread): the reply comes once every resource is closed and
        every actor of the pool has stopped. A pool already closed answers at
        once.
        """
        # ``ActorRef.stop(block=False)`` wraps the ask in a get-hook future
        # that can only be waited on by blocking; ask for the stop ourselves.
        await cast(PoolFuture[Any], self._ref.ask(_ActorStop(), block=False))
        # The supervisor's thread ends a moment after its answer; wait for it
        # without blocking the loop.
        thread = self._ref.thread
        deadline = asyncio.get_running_loop().time() + self.options.close_timeout
        while thread is not None and thread.is_alive():
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.001)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
