"""Every pool event and every stats field: triggered, then checked field by field.

Events are emitted in the supervisor's thread, so each test waits for the
event it expects (``wait_event``) instead of sleeping.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import threading
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest
import structlog
from conftest import run_python, wait_for
from structlog.contextvars import bind_contextvars, clear_contextvars
from structlog.testing import CapturingLogger, capture_logs

from pooler_actors import (
    Acquire,
    AcquireTimeout,
    FactoryError,
    Pool,
    Stats,
    TooManyWaiters,
)
from pooler_actors._events import Events
from pooler_actors._messages import HealthTick, Withdraw
from pooler_actors.resource import BaseResourceActor
from pooler_actors.stats import COUNTERS, GAUGES

Log = list[dict[str, Any]]


class Conn:
    """A resource whose ping and close do what its :class:`Plan` says."""

    def __init__(self, key: Hashable, plan: Plan) -> None:
        self.key = key
        self._plan = plan

    def ping(self) -> None:
        gate = self._plan.ping_blocks.get(self.key)
        if gate is not None:
            gate.wait(10)
        if self.key in self._plan.ping_fails:
            raise RuntimeError(f"ping failed: {self.key}")

    def close(self) -> None:
        gate = self._plan.close_blocks.get(self.key)
        if gate is not None:
            gate.wait(10)
        if self.key in self._plan.close_fails:
            raise RuntimeError(f"close failed: {self.key}")


class Plan:
    """The factory: makes :class:`Conn`, fails or blocks for the keys it is told."""

    def __init__(self) -> None:
        self.create_gate: threading.Event | None = None
        self.fail_keys: set[Hashable] = set()
        self.ping_fails: set[Hashable] = set()
        self.close_fails: set[Hashable] = set()
        self.ping_blocks: dict[Hashable, threading.Event] = {}
        self.close_blocks: dict[Hashable, threading.Event] = {}
        self.calls: list[Hashable] = []

    def __call__(self, key: Hashable) -> Conn:
        self.calls.append(key)
        if self.create_gate is not None:
            self.create_gate.wait(10)
        if key in self.fail_keys:
            raise ValueError(f"cannot make {key}")
        return Conn(key, self)

    def open_all_gates(self) -> None:
        """Let every blocked factory, ping and close return (no thread outlives us)."""
        if self.create_gate is not None:
            self.create_gate.set()
        for gate in (*self.ping_blocks.values(), *self.close_blocks.values()):
            gate.set()


@pytest.fixture
def plan() -> Iterator[Plan]:
    p = Plan()
    yield p
    p.open_all_gates()


@pytest.fixture
def logs() -> Iterator[Log]:
    with capture_logs() as entries:
        yield entries


@pytest.fixture(autouse=True)
def _no_context_left() -> Iterator[None]:
    clear_contextvars()
    yield
    clear_contextvars()


def found(logs: Log, name: str, **fields: Any) -> list[dict[str, Any]]:
    return [
        e
        for e in list(logs)
        if e["event"] == name and all(e.get(k) == v for k, v in fields.items())
    ]


def wait_event(logs: Log, name: str, n: int = 1, **fields: Any) -> dict[str, Any]:
    """The ``n``-th event called ``name`` with ``fields``, once it was emitted."""
    wait_for(lambda: len(found(logs, name, **fields)) >= n)
    return found(logs, name, **fields)[n - 1]


def seconds(logged: float, roundings: int = 1) -> Any:
    """Matches a duration of the stats that events show rounded to the µs."""
    return pytest.approx(logged, rel=0, abs=roundings * 0.5e-6 + 1e-12)


def stats_when(pool: Pool[Any, Any], predicate: Any) -> Stats:
    """The pool's stats, once ``predicate(stats)`` holds."""
    wait_for(lambda: predicate(pool.stats()))
    return pool.stats()


def in_thread(fn: Any, *args: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn(*args))
        except BaseException as error:
            out.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


# --- lifecycle events -------------------------------------------------------


