"""Lifecycle policies: max_lifetime, max_idle_time, prewarm and refresh (SPEC 6)."""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from typing import Any

import pytest
from conftest import wait_for
from structlog.testing import capture_logs

import pooler_actors.supervisor as sup
from pooler_actors import Pool, Prewarm, Refresh, Release
from pooler_actors._messages import HealthTick


class Conn:
    """A resource whose close can be held open by a gate, to freeze a moment."""

    def __init__(self, key: Hashable, gen: int, close_gate: threading.Event | None):
        self.key = key
        self.gen = gen
        self.closed = False
        self.healthy = True
        self.close_started = threading.Event()
        self.close_started_at = float("inf")
        self._close_gate = close_gate

    def ping(self) -> None:
        if not self.healthy:
            raise ConnectionError(f"{self!r} is broken")

    def close(self) -> None:
        self.close_started_at = time.monotonic()
        self.close_started.set()
        if self._close_gate is not None:
            assert self._close_gate.wait(30)
        self.closed = True

    def __repr__(self) -> str:
        return f"Conn({self.key!r}, gen={self.gen})"


class Factory:
    def __init__(self) -> None:
        self.made: list[Conn] = []
        self.gates: dict[Hashable, threading.Event] = {}
        self.entered: list[Hashable] = []
        self.close_gate: threading.Event | None = None
        self.fail: set[Hashable] = set()

    def __call__(self, key: Hashable) -> Conn:
        self.entered.append(key)
        gate = self.gates.get(key)
        if gate is not None:
            assert gate.wait(30)
        if key in self.fail:
            raise ConnectionError(key)
        conn = Conn(key, sum(c.key == key for c in self.made), self.close_gate)
        self.made.append(conn)
        return conn


# --- max_lifetime ----------------------------------------------------------


def test_lifetime_expiry_closes_and_replaces_on_demand() -> None:
    factory = Factory()
    with Pool(factory, max_lifetime=0.1, health_check_interval=None) as pool:
        old = pool.acquire("db")
        wait_for(lambda: old.closed)
        assert not pool.contains("db")
        new = pool.acquire("db")
        assert new is not old and new.gen == 1 and not new.closed
        assert pool.stats().lifetime_expired >= 1


def test_expiry_never_hands_out_a_closing_resource() -> None:
    # Freeze the moment an expiry has started closing the old resource: a
    # caller asking for the key then gets a fresh one, never the closing one.
    for _ in range(10):
        factory = Factory()
        factory.close_gate = threading.Event()
        with Pool(factory, max_lifetime=0.05, health_check_interval=None) as pool:
            old = pool.acquire("db")
            assert old.close_started.wait(10)
            fresh = pool.acquire("db")
            assert fresh is not old
            assert not fresh.close_started.is_set()
            factory.close_gate.set()


