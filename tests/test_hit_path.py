"""The hit path (pooler_actors/_fastpath.py): served in the caller's thread.

A thread storm per mode checks the rules from the outside: with callers
taking and giving back resources in their own threads while others release,
refresh and the pool expires and evicts, no resource is used after its close
began, an exclusive resource never has two users, the supervisor's mailbox
stays bounded, and once the pool is quiet its counters are exact.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Hashable
from typing import Any

import pytest
import structlog
from conftest import wait_for
from structlog.testing import capture_logs

from pooler_actors import Acquire, Pool, PoolClosedError


class Conn:
    """Records its users and fails loudly if used after close() began."""

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.users = 0
        self.closing = False
        self.closes = 0
        self.lock = threading.Lock()
        self.errors: list[str] = []

    def use(self, exclusive: bool) -> None:
        with self.lock:
            if self.closing:
                self.errors.append(f"{self.key}: used after close began")
            self.users += 1
            if exclusive and self.users > 1:
                self.errors.append(f"{self.key}: {self.users} users at once")
        time.sleep(0)  # let others interleave while "in use"
        with self.lock:
            self.users -= 1

    def ping(self) -> None:
        if random.random() < 0.05:
            raise ConnectionError("flaky")

    def close(self) -> None:
        with self.lock:
            if self.users:
                self.errors.append(f"{self.key}: closed with {self.users} users")
            self.closing = True
            self.closes += 1


class Made:
    def __init__(self) -> None:
        self.conns: list[Conn] = []

    def __call__(self, key: Hashable) -> Conn:
        conn = Conn(key)
        self.conns.append(conn)
        return conn


@pytest.mark.parametrize("max_holders", [None, 1])
def test_storm_never_uses_a_closing_resource(max_holders: int | None) -> None:
    made = Made()
    keys = [f"k{i}" for i in range(4)]
    exclusive = max_holders == 1
    pool: Pool[str, Conn] = Pool(
        made,
        max_open_resources=6,
        max_holders=max_holders,
        max_per_key=1,
        max_idle_time=0.02,
        max_lifetime=0.05,
        health_check_interval=0.01,
        drain_timeout=30,
        name="storm",
    )
    stop = threading.Event()
    done = [0] * 8
    depths: list[int] = []

    def leaser(i: int) -> None:
        rnd = random.Random(i)
        n = 0
        while not stop.is_set():
            key = rnd.choice(keys)
            with pool.lease(key, timeout=10) as conn:
                conn.use(exclusive)
            n += 1
        done[i] = n

    def disturber() -> None:
        rnd = random.Random(99)
        while not stop.is_set():
            key = rnd.choice(keys)
            if rnd.random() < 0.5:
                pool.release(key)
            else:
                pool.refresh(key)
            depths.append(pool.actor_ref.actor_inbox.qsize())  # type: ignore[attr-defined]
            time.sleep(0.001)

    threads = [threading.Thread(target=leaser, args=(i,)) for i in range(8)]
    threads.append(threading.Thread(target=disturber))
    for t in threads:
        t.start()
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and not any(c.errors for c in made.conns):
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(30)
    before = pool.stats()
    pool.close()
    errors = [e for c in made.conns for e in c.errors]
    assert errors == []
    assert all(c.closes == 1 for c in made.conns)
    assert before.holders == 0
    assert before.checkouts >= sum(done)  # hits and core grants both count
    assert sum(done) > 100  # the storm really ran
    assert max(depths) < 64  # hit notes never pile up in the mailbox


def test_counters_are_exact_once_quiet() -> None:
    pool: Pool[str, Conn] = Pool(Made(), health_check_interval=None, name="exact")
    pool.acquire("a")
    before = pool.stats()
    counts = [0] * 4

    def hitter(i: int) -> None:
        for _ in range(5000):
            pool.acquire("a")
        counts[i] = 5000

    threads = [threading.Thread(target=hitter, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    pool.stats()  # queued behind every note the hitters left
    after = pool.stats()
    pool.close()
    assert after.hits - before.hits == sum(counts) == 20000
    assert after.acquires - before.acquires == 20000


def test_a_hit_carries_the_callers_context_when_debug_is_on() -> None:
    with (
        capture_logs() as logs,
        Pool(Made(), health_check_interval=None, name="ctx") as pool,
    ):
        pool.acquire("a")
        with structlog.contextvars.bound_contextvars(request_id="r-7"):
            pool.acquire("a")  # served in this thread
            pool.actor_ref.ask(Acquire("a"))  # the ref answers without a trip too
        wait_for(
            lambda: len([e for e in logs if e["event"] == "pool.acquire.hit"]) == 2
        )
    hits = [e for e in logs if e["event"] == "pool.acquire.hit"]
    assert [e.get("request_id") for e in hits] == ["r-7", "r-7"]
    assert all(e["pool"] == "ctx" and e["key"] == "a" for e in hits)


def test_release_then_acquire_never_returns_the_old_resource() -> None:
    # Rule 1: the view is updated before the release's reply is sent.
    made = Made()
    with Pool(made, health_check_interval=None) as pool:
        for _ in range(200):
            old = pool.acquire("a")
            assert pool.release("a")
            assert pool.acquire("a") is not old


def test_exclusive_checkout_waits_behind_queued_callers() -> None:
    # Rule 5: a key with queued callers is served by the core, in order.
    with Pool(Made(), max_holders=1, health_check_interval=None) as pool:
        first = pool.checkout("a")
        order: list[int] = []

        def waiter(i: int) -> None:
            lease = pool.checkout("a", timeout=10)
            order.append(i)
            pool.checkin(lease)

        threads = []
        for i in range(3):
            threads.append(threading.Thread(target=waiter, args=(i,)))
            threads[-1].start()
            wait_for(lambda i=i: pool.stats().wait_count == i + 1)  # type: ignore[misc]
        assert pool.checkin(first)
        for t in threads:
            t.join(10)
        assert order == [0, 1, 2]
        assert pool.checkin(first) is False  # a second checkin counts for nothing


def test_closed_pool_has_no_hit_path() -> None:
    pool: Pool[str, Any] = Pool(Made(), health_check_interval=None)
    pool.acquire("a")
    pool.close()
    with pytest.raises(PoolClosedError):
        pool.acquire("a")