def test_pool_started_and_closed_events(logs: Log, plan: Plan) -> None:
    pool: Pool[str, Conn] = Pool(plan, name="life", max_open_resources=3)
    started = wait_event(logs, "pool.started")
    assert started == {
        "event": "pool.started",
        "log_level": "info",
        "pool": "life",
        "max_open_resources": 3,
        "health_check_interval": 60.0,
    }
    pool.close()
    closed = wait_event(logs, "pool.closed")
    assert closed == {
        "event": "pool.closed",
        "log_level": "info",
        "pool": "life",
        "reason": "closed",
    }


# --- acquire events and counters --------------------------------------------


def test_created_and_hit_events_and_counters(logs: Log, plan: Plan) -> None:
    with Pool(plan, name="p", health_check_interval=None) as pool:
        first = pool.acquire("a")
        assert pool.acquire("a") is first
        creating = wait_event(logs, "pool.resource.creating", key="a")
        created = wait_event(logs, "pool.acquire.created", key="a")
        hit = wait_event(logs, "pool.acquire.hit", key="a")
        stats = pool.stats()
    assert creating["log_level"] == "debug"
    assert created["log_level"] == "info"
    assert created["pool"] == "p"
    assert created["created_s"] >= 0
    assert hit == {
        "event": "pool.acquire.hit",
        "log_level": "debug",
        "pool": "p",
        "key": "a",
    }
    assert (stats.acquires, stats.hits, stats.created) == (2, 1, 1)
    assert (stats.open_resources, stats.open, stats.creating) == (1, 1, 0)
    assert len(found(logs, "pool.acquire.hit")) == 1


def test_joined_event_and_joins_counter(logs: Log, plan: Plan) -> None:
    plan.create_gate = threading.Event()
    with Pool(plan, name="p", health_check_interval=None) as pool:
        t1, out1 = in_thread(pool.acquire, "a")
        wait_event(logs, "pool.resource.creating", key="a")
        t2, out2 = in_thread(pool.acquire, "a")
        joined = wait_event(logs, "pool.acquire.joined", key="a")
        stats = pool.stats()
        assert (stats.creating, stats.open, stats.open_resources) == (1, 0, 1)
        plan.create_gate.set()
        t1.join(10)
        t2.join(10)
        assert out1[0] is out2[0]
        stats = pool.stats()
    assert joined["log_level"] == "debug"
    assert joined["pool"] == "p"
    assert (stats.acquires, stats.joins, stats.created, stats.hits) == (2, 1, 1, 0)
    assert plan.calls == ["a"]


def test_queued_and_granted_events_and_wait_stats(logs: Log, plan: Plan) -> None:
    with Pool(plan, name="p", max_open_resources=1, health_check_interval=None) as pool:
        pool.acquire("a")
        t, out = in_thread(pool.acquire, "b")
        queued = wait_event(logs, "pool.acquire.queued", key="b")
        stats = pool.stats()
        assert (stats.wait_count, stats.waiting, stats.waits) == (1, 1, 1)
        assert stats.wait_duration == 0.0
        pool.release("a")
        t.join(10)
        assert isinstance(out[0], Conn)
        granted = wait_event(logs, "pool.acquire.granted", key="b")
        stats = pool.stats()
    assert queued["log_level"] == "debug"
    assert queued["waiting"] == 1
    assert granted["log_level"] == "debug"
    assert granted["wait_s"] > 0
    assert stats.wait_count == 0
    assert stats.wait_duration == seconds(granted["wait_s"])
    assert stats.max_wait == seconds(granted["wait_s"])


