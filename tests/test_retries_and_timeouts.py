"""The `acquire_timeout` option (the timeout of a call that passes none) and
factory retries (`create_retries`, `create_backoff`) (SPEC 10).

Where a test is about *when* something happens, the supervisor's clock is the
test's (`pooler_actors.supervisor.monotonic`) or the jitter is fixed
(`random.uniform`): no test depends on the machine's speed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Hashable, Iterator
from typing import Any

import pytest
from conftest import wait_for
from resources import Res
from structlog.testing import capture_logs

import pooler_actors.supervisor as sup
from pooler_actors import (
    Acquire,
    AcquireTimeout,
    AsyncPool,
    FactoryError,
    Pool,
    PoolOptions,
)


class Flaky:
    """A factory that fails its first `failures` calls per key, then succeeds."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[Hashable] = []

    def __call__(self, key: Hashable) -> Res:
        self.calls.append(key)
        if self.calls.count(key) <= self.failures:
            raise ConnectionRefusedError(f"refused #{self.calls.count(key)}")
        return Res(key)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The supervisor's clock, moved by the test (`clock[0] += s`)."""
    now = [1000.0]
    monkeypatch.setattr(sup, "monotonic", lambda: now[0])
    yield now


def jitter(monkeypatch: pytest.MonkeyPatch, draw: float) -> None:
    """Fix the backoff jitter: a delay is scaled by `0.5 + draw`."""
    monkeypatch.setattr(sup.random, "uniform", lambda a, b: a + (b - a) * draw)


def retry_events(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "pool.factory.retry"]


# --- acquire_timeout ----------------------------------------------------------


def test_acquire_timeout_is_the_timeout_of_a_call_that_passes_none(
    clock: list[float],
) -> None:
    with Pool(
        Res, max_open_resources=1, acquire_timeout=5.0, health_check_interval=None
    ) as pool:
        pool.acquire("held")  # the only slot; a plain acquire is never reclaimed
        outcome: list[AcquireTimeout] = []

        def waiter(call: Any) -> None:
            try:
                call()
            except AcquireTimeout as error:
                outcome.append(error)

        threads = [
            # No timeout given: the pool's acquire_timeout, for the facade
            # and for the message alike.
            threading.Thread(target=waiter, args=(lambda: pool.acquire("b"),)),
            threading.Thread(
                target=waiter, args=(lambda: pool.actor_ref.ask(Acquire("c")),)
            ),
        ]
        for thread in threads:
            thread.start()
        wait_for(lambda: pool.stats().wait_count == 2)
        clock[0] += 4.9
        assert pool.stats().wait_count == 2  # not yet
        clock[0] += 0.2
        pool.stats()  # any message wakes the supervisor, which sees the deadline
        for thread in threads:
            thread.join(30)
        assert sorted((e.key, e.timeout) for e in outcome) == [("b", 5.0), ("c", 5.0)]
        assert pool.stats().timeouts == 2


def test_an_explicit_timeout_wins_over_acquire_timeout(clock: list[float]) -> None:
    with Pool(
        Res, max_open_resources=1, acquire_timeout=1.0, health_check_interval=None
    ) as pool:
        held = pool.acquire("held")
        got: list[Any] = []
        patient = threading.Thread(target=lambda: got.append(pool.acquire("b", 60)))
        patient.start()
        wait_for(lambda: pool.stats().wait_count == 1)
        clock[0] += 30  # far past acquire_timeout, within the call's own 60 s
        assert pool.stats().wait_count == 1
        assert pool.release("held")
        patient.join(30)
        assert len(got) == 1 and got[0].key == "b" and held.closes == 1
        assert pool.stats().timeouts == 0


def test_acquire_timeout_applies_to_leases(clock: list[float]) -> None:
    options = PoolOptions(
        max_open_resources=1,
        max_holders=1,
        acquire_timeout=2.0,
        health_check_interval=None,
    )
    with Pool(Res, options=options) as pool:
        lease = pool.checkout("a")
        failures: list[float | None] = []

        def lease_b() -> None:
            try:
                with pool.lease("b"):
                    pass
            except AcquireTimeout as error:
                failures.append(error.timeout)

        thread = threading.Thread(target=lease_b)
        thread.start()
        wait_for(lambda: pool.stats().wait_count == 1)
        clock[0] += 2.5
        pool.stats()
        thread.join(30)
        assert failures == [2.0]
        assert pool.checkin(lease)


def test_async_pool_uses_acquire_timeout(clock: list[float]) -> None:
    async def main() -> None:
        async with AsyncPool(
            Res, max_open_resources=1, acquire_timeout=3.0, health_check_interval=None
        ) as pool:
            await pool.acquire("held")
            waiter = asyncio.create_task(pool.acquire("b"))
            while (await pool.stats()).wait_count != 1:
                await asyncio.sleep(0.002)
            clock[0] += 3.5
            await pool.stats()
            with pytest.raises(AcquireTimeout) as info:
                await asyncio.wait_for(waiter, 30)
            assert info.value.timeout == 3.0

    asyncio.run(main())


# --- create_retries / create_backoff ------------------------------------------------


