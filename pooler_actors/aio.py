"""`AsyncPool`: the asyncio facade. Awaiting never blocks the event loop.

Each call sends one message to the supervisor and awaits its reply future,
which wakes the loop through `call_soon_threadsafe`. Cancelling a task that
awaits a request withdraws it: it is never granted anything afterwards. An
`async def` factory, `ping()` or `close()` is awaited on the pool's loop by the
resource's actor (see `_loop.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Self, cast, overload

from pooler_actors._counter import MISS
from pooler_actors._facade import GRACE, FacadeBase, K, T
from pooler_actors._future import PoolFuture
from pooler_actors._loop import EventLoop, LoopFactory
from pooler_actors.errors import AcquireTimeout
from pooler_actors.lease import Lease
from pooler_actors.messages import (
    Acquire,
    Checkout,
    Contains,
    GetStats,
    ListResources,
    PopStats,
    Prewarm,
    Refresh,
    Release,
    ReleaseAll,
    Resize,
    check_timeout,
)
from pooler_actors.options import PoolOptions
from pooler_actors.stats import Stats

__all__ = ["AsyncPool"]


class AsyncPool(FacadeBase[K, T]):
    """A keyed pool for asyncio code, with the method names of
    [Pool][pooler_actors.Pool]; the options are those of
    [PoolOptions][pooler_actors.PoolOptions].

    It takes asyncio-native resources: the factory may be `async def`, and so
    may a resource's `ping()` and `close()`. Those coroutines are awaited on
    the pool's event loop — the loop running when the pool is made, else the
    one running at its first call — while sync ones run on the pool's worker
    threads, as in `Pool`.

    Example:
        ```python
        async with AsyncPool(connect, max_open_resources=5) as pool:
            conn = await pool.acquire("tenant-a", timeout=2.0)
        ```
    """

    @overload
    def __init__(
        self: AsyncPool[K, T],
        factory: Callable[[K], Awaitable[T]],
        *,
        options: PoolOptions | None = None,
        logger: Any = None,
        **option_fields: Any,
    ) -> None: ...

    @overload
    def __init__(
        self: AsyncPool[K, T],
        factory: Callable[[K], T],
        *,
        options: PoolOptions | None = None,
        logger: Any = None,
        **option_fields: Any,
    ) -> None: ...

    @overload
    def __init__(
        self: AsyncPool[K, T],
        factory: Callable[[], Awaitable[T]],
        *,
        options: PoolOptions | None = None,
        logger: Any = None,
        **option_fields: Any,
    ) -> None: ...

    @overload
    def __init__(
        self: AsyncPool[K, T],
        factory: Callable[[], T],
        *,
        options: PoolOptions | None = None,
        logger: Any = None,
        **option_fields: Any,
    ) -> None: ...

    def __init__(
        self,
        factory: Callable[[K], Awaitable[T] | T] | Callable[[], Awaitable[T] | T],
        *,
        options: PoolOptions | None = None,
        logger: Any = None,
        **option_fields: Any,
    ) -> None:
        self._loop = EventLoop()
        with contextlib.suppress(RuntimeError):  # no loop runs yet: bound later
            self._loop.bind(asyncio.get_running_loop())
        super().__init__(
            LoopFactory(factory, self._loop),
            options=options,
            logger=logger,
            **option_fields,
        )
        if self.options.reset is not None:  # actors' `Checkin` messages run it too
            self._ref.reset = self._actor_checkin

    def _actor_checkin(self, lease: Lease[K, T], broken: bool) -> bool:
        """A `Checkin` message sent by an actor (or any other thread): the
        checkin, `reset` included, runs on the pool's event loop, and this
        thread waits for it. With no loop left to run `reset` on, the
        resource cannot be made clean: it is checked in as broken.

        Raises:
            RuntimeError: sent from the pool's own event loop, which cannot
                wait for itself (`await pool.checkin(lease)` there).
        """
        loop = self._loop.loop
        if broken or loop is None or loop.is_closed():
            return self._counter.checkin(lease, True)
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # (no loop runs in this thread: the usual case)
            running = None
        if running is loop:
            raise RuntimeError(
                "a Checkin message from the AsyncPool's own event loop cannot "
                "wait for its reset: use await pool.checkin(lease)"
            )
        done = asyncio.run_coroutine_threadsafe(self.checkin(lease, broken), loop)
        return done.result()

    async def _ask(self, message: object) -> Any:
        self._loop.bind(asyncio.get_running_loop())
        future = cast(PoolFuture[Any], self._ref.ask(message, block=False))
        return await future

    async def _granted(self, future: Any, key: K, timeout: float | None) -> Any:
        """Await a request's answer, keeping its deadline here (see
        `FacadeBase._grant`): at the deadline (plus `GRACE`) the caller
        withdraws and gets `AcquireTimeout`; a lease granted just as it gave
        up (or was cancelled) goes back."""
        wait = None if timeout is None or timeout == 0 else timeout + GRACE
        try:
            if wait is None or wait == math.inf:
                return await future
            async with asyncio.timeout(wait):
                return await future
        except TimeoutError:
            self._counter.give_back(future)
            raise AcquireTimeout(key, timeout) from None
        except asyncio.CancelledError:
            self._counter.give_back(future)
            raise

    async def acquire(self, key: K, timeout: float | None = None) -> T:
        """Return `key`'s shared resource; see
        [Pool.acquire][pooler_actors.Pool.acquire]."""
        value = self._counter.hit(key)
        if value is MISS:
            message = Acquire(key, timeout)  # checks the key and the timeout
            self._loop.bind(asyncio.get_running_loop())
            future = self._ref.ask(message, block=False)
            value = await self._granted(future, key, self._timeout(message.timeout))
        elif timeout is not None:
            check_timeout(timeout)
        return cast(T, value)

    async def checkout(self, key: K, timeout: float | None = None) -> Lease[K, T]:
        """Hold one resource of `key`; see
        [Pool.checkout][pooler_actors.Pool.checkout] (`check` may be async)."""
        wait = self._timeout(timeout)
        check = self.options.check
        if check is None and self.options.leak_warning_after is None:
            return await self._checkout(key, timeout, wait)
        tries = self._checks(key, timeout, wait)
        while True:
            lease = await self._checkout(key, timeout, next(tries))
            try:
                if check is not None:
                    await _maybe_await(check(lease.resource))
            except BaseException as error:
                self._counter.checkin(lease, True)
                if not isinstance(error, Exception):
                    raise
                self._hook_failed("pool.lease.check_failed", lease, error)
                continue
            return self._watched(lease)

    async def _checkout(
        self, key: K, timeout: float | None, wait: float | None
    ) -> Lease[K, T]:
        lease = self._counter.take(key)
        if lease is not MISS:
            return cast("Lease[K, T]", lease)
        self._loop.bind(asyncio.get_running_loop())
        asked = check_timeout(timeout) if wait is None else wait
        future = self._queue_self(key, asked)
        if future is MISS:
            future = self._ref.ask(Checkout(key, asked), block=False)
        return cast("Lease[K, T]", await self._granted(future, key, wait))

    async def checkin(self, lease: Lease[K, T], broken: bool = False) -> bool:
        """Give `lease` back; see [Pool.checkin][pooler_actors.Pool.checkin]
        (`reset` may be async; a task cancelled during it checks the lease
        in as broken)."""
        reset = self.options.reset
        if reset is None or broken:
            return self._counter.checkin(lease, broken)
        if not self._counter.hold(lease):
            return False
        try:
            await _maybe_await(reset(lease.resource))
        except BaseException as error:
            self._counter.checkin(lease, True, reset=True)
            if not isinstance(error, Exception):
                raise
            self._hook_failed("pool.lease.reset_failed", lease, error)
            return True
        return self._counter.checkin(lease, False, reset=True)

    @asynccontextmanager
    async def lease(self, key: K, timeout: float | None = None) -> AsyncIterator[T]:
        """`async with pool.lease(key) as resource:` holds it for the block."""
        lease = await self.checkout(key, timeout)
        try:
            yield lease.resource
        except BaseException as error:
            try:
                broken = self.broken_by(error)
            except BaseException as raised:  # is_broken raised: broken, propagates
                lease.reason = f"is_broken raised {raised!r} on {error!r}"
                self.checkin_now(lease, True)
                if isinstance(sys.exception(), Exception):
                    raise error  # noqa: B904 - the block's error, chained
                raise
            if broken:
                lease.reason = repr(error)
            if broken or self.options.reset is None:
                self.checkin_now(lease, broken)
            else:  # shielded: a second cancel cannot skip the reset's checkin
                await asyncio.shield(self.checkin(lease, False))
            raise
        if self.options.reset is None:
            self.checkin_now(lease, False)
        else:
            await asyncio.shield(self.checkin(lease, False))

    def checkin_now(self, lease: Lease[K, T], broken: bool = False) -> bool:
        """[checkin][pooler_actors.AsyncPool.checkin] without awaiting: it
        never waits for anything, so it needs no event loop (and a cancelled
        task cannot skip it)."""
        return self._counter.checkin(lease, broken)

    async def release(self, key: K) -> bool:
        """Retire `key`'s resources; `True` if one was open."""
        return cast(bool, await self._ask(Release(key)))

    async def contains(self, key: K) -> bool:
        """Whether a resource exists for `key`."""
        return cast(bool, await self._ask(Contains(key)))

    async def release_all(self) -> None:
        """Retire every resource; returns once each is closed or, if held, retired."""
        await self._ask(ReleaseAll())

    async def stats(self) -> Stats:
        """A snapshot of the pool's statistics."""
        return cast(Stats, await self._ask(GetStats()))

    async def pop_stats(self) -> Stats:
        """See [Pool.pop_stats][pooler_actors.Pool.pop_stats]."""
        return cast(Stats, await self._ask(PopStats()))

    async def resize(self, max_open_resources: int) -> None:
        """See [Pool.resize][pooler_actors.Pool.resize]."""
        await self._ask(Resize(max_open_resources))

    async def snapshot(self) -> list[tuple[K, T]]:
        """`(key, resource)` pairs of open resources, in creation order."""
        return cast(list[tuple[K, T]], await self._ask(ListResources()))

    async def all(self) -> AsyncIterator[tuple[K, T]]:
        """`async for key, resource in pool.all()` over a snapshot."""
        for item in await self.snapshot():
            yield item

    async def prewarm(self, keys: Iterable[K]) -> dict[K, str]:
        """See [Pool.prewarm][pooler_actors.Pool.prewarm]."""
        return cast(dict[K, str], await self._ask(Prewarm(keys)))

    async def refresh(self, key: K) -> bool:
        """See [Pool.refresh][pooler_actors.Pool.refresh]."""
        return cast(bool, await self._ask(Refresh(key)))

    async def close(self, timeout: float | None = None) -> None:
        """Close the pool; see [Pool.close][pooler_actors.Pool.close]. Idempotent.

        Waits up to `timeout` seconds (`None`: `drain_timeout`) for holders;
        awaits the supervisor's answer, then its thread's end, without
        blocking the loop.
        """
        loop = asyncio.get_running_loop()
        future, bound = self._shutdown(timeout)
        try:
            await asyncio.wait_for(asyncio.ensure_future(_awaited(future)), bound)
        except Exception:
            return
        thread = self._ref.thread
        deadline = loop.time() + self.options.close_timeout
        while thread is not None and thread.is_alive() and loop.time() < deadline:
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


async def _awaited(future: PoolFuture[Any]) -> Any:
    return await future


async def _maybe_await(value: object) -> None:
    """Await `value` if a hook returned an awaitable (an `async def` one)."""
    if inspect.isawaitable(value):
        await value