def test_timeout_event_and_counter(logs: Log, plan: Plan) -> None:
    with Pool(plan, name="p", max_open_resources=1, health_check_interval=None) as pool:
        pool.acquire("a")
        with pytest.raises(AcquireTimeout):
            pool.acquire("b", timeout=0.05)
        late = wait_event(logs, "pool.acquire.timeout", key="b")
        with pytest.raises(AcquireTimeout):
            pool.acquire("c", timeout=0)
        at_once = wait_event(logs, "pool.acquire.timeout", key="c")
        stats = pool.stats()
    assert late["log_level"] == "warning"
    assert late["timeout"] == 0.05
    assert late["wait_s"] >= 0.05
    assert at_once["timeout"] == 0
    assert at_once["wait_s"] == 0.0
    # The one that queued counts as a wait; the timeout=0 one never queued.
    assert (stats.acquires, stats.timeouts, stats.waits, stats.wait_count) == (
        3,
        2,
        1,
        0,
    )
    assert stats.wait_duration >= 0.05
    assert stats.max_wait == pytest.approx(stats.wait_duration)


def test_rejected_event_and_counter(logs: Log, plan: Plan) -> None:
    with Pool(
        plan, name="p", max_open_resources=1, max_waiting=1, health_check_interval=None
    ) as pool:
        pool.acquire("a")
        t, _ = in_thread(pool.acquire, "b", 10)
        wait_event(logs, "pool.acquire.queued", key="b")
        with pytest.raises(TooManyWaiters):
            pool.acquire("c")
        rejected = wait_event(logs, "pool.acquire.rejected", key="c")
        stats = pool.stats()
        pool.release("a")
        t.join(10)
    assert rejected["log_level"] == "warning"
    assert rejected["max_waiting"] == 1
    assert (stats.rejected, stats.waits, stats.acquires) == (1, 1, 3)


def test_withdrawn_event_and_counter(logs: Log, plan: Plan) -> None:
    with Pool(plan, name="p", max_open_resources=1, health_check_interval=None) as pool:
        pool.acquire("a")
        with pytest.raises(pykka.Timeout):
            pool.actor_ref.ask(Acquire("b"), timeout=0.05)
        withdrawn = wait_event(logs, "pool.acquire.withdrawn", key="b")
        stats = pool.stats()
    assert withdrawn["log_level"] == "warning"
    assert withdrawn["wait_s"] > 0
    assert (stats.timeouts, stats.waits, stats.wait_count) == (1, 1, 0)
    assert stats.wait_duration == seconds(withdrawn["wait_s"])


def test_wait_of_a_caller_who_gave_up_is_counted_once(logs: Log, plan: Plan) -> None:
    # A caller who gave up may still be in a creation's joiners when it ends;
    # its wait is counted when its withdrawal arrives, not also when skipped.
    with Pool(plan, name="p", max_open_resources=1, health_check_interval=None) as pool:
        ref = pool.actor_ref
        pool.acquire("a")
        first = ref.ask(Acquire("b"), block=False)
        gave_up = ref.ask(Acquire("b"), block=False)
        wait_event(logs, "pool.acquire.queued", 2, key="b")
        gave_up.on_withdraw = None  # withdraw now, tell the pool later
        assert gave_up.withdraw(pykka.Timeout("gave up"))
        pool.release("a")  # the first caller's creation takes the other along
        assert isinstance(first.get(timeout=10), Conn)
        granted = wait_event(logs, "pool.acquire.granted", key="b")
        assert pool.stats().wait_duration == seconds(granted["wait_s"])
        ref.tell(Withdraw(gave_up))
        withdrawn = wait_event(logs, "pool.acquire.withdrawn", key="b")
        stats = pool.stats()
    assert stats.wait_duration == seconds(granted["wait_s"] + withdrawn["wait_s"], 2)
    assert stats.timeouts == 1


def test_factory_failed_event_and_counter(logs: Log, plan: Plan) -> None:
    plan.fail_keys.add("bad")
    with Pool(plan, name="p", health_check_interval=None) as pool:
        with pytest.raises(FactoryError):
            pool.acquire("bad")
        failed = wait_event(logs, "pool.factory.failed", key="bad")
        stats = pool.stats()
    assert failed["log_level"] == "warning"
    assert failed["error"] == repr(ValueError("cannot make bad"))
    assert (stats.factory_errors, stats.created, stats.open_resources) == (1, 0, 0)


