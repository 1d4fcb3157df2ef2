"""Concurrency tests that would catch the Go package's races."""

from __future__ import annotations

import random
import threading
from collections.abc import Hashable

from conftest import wait_for

from pooler_actors import AcquireTimeout, Pool


class Counted:
    """A resource whose factory and close keep a live count and its maximum."""

    def __init__(self, census: Census, key: Hashable) -> None:
        self.census = census
        self.key = key
        self.closes = 0

    def ping(self) -> None:
        pass

    def close(self) -> None:
        self.closes += 1
        self.census.leave()


class Census:
    """Counts resources in existence from the factory's and close()'s point of view.

    The counters are touched from many resource threads at once, so a lock
    guards them: this is test instrumentation, not pool logic.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.alive = 0
        self.peak = 0
        self.calls: list[Hashable] = []
        self.made: list[Counted] = []

    def __call__(self, key: Hashable) -> Counted:
        with self._lock:
            self.calls.append(key)
            self.alive += 1
            self.peak = max(self.peak, self.alive)
            res = Counted(self, key)
            self.made.append(res)
            return res

    def leave(self) -> None:
        with self._lock:
            self.alive -= 1


def test_twenty_threads_one_missing_key_factory_called_once() -> None:
    census = Census()
    barrier = threading.Barrier(20)
    got: list[Counted] = []
    with Pool(census) as pool:

        def run() -> None:
            barrier.wait()
            got.append(pool.acquire("the-key"))

        threads = [threading.Thread(target=run) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(got) == 20
        assert census.calls == ["the-key"]
        assert all(res is got[0] for res in got)
        stats = pool.stats()
        assert stats.created == 1
        assert stats.acquires == 20
        assert stats.hits + stats.joins == 19


def test_random_acquire_release_never_exceeds_cap() -> None:
    census = Census()
    seed = random.randrange(1 << 30)
    errors: list[BaseException] = []
    with Pool(census, max_open_resources=3) as pool:

        def run(n: int) -> None:
            rnd = random.Random(seed + n)
            try:
                for _ in range(60):
                    key = f"k{rnd.randrange(8)}"
                    if rnd.random() < 0.6:
                        try:
                            # Always a deadline: with no timeout, callers queued
                            # after the last releaser finished would wait forever.
                            res = pool.acquire(key, timeout=rnd.choice([0.01, 0.2]))
                        except AcquireTimeout:
                            continue
                        assert res.key == key
                    else:
                        pool.release(key)
                    assert pool.stats().open_resources <= 3
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=run, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, f"seed={seed}: {errors!r}"
        assert census.peak <= 3, f"seed={seed}: {census.peak} resources existed"
        assert pool.stats().wait_count == 0
    assert census.alive == 0, f"seed={seed}"
    assert all(res.closes == 1 for res in census.made), f"seed={seed}"


def test_release_all_with_several_waiters_grants_all() -> None:
    census = Census()
    with Pool(census, max_open_resources=2) as pool:
        pool.acquire("a")
        pool.acquire("b")
        results: dict[str, Counted] = {}
        threads = [
            threading.Thread(target=lambda k=k: results.__setitem__(k, pool.acquire(k)))
            for k in ("w1", "w2", "w3", "w4")
        ]
        for t in threads:
            t.start()
        wait_for(lambda: pool.stats().wait_count == 4)
        pool.release_all()
        # Two slots freed: two waiters are granted at once; the other two keep
        # waiting for a slot (the cap holds), and get one on the next release.
        wait_for(lambda: len(results) == 2)
        assert census.peak <= 2
        pool.release_all()
        wait_for(lambda: len(results) == 4)
        for t in threads:
            t.join(10)
        assert sorted(results) == ["w1", "w2", "w3", "w4"]
        assert census.peak <= 2


def test_release_all_wakes_every_waiter_when_slots_suffice() -> None:
    census = Census()
    with Pool(census, max_open_resources=4) as pool:
        for key in "abcd":
            pool.acquire(key)
        done = []
        threads = [
            threading.Thread(target=lambda k=k: done.append(pool.acquire(k).key))
            for k in ("w1", "w2", "w3", "w4")
        ]
        for t in threads:
            t.start()
        wait_for(lambda: pool.stats().wait_count == 4)
        pool.release_all()
        for t in threads:
            t.join(10)
        assert sorted(done) == ["w1", "w2", "w3", "w4"]


def test_slow_factory_does_not_block_other_keys() -> None:
    gate = threading.Event()

    def factory(key: Hashable) -> Counted:
        if key == "slow":
            assert gate.wait(30)
        return Counted(Census(), key)

    with Pool(factory) as pool:
        slow_done = threading.Event()
        threading.Thread(
            target=lambda: (pool.acquire("slow"), slow_done.set()), daemon=True
        ).start()
        wait_for(lambda: pool.stats().creating == 1)
        # While "slow" is stuck in its factory, every other key is served.
        for i in range(20):
            assert pool.acquire(f"fast{i}").key == f"fast{i}"
            assert pool.release(f"fast{i}") is True
        assert pool.contains("slow")
        assert not slow_done.is_set()
        gate.set()
        assert slow_done.wait(10)
