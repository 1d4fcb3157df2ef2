"""Sizing through the public API (SPEC 12): `resize`, `keep_warm`, `pop_stats`."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from conftest import wait_for
from resources import Factory

from pooler_actors import AsyncPool, Pool, PoolClosedError, PopStats, Resize


def test_growing_serves_a_waiting_caller() -> None:
    factory = Factory()
    with Pool(factory, max_open_resources=1, max_holders=1) as pool:
        first = pool.checkout("a")
        got: list[Any] = []
        waiter = threading.Thread(target=lambda: got.append(pool.checkout("b", 10)))
        waiter.start()
        wait_for(lambda: pool.stats().wait_count == 1)
        pool.resize(2)
        waiter.join(10)
        assert got and got[0].key == "b"
        assert pool.stats().max_open_resources == 2
        pool.checkin(first)
        pool.checkin(got[0])


def test_shrinking_closes_idle_ones_and_a_held_one_at_its_checkin() -> None:
    factory = Factory()
    with Pool(factory, max_open_resources=3, max_holders=1) as pool:
        held = pool.checkout("a")
        also = pool.checkout("b")
        pool.checkin(pool.checkout("c"))
        pool.resize(1)  # c, idle, closes; a, held and used least recently, retires
        made = {r.key: r for r in factory.made}
        assert made["c"].closes == 1
        assert made["a"].closes == made["b"].closes == 0
        stats = pool.stats()
        assert (stats.max_open_resources, stats.open_resources) == (1, 2)
        assert (stats.retiring, stats.open) == (1, 1)
        assert not pool.contains("a") and pool.contains("b")
        pool.checkin(held)
        wait_for(lambda: made["a"].closes == 1)
        assert pool.stats().open_resources == 1
        pool.checkin(also)


def test_a_shrunk_cap_holds_new_creations_until_used_is_below_it() -> None:
    factory = Factory()
    with Pool(factory, max_open_resources=2, max_holders=1) as pool:
        a, b = pool.checkout("a"), pool.checkout("b")
        pool.resize(1)  # one of them retires, held
        got: list[Any] = []
        waiter = threading.Thread(target=lambda: got.append(pool.checkout("c", 10)))
        waiter.start()
        wait_for(lambda: pool.stats().wait_count == 1)
        pool.checkin(a)  # a (least recently used) closes: used 1, still the cap
        wait_for(lambda: pool.stats().open_resources == 1)
        assert not got and factory.calls == ["a", "b"]
        pool.checkin(b)  # b is idle: reclaimed for c
        waiter.join(10)
        assert got and got[0].key == "c"
        pool.checkin(got[0])


@pytest.mark.parametrize(
    ("value", "error"),
    [(0, ValueError), (-3, ValueError), (2.0, TypeError), (True, TypeError)],
)
def test_a_bad_size_is_refused_in_the_caller(value: Any, error: type) -> None:
    with pytest.raises(error, match="max_open_resources"):
        Resize(value)
    with Pool(Factory(), max_open_resources=3) as pool:
        with pytest.raises(error, match="max_open_resources"):
            pool.resize(value)
        assert pool.stats().max_open_resources == 3


def test_a_size_below_max_per_key_is_refused_and_changes_nothing() -> None:
    with Pool(Factory(), max_open_resources=4, max_per_key=3, max_holders=1) as pool:
        with pytest.raises(ValueError, match=r"max_per_key \(3\)"):
            pool.resize(2)
        assert pool.stats().max_open_resources == 4
        pool.resize(3)
        assert pool.stats().max_open_resources == 3


def test_resizing_a_closed_pool_raises() -> None:
    pool = Pool(Factory())
    pool.close()
    with pytest.raises(PoolClosedError):
        pool.resize(2)


def test_warm_keys_are_made_at_start_and_again_after_a_release() -> None:
    factory = Factory()
    with Pool(factory, max_open_resources=5, keep_warm=["a", "b"]) as pool:
        wait_for(lambda: pool.stats().open == 2)
        assert sorted(factory.calls) == ["a", "b"]
        assert pool.release("a")
        wait_for(lambda: factory.calls.count("a") == 2 and pool.stats().open == 2)
        assert pool.contains("a")


def test_a_failing_warm_key_does_not_spin() -> None:
    factory = Factory(fail={"a"})
    with Pool(factory, keep_warm=["a"], create_retries=0, create_backoff=0.2) as pool:
        wait_for(lambda: len(factory.calls) >= 2)  # tried again after 0.1-0.3 s
        wait_for(lambda: pool.stats().factory_errors >= 2)
        # Then 0.2-0.6 s, 0.4-1.2 s: a handful of calls, not thousands.
        assert len(factory.calls) < 6
        factory.fail.clear()
        wait_for(lambda: pool.stats().open == 1, timeout=15)


def test_keep_warm_is_checked() -> None:
    with pytest.raises(TypeError, match="keep_warm"):
        Pool(Factory(), keep_warm="ab")
    with pytest.raises(TypeError, match="hashable"):
        Pool(Factory(), keep_warm=[["a"]])


def test_pop_stats_resets_counters_not_gauges() -> None:
    with Pool(Factory(), max_open_resources=3) as pool:
        pool.acquire("a")
        pool.acquire("b")
        popped = pool.pop_stats()
        assert (popped.acquires, popped.created, popped.open_resources) == (2, 2, 2)
        pool.acquire("a")
        popped = pool.pop_stats()
        assert (popped.acquires, popped.created, popped.open_resources) == (1, 0, 2)
        assert pool.stats().acquires == 3  # stats() stays cumulative
        assert pool.actor_ref.ask(PopStats()).acquires == 0


def test_async_pool_resize_and_pop_stats() -> None:
    async def main() -> None:
        async with AsyncPool(Factory(), max_open_resources=1) as pool:
            await pool.acquire("a")
            await pool.resize(2)
            await pool.acquire("b")
            stats = await pool.pop_stats()
            assert (stats.max_open_resources, stats.acquires) == (2, 2)
            assert (await pool.pop_stats()).acquires == 0
            with pytest.raises(ValueError, match="max_open_resources"):
                await pool.resize(0)

    asyncio.run(main())


def test_async_pool_keeps_keys_warm() -> None:
    factory = Factory()

    async def main() -> None:
        async with AsyncPool(factory, keep_warm=("a",)) as pool:
            for _ in range(1000):  # the creation runs in the background
                if (await pool.stats()).open == 1:
                    break
                await asyncio.sleep(0.01)
            assert await pool.contains("a")
            assert factory.calls == ["a"]

    asyncio.run(main())
