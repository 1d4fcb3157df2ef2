"""asyncio-native resources: their coroutines run on the pool's event loop.

An [AsyncPool][pooler_actors.AsyncPool] hands its supervisor the factory
wrapped in a [LoopFactory][pooler_actors._loop.LoopFactory], which carries the
pool's [EventLoop][pooler_actors._loop.EventLoop]. When the factory, `ping()`
or `close()` returns an awaitable, the resource actor posts it to that loop
(`asyncio.run_coroutine_threadsafe`) and waits for it on its own worker
thread, then reports the outcome to the supervisor as for a sync call. The
supervisor's thread never waits on the loop, and the loop never waits on the
pool: each side only posts to the other.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any

__all__ = ["EventLoop", "LoopFactory", "is_async_callable", "settle"]

# How often a worker waiting on the loop checks that the loop was not closed
# under it (a closed loop never runs what was posted to it).
_LOOP_CHECK_S = 0.1


def is_async_callable(obj: object) -> bool:
    """Whether calling `obj` makes a coroutine (`async def`, or a callable
    object whose `__call__` is one)."""
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(obj, "__call__", None)  # noqa: B004 (we want the method)
    return not inspect.isroutine(obj) and inspect.iscoroutinefunction(call)


class EventLoop:
    """The event loop an `AsyncPool`'s coroutines run on, bound once.

    It is the loop running when the pool is made, else the one running at
    its first call.
    """

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Take `loop` as the pool's loop, unless one was bound already."""
        if self.loop is None:
            self.loop = loop

    def run(
        self,
        awaitable: Awaitable[Any],
        track: Callable[[concurrent.futures.Future[Any] | None], None],
    ) -> Any:
        """Await `awaitable` on the loop; block this (worker) thread for it.

        `track` is told the pending future, then `None`: cancelling that
        future (an abandoned creation, say) cancels the coroutine and ends
        the wait with `CancelledError`.
        """
        coro = _as_coroutine(awaitable)
        loop = self.loop
        try:
            if loop is None:
                raise RuntimeError(
                    "the AsyncPool has no event loop yet: it binds the loop "
                    "running when it is made or first called"
                )
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except BaseException:
            coro.close()  # never scheduled: close it, or it warns unawaited
            raise
        track(future)
        try:
            while True:
                try:
                    return future.result(timeout=_LOOP_CHECK_S)
                except concurrent.futures.TimeoutError:
                    if loop.is_closed():
                        future.cancel()
                        with contextlib.suppress(BaseException):
                            coro.close()
                        raise RuntimeError("the pool's event loop is closed") from None
        finally:
            track(None)


def _as_coroutine(awaitable: Awaitable[Any]) -> Coroutine[Any, Any, Any]:
    if inspect.iscoroutine(awaitable):
        return awaitable

    async def wait() -> Any:
        return await awaitable

    return wait()


class LoopFactory:
    """A factory with the event loop its awaitables run on (an AsyncPool's)."""

    def __init__(self, factory: Callable[..., Any], loop: EventLoop) -> None:
        self.factory = factory
        self.loop = loop

    def __call__(self, *key: Hashable) -> Any:
        return self.factory(*key)


def settle(
    value: Any,
    loop: EventLoop | None,
    what: str,
    track: Callable[[concurrent.futures.Future[Any] | None], None],
) -> Any:
    """`value`, or what it resolves to when it is awaitable (on `loop`).

    Raises:
        TypeError: `value` is awaitable and the pool has no loop (not an
            `AsyncPool`).
    """
    if not inspect.isawaitable(value):
        return value
    if loop is None:
        if inspect.iscoroutine(value):
            value.close()  # not awaited on purpose: no "never awaited" warning
        raise TypeError(
            f"{what} returned an awaitable ({type(value).__name__}): "
            "asyncio-native factories and resources need an AsyncPool"
        )
    return loop.run(value, track)