def test_factory_timeout_is_a_failure_and_an_abandon(logs: Log, plan: Plan) -> None:
    plan.create_gate = threading.Event()
    with Pool(plan, name="p", create_timeout=0.05, health_check_interval=None) as pool:
        with pytest.raises(FactoryError):
            pool.acquire("slow")
        failed = wait_event(logs, "pool.factory.failed", key="slow")
        abandoned = wait_event(logs, "pool.resource.abandoned", key="slow")
        stats = pool.stats()
        plan.create_gate.set()
    assert "TimeoutError" in failed["error"]
    assert abandoned["log_level"] == "error"
    assert abandoned["reason"] == "factory did not return"
    assert abandoned["create_timeout"] == 0.05
    assert (stats.factory_errors, stats.abandoned, stats.open_resources) == (1, 1, 0)


# --- release, close -----------------------------------------------------------


def test_release_events_and_counter(logs: Log, plan: Plan) -> None:
    with Pool(plan, name="p", health_check_interval=None) as pool:
        pool.acquire("a")
        assert pool.release("a") is True
        assert pool.release("missing") is False
        release = wait_event(logs, "pool.release", key="a")
        closed = wait_event(logs, "pool.resource.closed", key="a")
        stats = pool.stats()
    assert release == {
        "event": "pool.release",
        "log_level": "info",
        "pool": "p",
        "key": "a",
    }
    assert closed["log_level"] == "debug"
    assert closed["reason"] == "released"
    assert found(logs, "pool.release", key="missing") == []
    assert (stats.releases, stats.open_resources, stats.closing) == (1, 0, 0)


def test_release_all_event_and_counter(logs: Log, plan: Plan) -> None:
    with Pool(plan, name="p", health_check_interval=None) as pool:
        pool.acquire("a")
        pool.acquire("b")
        pool.release_all()
        event = wait_event(logs, "pool.release_all")
        stats = pool.stats()
    assert event == {
        "event": "pool.release_all",
        "log_level": "info",
        "pool": "p",
        "released": 2,
    }
    assert (stats.releases, stats.open_resources) == (2, 0)


def test_closing_gauge_counts_a_close_in_progress(logs: Log, plan: Plan) -> None:
    plan.close_blocks["a"] = gate = threading.Event()
    with Pool(plan, name="p", health_check_interval=None) as pool:
        pool.acquire("a")
        t, out = in_thread(pool.release, "a")
        stats = stats_when(pool, lambda s: s.closing == 1)
        assert (stats.open_resources, stats.open, stats.creating) == (1, 0, 0)
        assert not pool.contains("a")
        gate.set()
        t.join(10)
        assert out == [True]
        stats = pool.stats()
    assert (stats.closing, stats.open_resources) == (0, 0)


def test_close_failed_event_and_counter(logs: Log, plan: Plan) -> None:
    plan.close_fails.add("a")
    with Pool(plan, name="p", health_check_interval=None) as pool:
        pool.acquire("a")
        assert pool.release("a") is True
        failed = wait_event(logs, "pool.close.failed", key="a")
        stats = pool.stats()
    assert failed["log_level"] == "error"
    assert failed["error"] == repr(RuntimeError("close failed: a"))
    assert wait_event(logs, "pool.resource.closed", key="a")["reason"] == "released"
    assert (stats.close_errors, stats.open_resources) == (1, 0)


def test_abandoned_event_and_counter(logs: Log, plan: Plan) -> None:
    plan.close_blocks["a"] = threading.Event()
    with Pool(plan, name="p", close_timeout=0.05, health_check_interval=None) as pool:
        pool.acquire("a")
        assert pool.release("a") is True  # replies once the close is given up on
        abandoned = wait_event(logs, "pool.resource.abandoned", key="a")
        stats = pool.stats()
        plan.close_blocks["a"].set()
    assert abandoned["log_level"] == "error"
    assert abandoned["reason"] == "close did not return"
    assert abandoned["close_timeout"] == 0.05
    assert (stats.abandoned, stats.open_resources, stats.closing) == (1, 0, 0)