def test_a_factory_failing_twice_then_succeeding_is_retried() -> None:
    factory = Flaky(failures=2)
    with (
        Pool(
            factory,
            create_retries=2,
            create_backoff=0.01,
            health_check_interval=None,
        ) as pool,
        capture_logs() as logs,
    ):
        res = pool.acquire("a", timeout=30)
        stats = pool.stats()
    assert res.key == "a"
    assert factory.calls == ["a", "a", "a"]
    assert stats.create_retries == 2
    assert stats.created == 1
    assert stats.factory_errors == 0
    retries = retry_events(logs)
    assert [e["attempt"] for e in retries] == [1, 2]
    assert all(e["key"] == "a" for e in retries)
    assert all("ConnectionRefusedError" in e["error"] for e in retries)


def test_retries_run_out_then_the_caller_gets_the_factorys_error() -> None:
    factory = Flaky(failures=10)
    with Pool(
        factory, create_retries=2, create_backoff=0.01, health_check_interval=None
    ) as pool:
        with pytest.raises(FactoryError) as info:
            pool.acquire("a", timeout=30)
        assert isinstance(info.value.__cause__, ConnectionRefusedError)
        assert str(info.value.__cause__) == "refused #3"
        assert factory.calls == ["a", "a", "a"]
        stats = pool.stats()
        assert stats.create_retries == 2 and stats.factory_errors == 1


def test_transient_failures_are_retried_by_default() -> None:
    """SPEC 12: a few retries with backoff unless told otherwise."""
    factory = Flaky(failures=2)
    with Pool(factory, health_check_interval=None) as pool:
        assert pool.acquire("a", timeout=30).key == "a"
        assert factory.calls == ["a", "a", "a"]
        assert pool.stats().create_retries == 2
        assert pool.stats().factory_errors == 0


def test_no_retries_with_create_retries_0() -> None:
    factory = Flaky(failures=1)
    with Pool(factory, health_check_interval=None, create_retries=0) as pool:
        with pytest.raises(FactoryError):
            pool.acquire("a", timeout=30)
        assert factory.calls == ["a"]
        assert pool.stats().create_retries == 0
        assert pool.acquire("a", timeout=30).key == "a"  # a new creation


def backoff_delays(failures: int, create_backoff: float) -> list[float]:
    """The `delay_s` of each retry of a factory that fails `failures` times."""
    with (
        Pool(
            Flaky(failures),
            create_retries=failures,
            create_backoff=create_backoff,
            health_check_interval=None,
        ) as pool,
        capture_logs() as logs,
    ):
        pool.acquire("a", timeout=30)
    return [e["delay_s"] for e in retry_events(logs)]


def test_backoff_doubles_per_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    jitter(monkeypatch, 0.5)  # no jitter: the delays are exactly 10, 20, 40 ms
    assert backoff_delays(3, 0.01) == [0.01, 0.02, 0.04]


def test_backoff_is_jittered_within_half_to_one_and_a_half() -> None:
    delays = backoff_delays(4, 0.005)
    assert len(delays) == 4
    for n, delay in enumerate(delays):
        base = 0.005 * 2**n
        assert 0.5 * base <= delay <= 1.5 * base, (n, delays)


def test_retries_never_go_past_the_callers_deadline(
    clock: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Jitter at its most (x1.5) and backoff 0.1 s: tries at 0, 0.15 and
    # 0.45 s; the next would come at 1.05 s, after the caller's 0.7 s. The
    # pool stops there and the caller gets the factory's error, not a timeout.
    jitter(monkeypatch, 1.0)
    factory = Flaky(failures=100)
    outcome: list[BaseException] = []

    def caller() -> None:
        try:
            pool.acquire("a", timeout=0.7)
        except (FactoryError, AcquireTimeout) as error:
            outcome.append(error)

    with (
        Pool(
            factory, create_retries=10, create_backoff=0.1, health_check_interval=None
        ) as pool,
        capture_logs() as logs,
    ):
        thread = threading.Thread(target=caller)
        thread.start()
        wait_for(lambda: pool.stats().create_retries == 1)  # the 1st try failed
        clock[0] += 0.15  # the 1st retry is due
        wait_for(lambda: pool.stats().create_retries == 2)
        clock[0] += 0.3  # the 2nd retry is due; it fails too
        pool.stats()
        thread.join(30)
        stats = pool.stats()
    assert len(outcome) == 1
    assert isinstance(outcome[0], FactoryError)
    assert isinstance(outcome[0].__cause__, ConnectionRefusedError)
    assert factory.calls == ["a", "a", "a"]
    assert stats.create_retries == 2
    assert stats.timeouts == 0
    assert [e["delay_s"] for e in retry_events(logs)] == [0.15, 0.3]


def test_a_caller_that_comes_during_the_retries_joins_the_same_creation() -> None:
    gate = threading.Event()
    calls: list[int] = []

    def factory(key: str) -> Res:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionRefusedError("first try")
        assert gate.wait(30)
        return Res(key)

    with Pool(
        factory, create_retries=1, create_backoff=0.01, health_check_interval=None
    ) as pool:
        got: list[Res] = []
        first = threading.Thread(target=lambda: got.append(pool.acquire("a", 30)))
        first.start()
        wait_for(lambda: len(calls) == 2)  # the retry is running
        second = threading.Thread(target=lambda: got.append(pool.acquire("a", 30)))
        second.start()
        wait_for(lambda: pool.stats().joins == 1)
        gate.set()
        first.join(30)
        second.join(30)
        assert len(got) == 2 and got[0] is got[1]
        assert len(calls) == 2
