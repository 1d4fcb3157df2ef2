"""AsyncPool: the asyncio facade never blocks the event loop, and cancelling
an awaiting task withdraws it from the pool's wait queue.

pytest-asyncio is not a dependency: every test drives its coroutine with
``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any, TypeVar

import pykka
import pytest
from conftest import pool_threads, wait_for
from resources import Factory, Res

from pooler_actors import (
    Acquire,
    AcquireTimeout,
    AsyncPool,
    Contains,
    FactoryError,
    GetStats,
    PoolClosedError,
    Release,
    TooManyWaiters,
)

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    """Poll an async predicate without blocking the loop; fail after ``timeout``."""
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.002)


def new_pool(factory: Factory, **options: Any) -> AsyncPool[str, Res]:
    options.setdefault("health_check_interval", None)
    return AsyncPool(factory, **options)


# --- the basic operations --------------------------------------------------


def test_acquire_returns_one_resource_per_key() -> None:
    async def main() -> None:
        factory = Factory()
        async with new_pool(factory) as pool:
            a1 = await pool.acquire("a")
            a2 = await pool.acquire("a")
            b = await pool.acquire("b")
            assert a1 is a2
            assert a1.key == "a"
            assert b.key == "b"
            assert factory.calls == ["a", "b"]

    run(main())


def test_concurrent_acquires_of_one_key_run_the_factory_once() -> None:
    async def main() -> None:
        factory = Factory()
        async with new_pool(factory) as pool:
            got = await asyncio.gather(*(pool.acquire("k") for _ in range(20)))
            assert len({id(r) for r in got}) == 1
            assert factory.calls == ["k"]

    run(main())


def test_contains_and_release() -> None:
    async def main() -> None:
        factory = Factory()
        async with new_pool(factory) as pool:
            assert not await pool.contains("a")
            res = await pool.acquire("a")
            assert await pool.contains("a")
            assert await pool.release("a") is True
            assert res.closes == 1  # release replies after the close finished
            assert not await pool.contains("a")
            assert await pool.release("a") is False

    run(main())


def test_stats_count_acquires_hits_and_releases() -> None:
    async def main() -> None:
        factory = Factory()
        async with new_pool(factory, max_open_resources=4) as pool:
            await pool.acquire("a")
            await pool.acquire("a")
            await pool.acquire("b")
            await pool.release("b")
            stats = await pool.stats()
            assert stats.max_open_resources == 4
            assert stats.open_resources == 1
            assert stats.wait_count == 0
            assert stats.acquires == 3
            assert stats.hits == 1
            assert stats.created == 2
            assert stats.releases == 1

    run(main())


def test_release_all_closes_every_resource() -> None:
    async def main() -> None:
        factory = Factory()
        async with new_pool(factory) as pool:
            for key in ("a", "b", "c"):
                await pool.acquire(key)
            await pool.release_all()
            assert [r.closes for r in factory.made] == [1, 1, 1]
            assert (await pool.stats()).open_resources == 0
            assert not await pool.contains("a")

    run(main())


def test_all_and_snapshot_list_open_resources_in_creation_order() -> None:
    async def main() -> None:
        factory = Factory()
        async with new_pool(factory) as pool:
            for key in ("c", "a", "b"):
                await pool.acquire(key)
            pairs = [(key, res) async for key, res in pool.all()]
            assert [key for key, _ in pairs] == ["c", "a", "b"]
            assert [res for _, res in pairs] == factory.made
            assert await pool.snapshot() == pairs

    run(main())


def test_prewarm_and_refresh() -> None:
    async def main() -> None:
        factory = Factory()
        async with new_pool(factory, max_open_resources=2) as pool:
            assert await pool.prewarm(["a", "b", "c"]) == {
                "a": "created",
                "b": "created",
                "c": "not_created",
            }
            old = await pool.acquire("a")
            assert await pool.refresh("a") is True
            new = await pool.acquire("a")
            assert new is not old
            assert old.closes == 1

    run(main())


def test_async_with_closes_the_pool_and_its_resources() -> None:
    factory = Factory()

    async def main() -> AsyncPool[str, Res]:
        async with new_pool(factory) as pool:
            await pool.acquire("a")
            await pool.acquire("b")
        return pool

    pool = run(main())
    assert [r.closes for r in factory.made] == [1, 1]
    assert not pool.actor_ref.is_alive()
    assert pool_threads() == []  # close returns once every pool thread ended
    assert "closed" in repr(pool)


def test_close_is_idempotent() -> None:
    async def main() -> None:
        factory = Factory()
        pool = new_pool(factory)
        await pool.acquire("a")
        await pool.close()
        await pool.close()
        assert factory.made[0].closes == 1

    run(main())


class _NoExecutor(concurrent.futures.ThreadPoolExecutor):
    def submit(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("AsyncPool must not hand work to an executor thread")


def test_pool_uses_no_executor_threads() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        executor = _NoExecutor(max_workers=1)
        loop.set_default_executor(executor)
        factory = Factory()
        pool = new_pool(factory)
        await pool.acquire("a")
        await pool.stats()
        await pool.release_all()
        await pool.close()
        executor.shutdown()

    run(main())


def test_operations_after_close_raise_pool_closed_error() -> None:
    async def main() -> None:
        pool = new_pool(Factory())
        await pool.close()
        with pytest.raises(PoolClosedError):
            await pool.acquire("a")
        with pytest.raises(PoolClosedError):
            await pool.release("a")
        with pytest.raises(PoolClosedError):
            await pool.contains("a")
        with pytest.raises(PoolClosedError):
            await pool.stats()

    run(main())


def test_bad_arguments_raise_in_the_caller() -> None:
    async def main() -> None:
        factory = Factory()
        async with new_pool(factory) as pool:
            with pytest.raises(TypeError):
                await pool.acquire(["unhashable"])
            with pytest.raises(ValueError, match="timeout"):
                await pool.acquire("a", timeout=-1)
            assert factory.calls == []

    run(main())


# --- waiting never blocks the loop -------------------------------------------


async def _hold_slot_and_queue(
    pool: AsyncPool[str, Res], queued_key: str
) -> asyncio.Task[Res]:
    """Fill the one slot with ``"held"``; start a task that queues for a slot."""
    await pool.acquire("held")
    task = asyncio.create_task(pool.acquire(queued_key))

    async def queued() -> bool:
        return (await pool.stats()).wait_count == 1

    await until(queued)
    return task


def test_waiting_acquire_does_not_block_the_loop() -> None:
    async def main() -> None:
        factory = Factory()
        async with new_pool(factory, max_open_resources=1) as pool:
            waiting = await _hold_slot_and_queue(pool, "b")
            ticks = 0
            ticked = asyncio.Event()

            async def ticker() -> None:
                nonlocal ticks
                while ticks < 100:
                    ticks += 1
                    await asyncio.sleep(0)
                ticked.set()

            await asyncio.create_task(ticker())
            assert ticked.is_set()
            assert ticks == 100
            assert not waiting.done()  # still queued all the while
            assert await pool.release("held")
            res = await waiting
            assert res.key == "b"
            assert (await pool.stats()).wait_count == 0

    run(main())


def test_slow_factory_does_not_block_the_loop() -> None:
    async def main() -> None:
        gate = threading.Event()
        started = threading.Event()

        def slow(key: Hashable) -> Res:
            started.set()
            gate.wait(30)
            return Res(key)

        async with AsyncPool(slow, health_check_interval=None) as pool:
            creating = asyncio.create_task(pool.acquire("a"))
            async with asyncio.timeout(10):
                while not started.is_set():
                    await asyncio.sleep(0.002)
            # The loop keeps serving other work while the factory blocks.
            assert await pool.contains("a")
            assert (await pool.stats()).creating == 1
            assert not creating.done()
            gate.set()
            assert (await creating).key == "a"

    run(main())


# --- cancellation and timeouts ------------------------------------------------


def test_cancelled_acquire_leaves_the_queue_and_takes_no_slot() -> None:
    async def main() -> None:
        factory = Factory()
        async with new_pool(factory, max_open_resources=1) as pool:
            waiting = await _hold_slot_and_queue(pool, "cancelled")
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting

            async def unqueued() -> bool:
                return (await pool.stats()).wait_count == 0

            await until(unqueued)
            # The freed slot goes to the next caller, not the cancelled one.
            await pool.release("held")
            assert (await pool.acquire("next")).key == "next"
            assert factory.calls == ["held", "next"]
            assert not await pool.contains("cancelled")

    run(main())


def test_cancelled_acquire_during_creation_leaves_the_creation_to_finish() -> None:
    async def main() -> None:
        gate = threading.Event()
        started = threading.Event()
        made: list[Res] = []

        def slow(key: Hashable) -> Res:
            started.set()
            gate.wait(30)
            made.append(Res(key))
            return made[-1]

        async with AsyncPool(slow, health_check_interval=None) as pool:
            task = asyncio.create_task(pool.acquire("a"))
            async with asyncio.timeout(10):
                while not started.is_set():
                    await asyncio.sleep(0.002)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            gate.set()
            # The creation it started completes and stays in the pool.
            res = await pool.acquire("a")
            assert made == [res]
            stats = await pool.stats()
            assert stats.created == 1
            assert stats.open_resources == 1

    run(main())


def test_wait_for_timeout_withdraws_the_caller() -> None:
    async def main() -> None:
        factory = Factory()
        async with new_pool(factory, max_open_resources=1) as pool:
            await pool.acquire("held")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(pool.acquire("gave-up"), 0.05)

            async def unqueued() -> bool:
                return (await pool.stats()).wait_count == 0

            await until(unqueued)
            await pool.release("held")
            await pool.acquire("next")
            assert factory.calls == ["held", "next"]

    run(main())


def test_cancelled_only_waiter_of_a_key_among_others_keeps_fifo_order() -> None:
    async def main() -> None:
        factory = Factory()
        async with new_pool(factory, max_open_resources=1) as pool:
            await pool.acquire("held")
            first = asyncio.create_task(pool.acquire("first"))
            second = asyncio.create_task(pool.acquire("second"))

            async def both_queued() -> bool:
                return (await pool.stats()).wait_count == 2

            await until(both_queued)
            first.cancel()

            async def one_queued() -> bool:
                return (await pool.stats()).wait_count == 1

            await until(one_queued)
            await pool.release("held")
            assert (await second).key == "second"
            assert factory.calls == ["held", "second"]
            with pytest.raises(asyncio.CancelledError):
                await first

    run(main())


def test_acquire_timeout_raises_acquire_timeout() -> None:
    async def main() -> None:
        factory = Factory()
        async with new_pool(factory, max_open_resources=1) as pool:
            await pool.acquire("held")
            with pytest.raises(AcquireTimeout) as info:
                await pool.acquire("late", timeout=0.05)
            assert info.value.key == "late"
            assert isinstance(info.value, TimeoutError)
            with pytest.raises(AcquireTimeout):
                await pool.acquire("now", timeout=0)
            stats = await pool.stats()
            assert stats.timeouts == 2
            assert stats.wait_count == 0
            await pool.release("held")
            await pool.acquire("after")
            assert factory.calls == ["held", "after"]

    run(main())


def test_too_many_waiters() -> None:
    async def main() -> None:
        async with new_pool(Factory(), max_open_resources=1, max_waiting=1) as pool:
            waiting = await _hold_slot_and_queue(pool, "b")
            with pytest.raises(TooManyWaiters):
                await pool.acquire("c")
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting

    run(main())


# --- errors -------------------------------------------------------------------


def test_factory_error_carries_key_and_cause() -> None:
    async def main() -> None:
        factory = Factory(fail={"bad"})
        async with new_pool(factory, max_open_resources=1) as pool:
            with pytest.raises(FactoryError) as info:
                await pool.acquire("bad")
            assert info.value.key == "bad"
            assert isinstance(info.value.__cause__, ConnectionError)
            # The failed creation freed its slot; the pool keeps serving.
            assert (await pool.acquire("good")).key == "good"
            assert (await pool.stats()).factory_errors == 1

    run(main())


def test_close_fails_waiting_callers_with_pool_closed_error() -> None:
    async def main() -> None:
        factory = Factory()
        pool = new_pool(factory, max_open_resources=1)
        waiting = await _hold_slot_and_queue(pool, "b")
        await pool.close()
        with pytest.raises(PoolClosedError):
            await waiting
        assert factory.calls == ["held"]
        assert factory.made[0].closes == 1

    run(main())


def test_pool_shared_between_a_loop_and_a_thread() -> None:
    """The same pool serves asyncio tasks and threads; a grant crosses threads."""

    async def main() -> None:
        factory = Factory()
        async with new_pool(factory, max_open_resources=1) as pool:
            waiting = await _hold_slot_and_queue(pool, "b")
            ref = pool.actor_ref
            released = await asyncio.to_thread(ref.ask, Release("held"))
            assert released is True
            assert (await waiting).key == "b"

    run(main())


def test_ask_after_actor_stopped_by_registry_fails_fast() -> None:
    async def main() -> None:
        pool = new_pool(Factory())
        await pool.acquire("a")
        await asyncio.to_thread(pykka.ActorRegistry.stop_all)
        with pytest.raises(PoolClosedError):
            await pool.acquire("a")
        await pool.close()  # still idempotent after an outside stop

    run(main())


def test_a_closed_event_loop_never_stops_the_pool() -> None:
    # A task queued in the pool whose event loop is closed without cancelling
    # it: when its slot comes, waking that loop fails, and the pool carries on.
    factory = Factory()
    pool = new_pool(factory, max_open_resources=1)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(pool.acquire("a"))
        task = loop.create_task(pool.acquire("b"))
        loop.run_until_complete(asyncio.sleep(0))  # the task sends its Acquire
        wait_for(lambda: pool.actor_ref.ask(GetStats()).wait_count == 1)
    finally:
        loop.close()
    del task
    assert pool.actor_ref.ask(Release("a")) is True  # grants "b": the wake fails
    wait_for(lambda: pool.actor_ref.ask(Contains("b")))
    assert pool.actor_ref.ask(Acquire("b")).key == "b"  # the supervisor serves
    run(pool.close())