def test_lost_event_when_a_resource_actor_stops_unasked(logs: Log, plan: Plan) -> None:
    with Pool(plan, name="p", health_check_interval=None) as pool:
        pool.acquire("a")
        (ref,) = pykka.ActorRegistry.get_by_class(BaseResourceActor)
        ref.stop()
        lost = wait_event(logs, "pool.resource.lost", key="a")
        assert wait_event(logs, "pool.resource.closed", key="a")["reason"] == "lost"
        stats = stats_when(pool, lambda s: s.open_resources == 0)
        assert not pool.contains("a")
    assert lost["log_level"] == "warning"
    assert stats.open == 0


# --- health checks ------------------------------------------------------------


def test_health_check_events_and_counters(logs: Log, plan: Plan) -> None:
    plan.ping_fails.add("bad")
    with Pool(plan, name="p", health_check_interval=None) as pool:
        pool.acquire("good")
        pool.acquire("bad")
        pool.actor_ref.tell(HealthTick())
        started = wait_event(logs, "pool.health.started")
        evicted = wait_event(logs, "pool.health.evicted", key="bad")
        finished = wait_event(logs, "pool.health.finished")
        closed = wait_event(logs, "pool.resource.closed", key="bad")
        stats = stats_when(pool, lambda s: s.open_resources == 1)
    assert started == {
        "event": "pool.health.started",
        "log_level": "debug",
        "pool": "p",
        "pinged": 2,
    }
    assert evicted["log_level"] == "warning"
    assert evicted["reason"] == "ping_failed"
    assert evicted["error"] == repr(RuntimeError("ping failed: bad"))
    assert finished["log_level"] == "info"  # it evicted something
    assert (finished["pinged"], finished["evicted"]) == (2, 1)
    assert finished["took_s"] >= 0
    assert closed["reason"] == "ping_failed"
    assert (stats.health_checks, stats.health_evictions) == (1, 1)
    assert "key" not in started and "key" not in finished


def test_routine_health_check_finishes_at_debug(logs: Log, plan: Plan) -> None:
    with Pool(plan, name="p", health_check_interval=None) as pool:
        pool.acquire("a")
        pool.actor_ref.tell(HealthTick())
        finished = wait_event(logs, "pool.health.finished")
        pool.actor_ref.tell(HealthTick())  # the first one finished: this one runs
        stats = stats_when(pool, lambda s: s.health_checks == 2)
    assert finished["log_level"] == "debug"
    assert (finished["pinged"], finished["evicted"]) == (1, 0)
    assert stats.health_evictions == 0


def test_ping_timeout_eviction(logs: Log, plan: Plan) -> None:
    plan.ping_blocks["slow"] = gate = threading.Event()
    with Pool(plan, name="p", ping_timeout=0.05, health_check_interval=None) as pool:
        pool.acquire("slow")
        pool.actor_ref.tell(HealthTick())
        evicted = wait_event(logs, "pool.health.evicted", key="slow")
        assert not pool.contains("slow")
        gate.set()  # the ping returns, then the close runs
        closed = wait_event(logs, "pool.resource.closed", key="slow")
        stats = pool.stats()
    assert evicted["reason"] == "ping_timeout"
    assert closed["reason"] == "ping_timeout"
    assert stats.health_evictions == 1


# --- lifecycle policies -------------------------------------------------------


def test_lifetime_expiry_event_and_counter(logs: Log, plan: Plan) -> None:
    with Pool(plan, name="p", max_lifetime=0.05, health_check_interval=None) as pool:
        pool.acquire("a")
        expired = wait_event(logs, "pool.resource.expired", key="a")
        closed = wait_event(logs, "pool.resource.closed", key="a")
        stats = pool.stats()
    assert expired["log_level"] == "info"
    assert expired["reason"] == closed["reason"] == "max_lifetime"
    assert (stats.lifetime_expired, stats.idle_expired) == (1, 0)