def test_expiry_and_acquire_race() -> None:
    # Many acquires of one key while it expires every few milliseconds. A
    # resource's close starts only after the supervisor stopped handing it out,
    # so no caller may get a resource whose close began before it even asked.
    factory = Factory()
    errors: list[str] = []
    with Pool(factory, max_lifetime=0.005, health_check_interval=None) as pool:

        def run() -> None:
            # Hits complete in the caller's thread now, so run until several
            # lifetimes have passed rather than for a fixed count.
            deadline = time.monotonic() + 10
            while len(factory.made) < 4 and time.monotonic() < deadline:
                asked_at = time.monotonic()
                conn = pool.acquire("db")
                if conn.close_started_at < asked_at:
                    errors.append(f"{conn} was closing before it was asked for")

        threads = [threading.Thread(target=run) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors
    assert len(factory.made) > 1
    assert all(c.closed for c in factory.made)


def test_lifetimes_are_jittered(monkeypatch: pytest.MonkeyPatch) -> None:
    draws: list[tuple[float, float]] = []

    def uniform(a: float, b: float) -> float:
        draws.append((a, b))
        return b  # the shortest lifetime: 5 % off (the draw scales [0, 1) to 5 %)

    monkeypatch.setattr(sup.random, "uniform", uniform)
    factory = Factory()
    with Pool(factory, max_lifetime=1000.0, health_check_interval=None) as pool:
        pool.acquire("a")
        pool.acquire("b")
        # Drawn by the supervisor right after it answered the acquire.
        wait_for(lambda: len(draws) == 2)
        assert draws == [(0.0, 1.0), (0.0, 1.0)]


# --- max_idle_time ---------------------------------------------------------


def test_idle_resource_is_closed_and_frees_its_slot() -> None:
    factory = Factory()
    with Pool(
        factory, max_open_resources=1, max_idle_time=0.1, health_check_interval=None
    ) as pool:
        idle = pool.acquire("idle")
        with capture_logs() as logs:
            wait_for(lambda: idle.closed)
            wait_for(lambda: any(e["event"] == "pool.resource.expired" for e in logs))
        event = next(e for e in logs if e["event"] == "pool.resource.expired")
        assert event["reason"] == "max_idle_time" and event["key"] == "idle"
        assert pool.stats().idle_expired == 1
        assert pool.stats().open_resources == 0


def test_used_resource_is_not_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    # The supervisor's clock is the test's: no luck with thread scheduling.
    # Any message wakes the supervisor's loop, which then fires due timers.
    now = [1000.0]
    monkeypatch.setattr(sup, "monotonic", lambda: now[0])
    factory = Factory()
    with Pool(factory, max_idle_time=10, health_check_interval=None) as pool:
        hot = pool.acquire("hot")
        cold = pool.acquire("cold")
        now[0] += 6
        assert pool.acquire("hot") is hot  # used at +6: idle until +16
        # A hit completes in the caller's thread and tells the supervisor
        # after; this ask queues behind that note, so it is in at +6.
        pool.stats()
        now[0] += 5  # +11: cold has been idle 11 s, hot 5 s
        pool.stats()
        wait_for(lambda: cold.closed)
        assert not hot.closed and pool.contains("hot")
        now[0] += 6  # +17: hot has been idle 11 s too
        pool.stats()
        wait_for(lambda: hot.closed)
        assert pool.stats().idle_expired == 2


# --- prewarm ---------------------------------------------------------------


def test_prewarm_reports_per_key_within_the_cap() -> None:
    factory = Factory()
    factory.fail.add("bad")
    # A creation in flight holds a slot, the failing one included: with a cap
    # of 4, "a" (open), "b", "bad" and "c" fill it and "d" is not created.
    with Pool(factory, max_open_resources=4) as pool:
        pool.acquire("a")
        result = pool.prewarm(["a", "b", "bad", "c", "d"])
        assert result == {
            "a": "open",
            "b": "created",
            "bad": "failed",
            "c": "created",
            "d": "not_created",
        }
        assert pool.contains("b") and pool.contains("c")
        assert not pool.contains("d") and not pool.contains("bad")
        assert pool.stats().prewarmed == 2


def test_prewarm_creates_in_parallel() -> None:
    factory = Factory()
    gate = threading.Event()
    for key in "xyz":
        factory.gates[key] = gate
    with Pool(factory) as pool:
        future = pool.actor_ref.ask(Prewarm(["x", "y", "z"]), block=False)
        # All three factories are running at once before any is let through.
        wait_for(lambda: sorted(factory.entered) == ["x", "y", "z"])
        gate.set()
        assert future.get(timeout=10) == dict.fromkeys("xyz", "created")


def test_prewarm_never_waits_for_a_slot() -> None:
    factory = Factory()
    with Pool(factory, max_open_resources=1) as pool:
        pool.acquire("busy")
        assert pool.prewarm(["a", "b"]) == {"a": "not_created", "b": "not_created"}


# --- refresh -----------------------------------------------------------------


def test_refresh_below_cap_serves_old_until_swap() -> None:
    factory = Factory()
    with Pool(factory, max_open_resources=2) as pool:
        old = pool.acquire("db")
        factory.gates["db"] = threading.Event()
        future = pool.actor_ref.ask(Refresh("db"), block=False)
        wait_for(lambda: factory.entered.count("db") == 2)
        assert pool.acquire("db") is old  # still serving during the refresh
        factory.gates["db"].set()
        assert future.get(timeout=10) is True
        new = pool.acquire("db")
        assert new is not old and new.gen == 1
        wait_for(lambda: old.closed)
        assert pool.stats().refreshed == 1
        assert [k for k, _ in pool.all()] == ["db"]


def test_refresh_at_cap_closes_first_and_callers_wait_for_new() -> None:
    factory = Factory()
    factory.close_gate = threading.Event()
    with Pool(factory, max_open_resources=1) as pool:
        old = pool.acquire("db")
        future = pool.actor_ref.ask(Refresh("db"), block=False)
        assert old.close_started.wait(10)
        got: dict[str, Any] = {}
        caller = threading.Thread(target=lambda: got.update(conn=pool.acquire("db")))
        caller.start()
        wait_for(lambda: pool.stats().wait_count == 1)
        assert len(factory.made) == 1  # the cap holds while old closes
        factory.close_gate.set()
        assert future.get(timeout=10) is True
        caller.join(10)
        assert got["conn"] is not old and got["conn"].gen == 1
        assert old.closed


def test_refresh_of_missing_key_is_false() -> None:
    with Pool(Factory()) as pool:
        assert pool.refresh("nothing") is False


@pytest.mark.parametrize("how", ["release", "release_all"])
def test_release_cancels_a_refresh_at_the_cap(how: str) -> None:
    factory = Factory()
    factory.close_gate = threading.Event()
    with Pool(factory, max_open_resources=1) as pool:
        old = pool.acquire("db")
        refresh = pool.actor_ref.ask(Refresh("db"), block=False)
        assert old.close_started.wait(10)
        done = threading.Event()
        if how == "release":
            released: list[bool] = []
            threading.Thread(
                target=lambda: (released.append(pool.release("db")), done.set())
            ).start()
        else:
            threading.Thread(target=lambda: (pool.release_all(), done.set())).start()
        factory.close_gate.set()
        assert done.wait(10)
        # Once the release replied, no resource of the key exists, and the
        # refresh reports that nothing was put in place.
        assert pool.stats().open_resources == 0
        assert not pool.contains("db")
        assert refresh.get(timeout=10) is False
        if how == "release":
            assert released == [True]
        assert len(factory.made) == 1


def test_release_during_a_refresh_below_the_cap_discards_the_new_one() -> None:
    factory = Factory()
    with Pool(factory, max_open_resources=2) as pool:
        old = pool.acquire("db")
        factory.gates["db"] = threading.Event()
        refresh = pool.actor_ref.ask(Refresh("db"), block=False)
        wait_for(lambda: factory.entered.count("db") == 2)
        # The release waits for the creation it retired to end (SPEC 3):
        # asked, then the factory let go.
        release = pool.actor_ref.ask(Release("db"), block=False)
        wait_for(lambda: not pool.contains("db"))
        factory.gates["db"].set()
        assert release.get(timeout=10) is True
        assert refresh.get(timeout=10) is False
        wait_for(lambda: pool.stats().open_resources == 0)
        assert not pool.contains("db")
        assert all(conn.closed for conn in factory.made) and old.closed


def test_refresh_completes_when_the_old_one_is_evicted_meanwhile() -> None:
    factory = Factory()
    with Pool(factory, max_open_resources=2, health_check_interval=None) as pool:
        old = pool.acquire("db")
        factory.gates["db"] = threading.Event()
        refresh = pool.actor_ref.ask(Refresh("db"), block=False)
        wait_for(lambda: factory.entered.count("db") == 2)
        old.healthy = False
        pool.actor_ref.tell(HealthTick())  # a health check evicts the old one
        wait_for(lambda: old.closed)
        factory.gates["db"].set()
        assert refresh.get(timeout=10) is True
        new = pool.acquire("db")
        assert new is not old and new.gen == 1
