"""CapacityDriver against an in-memory engine: callbacks, races, failure, close.

The engine here is a plain fair semaphore with the GlobalCapacity shape and
hooks to block or fail a call; the Redis engine is tested against a real
server in test_redis_capacity.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import pytest
from conftest import pool_threads, wait_for

from pooler_actors import CapacityUnavailable, GlobalCapacity
from pooler_actors._capacity import CapacityDriver, OnUnavailable


class MemoryCapacity:
    """A fair semaphore in memory, one "fleet" per object."""

    def __init__(
        self,
        limit: int,
        lease_ttl: float = 3.0,
        on_unavailable: OnUnavailable = "closed",
    ) -> None:
        self.name = "memory"
        self.limit = limit
        self.lease_ttl = lease_ttl
        self.on_unavailable: OnUnavailable = on_unavailable
        self.holders: list[str] = []
        self.queue: list[str] = []
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.closed = 0
        self.down = False  # every call raises CapacityUnavailable
        self.refuse: Exception | None = None  # every call raises this
        self.gate: threading.Event | None = None  # try_acquire blocks on it
        self.in_try = threading.Event()
        self.lose: set[str] = set()  # renew reports these as lost
        self._cond = threading.Condition()
        self._version = 0

    def _enter(self, what: str, tokens: Sequence[str]) -> None:
        self.calls.append((what, tuple(tokens)))
        if self.refuse is not None:
            raise self.refuse
        if self.down:
            raise CapacityUnavailable(self.name, f"{what}: down")

    def _grant(self) -> None:
        while self.queue and len(self.holders) < self.limit:
            self.holders.append(self.queue.pop(0))
            self._version += 1
            self._cond.notify_all()

    def try_acquire(self, waiting: Sequence[str]) -> list[str]:
        self._enter("try_acquire", waiting)
        self.in_try.set()
        if self.gate is not None:
            self.gate.wait()
        with self._cond:
            for token in waiting:
                if token not in self.holders and token not in self.queue:
                    self.queue.append(token)
            self._grant()
            return [t for t in waiting if t in self.holders]

    def _drop(self, tokens: Sequence[str]) -> None:
        with self._cond:
            for token in tokens:
                if token in self.holders:
                    self.holders.remove(token)
                if token in self.queue:
                    self.queue.remove(token)
            self._grant()

    def cancel(self, tokens: Sequence[str]) -> None:
        self._enter("cancel", tokens)
        self._drop(tokens)

    def release(self, tokens: Sequence[str]) -> None:
        self._enter("release", tokens)
        self._drop(tokens)

    def renew(self, held: Sequence[str], waiting: Sequence[str]) -> list[str]:
        self._enter("renew", [*held, *waiting])
        with self._cond:
            lost = [t for t in held if t in self.lose]
            for token in lost:
                if token in self.holders:
                    self.holders.remove(token)
            self._grant()
            return lost

    def wait_for_change(self, timeout: float) -> bool:
        with self._cond:
            seen = self._version
            return self._cond.wait_for(lambda: self._version != seen, timeout)

    def close(self) -> None:
        self.closed += 1


class Recorder:
    """The three callbacks, recorded in order (from the driver's thread)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, object]] = []
        self.threads: set[str] = set()

    def granted(self, rid: int, held: bool) -> None:
        self.threads.add(threading.current_thread().name)
        self.events.append(("granted", rid, held))

    def unavailable(self, rid: int, exc: BaseException) -> None:
        self.events.append(("unavailable", rid, exc))

    def lost(self, rid: int) -> None:
        self.events.append(("lost", rid, None))

    def of(self, kind: str) -> list[int]:
        return [rid for k, rid, _ in self.events if k == kind]

    def driver(self, cap: GlobalCapacity, pool: str = "p") -> CapacityDriver:
        return CapacityDriver(
            cap,
            pool_name=pool,
            on_granted=self.granted,
            on_unavailable=self.unavailable,
            on_lost=self.lost,
        )


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def drivers() -> Iterator[list[CapacityDriver]]:
    made: list[CapacityDriver] = []
    yield made
    for driver in made:
        driver.close(timeout=5)


def test_the_memory_engine_has_the_protocol_shape() -> None:
    assert isinstance(MemoryCapacity(1), GlobalCapacity)


def test_grants_in_reserve_order_up_to_the_limit(
    rec: Recorder, drivers: list[CapacityDriver]
) -> None:
    cap = MemoryCapacity(limit=2)
    driver = rec.driver(cap)
    drivers.append(driver)
    for rid in (5, 3, 9, 1):
        driver.reserve(rid)
    wait_for(lambda: rec.of("granted") == [5, 3])
    assert (driver.held, driver.waiting) == (2, 2)
    driver.release(3)
    wait_for(lambda: rec.of("granted") == [5, 3, 9])
    driver.release(5)
    wait_for(lambda: rec.of("granted") == [5, 3, 9, 1])
    assert all(held for _, _, held in rec.events)
    assert rec.threads == {"pooler_actors:p:capacity"}
    assert (driver.held, driver.waiting) == (2, 0)


def test_tokens_name_the_driver_and_the_rid(
    rec: Recorder, drivers: list[CapacityDriver]
) -> None:
    cap_a, cap_b = MemoryCapacity(limit=1), MemoryCapacity(limit=1)
    a, b = rec.driver(cap_a, "a"), rec.driver(cap_b, "b")
    drivers += [a, b]
    a.reserve(7)
    b.reserve(7)
    wait_for(lambda: len(cap_a.holders) == 1 and len(cap_b.holders) == 1)
    token_a, token_b = cap_a.holders[0], cap_b.holders[0]
    assert token_a.endswith(":7")
    assert token_b.endswith(":7")
    assert token_a != token_b


def test_cancel_withdraws_a_waiting_reservation(
    rec: Recorder, drivers: list[CapacityDriver]
) -> None:
    cap = MemoryCapacity(limit=1)
    driver = rec.driver(cap)
    drivers.append(driver)
    driver.reserve(1)
    driver.reserve(2)
    wait_for(lambda: rec.of("granted") == [1] and len(cap.queue) == 1)
    driver.cancel(2)
    driver.cancel(2)  # idempotent
    wait_for(lambda: cap.queue == [])
    driver.release(1)
    wait_for(lambda: cap.holders == [])
    assert rec.of("granted") == [1]
    assert rec.of("unavailable") == []
    assert (driver.held, driver.waiting) == (0, 0)
    driver.release(42)  # unknown: harmless


def in_engine_call(rec: Recorder) -> tuple[MemoryCapacity, CapacityDriver]:
    """A driver whose engine call for rid 1 is under way (until `cap.gate` is set)."""
    cap = MemoryCapacity(limit=1)
    cap.gate = threading.Event()
    driver = rec.driver(cap)
    driver.reserve(1)
    assert cap.in_try.wait(5)
    return cap, driver


def test_a_grant_that_races_a_cancel_is_given_back(
    rec: Recorder, drivers: list[CapacityDriver]
) -> None:
    cap, driver = in_engine_call(rec)
    drivers.append(driver)
    driver.cancel(1)  # while the engine grants it
    assert cap.gate is not None
    cap.gate.set()
    wait_for(lambda: any(what == "cancel" for what, _ in cap.calls))
    wait_for(lambda: cap.holders == [] and cap.queue == [])
    assert rec.events == []
    assert (driver.held, driver.waiting) == (0, 0)


def test_a_cancel_before_the_engine_saw_the_rid_costs_no_call(
    rec: Recorder, drivers: list[CapacityDriver]
) -> None:
    cap, driver = in_engine_call(rec)
    drivers.append(driver)
    driver.reserve(2)  # queued locally while the engine call for 1 runs
    driver.cancel(2)
    assert cap.gate is not None
    cap.gate.set()
    wait_for(lambda: rec.of("granted") == [1])
    assert all(not any(t.endswith(":2") for t in tokens) for _, tokens in cap.calls)


def test_a_lost_lease_is_reported_and_forgotten(
    rec: Recorder, drivers: list[CapacityDriver]
) -> None:
    cap = MemoryCapacity(limit=2, lease_ttl=0.15)
    driver = rec.driver(cap)
    drivers.append(driver)
    driver.reserve(1)
    driver.reserve(2)
    wait_for(lambda: rec.of("granted") == [1, 2])
    cap.lose = {cap.holders[0]}
    wait_for(lambda: rec.of("lost") == [1])
    assert driver.held == 1
    renewals = [tokens for what, tokens in cap.calls if what == "renew"]
    assert renewals
    assert len(renewals[0]) == 2  # one batch for every lease


def test_unreachable_engine_fails_closed_then_recovers(
    rec: Recorder, drivers: list[CapacityDriver]
) -> None:
    cap = MemoryCapacity(limit=1, lease_ttl=0.3)
    driver = rec.driver(cap)
    drivers.append(driver)
    cap.down = True
    driver.reserve(1)
    driver.reserve(2)
    wait_for(lambda: sorted(rec.of("unavailable")) == [1, 2])
    errors = [exc for _, _, exc in rec.events if isinstance(exc, CapacityUnavailable)]
    assert len(errors) == 2
    assert errors[0] is not errors[1]  # never a shared traceback
    assert isinstance(errors[0].__cause__, CapacityUnavailable)
    assert (driver.held, driver.waiting) == (0, 0)
    cap.down = False
    rid = 3
    while True:  # the first reservations after the outage may fail fast
        driver.reserve(rid)
        wait_for(lambda rid=rid: rid in rec.of("granted") + rec.of("unavailable"))
        if rid in rec.of("granted"):
            break
        rid += 1
        assert rid < 50
    # The failed reservations' tokens were withdrawn once the engine answered.
    wait_for(lambda: cap.queue == [])
    assert len(cap.holders) == 1


def test_unreachable_engine_fails_open_when_asked(
    rec: Recorder, drivers: list[CapacityDriver]
) -> None:
    cap = MemoryCapacity(limit=1, on_unavailable="open")
    cap.down = True
    driver = rec.driver(cap)
    drivers.append(driver)
    driver.reserve(1)
    wait_for(lambda: rec.events == [("granted", 1, False)])
    assert driver.held == 0
    driver.release(1)  # harmless


def test_a_refusal_fails_closed_even_when_open(
    rec: Recorder, drivers: list[CapacityDriver]
) -> None:
    cap = MemoryCapacity(limit=1, on_unavailable="open")
    cap.refuse = ValueError("limit mismatch")
    driver = rec.driver(cap)
    drivers.append(driver)
    driver.reserve(1)
    wait_for(lambda: rec.of("unavailable") == [1])
    exc = rec.events[0][2]
    assert isinstance(exc, CapacityUnavailable)
    assert isinstance(exc.__cause__, ValueError)
    assert "limit mismatch" in str(exc)


def test_close_gives_everything_back(rec: Recorder) -> None:
    cap = MemoryCapacity(limit=1)
    driver = rec.driver(cap)
    driver.reserve(1)
    driver.reserve(2)
    wait_for(lambda: rec.of("granted") == [1] and len(cap.queue) == 1)
    driver.close(timeout=5)
    assert cap.holders == []
    assert cap.queue == []
    assert cap.closed == 1
    assert pool_threads() == []
    with pytest.raises(RuntimeError, match="closed"):
        driver.reserve(3)


def test_close_returns_within_its_timeout_while_the_engine_hangs(
    rec: Recorder,
) -> None:
    cap, driver = in_engine_call(rec)
    driver.close(timeout=0.05)  # returns although the engine call hangs
    assert [t.name for t in pool_threads()] == ["pooler_actors:p:capacity"]
    assert cap.gate is not None
    cap.gate.set()  # the engine answers: the thread gives back and ends
    wait_for(lambda: pool_threads() == [])
    assert cap.holders == []
    assert rec.events == []  # no callback after close


def test_one_capacity_serves_one_driver_at_a_time(rec: Recorder) -> None:
    cap = MemoryCapacity(limit=1)
    first = rec.driver(cap, "first")
    with pytest.raises(ValueError, match="already serves pool 'first'"):
        rec.driver(cap, "second")
    first.close(timeout=5)
    rec.driver(cap, "second").close(timeout=5)


def test_a_rid_cannot_be_reserved_twice(
    rec: Recorder, drivers: list[CapacityDriver]
) -> None:
    driver = rec.driver(MemoryCapacity(limit=1))
    drivers.append(driver)
    driver.reserve(1)
    with pytest.raises(ValueError, match="rid 1"):
        driver.reserve(1)


def test_a_failing_callback_does_not_stop_the_driver(
    drivers: list[CapacityDriver],
) -> None:
    granted: list[int] = []

    def on_granted(rid: int, held: bool) -> None:
        granted.append(rid)
        if rid == 1:
            raise RuntimeError("pool bug")

    cap = MemoryCapacity(limit=2)
    driver = CapacityDriver(
        cap,
        pool_name="p",
        on_granted=on_granted,
        on_unavailable=lambda rid, exc: None,
        on_lost=lambda rid: None,
    )
    drivers.append(driver)
    driver.reserve(1)
    wait_for(lambda: granted == [1])
    driver.reserve(2)
    wait_for(lambda: granted == [1, 2])


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("lease_ttl", 0, "lease_ttl"),
        ("lease_ttl", float("inf"), "lease_ttl"),
        ("on_unavailable", "maybe", "on_unavailable"),
    ],
)
def test_the_driver_checks_the_capacity(field: str, value: object, match: str) -> None:
    cap = MemoryCapacity(limit=1)
    setattr(cap, field, value)
    with pytest.raises(ValueError, match=match):
        Recorder().driver(cap)