def test_idle_expiry_event_and_counter(logs: Log, plan: Plan) -> None:
    with Pool(plan, name="p", max_idle_time=0.05, health_check_interval=None) as pool:
        pool.acquire("a")
        expired = wait_event(logs, "pool.resource.expired", key="a")
        stats = stats_when(pool, lambda s: s.open_resources == 0)
    assert expired["log_level"] == "info"
    assert expired["reason"] == "max_idle_time"
    assert (stats.idle_expired, stats.lifetime_expired) == (1, 0)


def test_prewarm_event_and_counter(logs: Log, plan: Plan) -> None:
    with Pool(plan, name="p", max_open_resources=2, health_check_interval=None) as pool:
        assert pool.prewarm(["a", "b", "c"]) == {
            "a": "created",
            "b": "created",
            "c": "not_created",
        }
        first = wait_event(logs, "pool.prewarm.finished")
        assert pool.prewarm(["a"]) == {"a": "open"}  # nothing to wait for
        second = wait_event(logs, "pool.prewarm.finished", 2)
        stats = pool.stats()
    assert first["log_level"] == "info"
    assert first["results"] == {"a": "created", "b": "created", "c": "not_created"}
    assert second["results"] == {"a": "open"}
    assert (stats.prewarmed, stats.created, stats.acquires) == (2, 2, 0)


def test_refresh_event_and_counter(logs: Log, plan: Plan) -> None:
    with Pool(plan, name="p", health_check_interval=None) as pool:
        old = pool.acquire("a")
        assert pool.refresh("a") is True
        refresh = wait_event(logs, "pool.refresh", key="a")
        closed = wait_event(logs, "pool.resource.closed", key="a")
        assert pool.acquire("a") is not old
        assert pool.refresh("missing") is False
        stats = pool.stats()
    assert refresh["log_level"] == "info"
    assert closed["reason"] == "refreshed"
    assert (stats.refreshed, stats.created) == (1, 2)


# --- stats shape ---------------------------------------------------------------


def test_every_stats_field_is_a_gauge_or_a_counter(plan: Plan) -> None:
    with Pool(plan, name="p", health_check_interval=None) as pool:
        fields = pool.stats().as_dict()
    assert set(fields) == set(GAUGES) | set(COUNTERS)
    assert not set(GAUGES) & set(COUNTERS)


# --- context travels with the acquire ------------------------------------------


def test_context_travels_with_the_acquire(logs: Log, plan: Plan) -> None:
    plan.fail_keys.add("bad")
    with Pool(
        plan, name="ctx", max_open_resources=1, health_check_interval=None
    ) as pool:
        bind_contextvars(request_id="req-1", pool="spoofed", key="spoofed")
        pool.acquire("a")
        pool.acquire("a")
        clear_contextvars()

        def other_request() -> None:
            bind_contextvars(request_id="req-2")
            pool.acquire("a")
            with pytest.raises(AcquireTimeout):
                pool.acquire("b", timeout=0)

        t = threading.Thread(target=other_request)
        t.start()
        t.join(10)
        pool.release("a")
        bind_contextvars(request_id="req-3")
        with pytest.raises(FactoryError):
            pool.acquire("bad")
        clear_contextvars()
        wait_event(logs, "pool.factory.failed", key="bad")
    wait_event(logs, "pool.closed")
    for name in ("pool.resource.creating", "pool.acquire.created", "pool.acquire.hit"):
        event = found(logs, name, key="a")[0]
        assert event["request_id"] == "req-1", name
        assert event["pool"] == "ctx"  # the pool's own fields win
        assert event["key"] == "a"
    assert found(logs, "pool.acquire.hit", key="a")[1]["request_id"] == "req-2"
    assert found(logs, "pool.acquire.timeout", key="b")[0]["request_id"] == "req-2"
    assert found(logs, "pool.factory.failed", key="bad")[0]["request_id"] == "req-3"
    for name in ("pool.started", "pool.release", "pool.resource.closed", "pool.closed"):
        assert found(logs, name), name
        assert all("request_id" not in e for e in found(logs, name)), name


def test_context_of_a_queued_caller_travels_to_its_creation(
    logs: Log, plan: Plan
) -> None:
    with Pool(plan, name="p", max_open_resources=1, health_check_interval=None) as pool:
        pool.acquire("a")

        def queued_request() -> Any:
            bind_contextvars(request_id="req-q")
            return pool.acquire("b")

        t, _ = in_thread(queued_request)
        wait_event(logs, "pool.acquire.queued", key="b")
        pool.release("a")
        t.join(10)
        granted = wait_event(logs, "pool.acquire.granted", key="b")
        created = wait_event(logs, "pool.acquire.created", key="b")
    assert granted["request_id"] == created["request_id"] == "req-q"
    assert found(logs, "pool.acquire.queued", key="b")[0]["request_id"] == "req-q"


# --- levels, configuration and the user's logger --------------------------------


def test_late_configuration_and_capture_apply_to_a_running_pool(plan: Plan) -> None:
    with Pool(plan, name="late", health_check_interval=None) as pool:
        pool.acquire("a")  # structlog unconfigured: the hit below is not emitted
        pool.acquire("a")
        with capture_logs() as logs:
            pool.acquire("a")
            wait_event(logs, "pool.acquire.hit", key="a")
        structlog.configure(
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO)
        )
        with capture_logs() as logs:
            pool.acquire("a")
            pool.release("a")
            wait_event(logs, "pool.release", key="a")
            assert found(logs, "pool.acquire.hit") == []  # filtered at info
        structlog.configure(
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG)
        )
        with capture_logs() as logs:
            pool.acquire("b")
            pool.acquire("b")
            wait_event(logs, "pool.acquire.hit", key="b")


def test_events_follow_every_reconfiguration_of_structlog() -> None:
    # The emitter binds structlog's logger once per configuration: replacing
    # the logger factory, the processors, the wrapper class or the context
    # class, or changing the processors in place, takes effect at once.
    events = Events("p")
    first, second = CapturingLogger(), CapturingLogger()

    def seen(sink: CapturingLogger) -> list[str]:
        return [c.args[0] if c.args else c.kwargs["event"] for c in sink.calls]

    structlog.configure(processors=[], logger_factory=lambda *_: first)
    events.info("pool.one")
    structlog.configure(logger_factory=lambda *_: second)
    events.info("pool.two")
    assert (seen(first), seen(second)) == (["pool.one"], ["pool.two"])
    tagged: list[Any] = []

    def tag(_logger: Any, _name: str, event: Any) -> Any:
        tagged.append(event["event"])
        return event

    structlog.configure(processors=[tag])
    events.info("pool.three")
    with capture_logs() as logs:  # the processors list changed in place
        events.info("pool.four")
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING)
    )
    events.info("pool.five")  # filtered out now
    events.warning("pool.six")

    made: list[int] = []

    class Context(dict[str, Any]):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append(1)
            super().__init__(*args, **kwargs)

    structlog.configure(context_class=Context)
    events.warning("pool.seven")
    assert made  # the logger was bound again, with the new context class
    assert tagged == ["pool.three", "pool.six", "pool.seven"]
    assert [e["event"] for e in logs] == ["pool.four"]
    assert seen(second)[-2:] == ["pool.six", "pool.seven"]
    assert "pool.five" not in seen(second)


def test_events_follow_a_stdlib_logging_setup(
    plan: Plan, caplog: pytest.LogCaptureFixture
) -> None:
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.render_to_log_kwargs,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    with Pool(plan, name="std", health_check_interval=None) as pool:
        with caplog.at_level(logging.INFO):
            pool.acquire("a")
            pool.acquire("a")
            wait_for(lambda: "pool.acquire.created" in caplog.messages)
            assert "pool.acquire.hit" not in caplog.messages
        with caplog.at_level(logging.DEBUG):
            pool.acquire("a")
            wait_for(lambda: "pool.acquire.hit" in caplog.messages)


def test_a_user_bound_logger_receives_the_events(plan: Plan) -> None:
    sink = CapturingLogger()
    logger = structlog.wrap_logger(
        sink,
        processors=[],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    ).bind(component="db")
    with (
        capture_logs() as global_logs,
        Pool(plan, name="mine", health_check_interval=None, logger=logger) as pool,
    ):
        pool.acquire("a")
        pool.acquire("a")

        def events() -> list[tuple[str, dict[str, Any]]]:
            return [(c.method_name, c.kwargs) for c in list(sink.calls)]

        wait_for(lambda: any(kw["event"] == "pool.acquire.hit" for _, kw in events()))
        assert global_logs == []  # nothing went to structlog's global logger
    hit = next((m, kw) for m, kw in events() if kw["event"] == "pool.acquire.hit")
    assert hit == (
        "debug",
        {"event": "pool.acquire.hit", "component": "db", "pool": "mine", "key": "a"},
    )


def test_a_user_logger_filtering_debug_gets_no_hit(plan: Plan) -> None:
    sink = CapturingLogger()
    logger = structlog.wrap_logger(
        sink,
        processors=[],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    ).bind()
    with Pool(plan, name="mine", health_check_interval=None, logger=logger) as pool:
        pool.acquire("a")
        pool.acquire("a")
        pool.release("a")
        wait_for(lambda: any(c.kwargs["event"] == "pool.release" for c in sink.calls))
    names = [c.kwargs["event"] for c in sink.calls]
    assert "pool.acquire.created" in names
    assert "pool.acquire.hit" not in names
    assert "pool.resource.creating" not in names


def test_a_user_lazy_logger_follows_the_global_configuration(plan: Plan) -> None:
    logger = structlog.get_logger(component="lazy")
    with Pool(plan, name="lazy", health_check_interval=None, logger=logger) as pool:
        pool.acquire("a")
        with capture_logs() as logs:
            pool.acquire("a")
            hit = wait_event(logs, "pool.acquire.hit", key="a")
    assert hit["component"] == "lazy"


def test_debug_enabled_follows_configuration() -> None:
    events = Events("p")
    # Unconfigured: the stdlib logger decides, and it is at WARNING by default.
    assert not events.debug_enabled()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO)
    )
    assert not events.debug_enabled()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG)
    )
    assert events.debug_enabled()
    with capture_logs() as logs:
        events.debug("pool.test", "k", {"request_id": "r"}, extra=1)
    assert logs == [
        {
            "event": "pool.test",
            "log_level": "debug",
            "request_id": "r",
            "extra": 1,
            "pool": "p",
            "key": "k",
        }
    ]


# --- the snippets of docs/observability.md run ----------------------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "observability.md"


def _doc_snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def _run(source: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "snippet.py"
    script.write_text(source)
    done = run_python(str(script))
    assert done.returncode == 0, done.stderr
    return done


def test_doc_json_logs_snippet(tmp_path: Path) -> None:
    (snippet,) = [s for s in _doc_snippets() if "JSONRenderer" in s]
    lines = [json.loads(line) for line in _run(snippet, tmp_path).stderr.splitlines()]
    events = [line["event"] for line in lines]
    assert events == ["pool.started", "pool.acquire.created", "pool.closed"]
    created = lines[1]
    assert (created["request_id"], created["key"], created["level"]) == (
        "req-1",
        "acme",
        "info",
    )


def test_doc_prometheus_snippets(tmp_path: Path) -> None:
    serve, scrape = [s for s in _doc_snippets() if "prometheus_client" in s]
    source = serve.replace("start_http_server(9100)", "start_http_server(0)")
    out = _run(source + "\n" + scrape + "\npool.close()\n", tmp_path).stdout
    assert "# TYPE pooler_actors_acquires_total counter" in out
    assert 'pooler_actors_open_resources{pool="tenants"} 0.0' in out
