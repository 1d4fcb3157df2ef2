"""Leases (SPEC section 8), one test or a few per rule, through the public API.

Threads drive `Pool`; a few tests drive `AsyncPool`. Tests wait on
conditions (`wait_for`), never on sleeps. Where a rule is about time (idle
since the last checkin, drain timeouts), the supervisor's clock is the test's
(`clock` fixture) so nothing depends on thread scheduling.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Hashable, MutableMapping
from typing import Any, TypeVar

import pykka
import pytest
from conftest import wait_for
from structlog.testing import capture_logs

import pooler_actors.supervisor as sup
from pooler_actors import (
    AcquireTimeout,
    AsyncPool,
    Checkin,
    Checkout,
    Lease,
    Pool,
    PoolClosedError,
)
from pooler_actors._counter_state import ASK

T = TypeVar("T")


class Res:
    """A resource that records its life: pings, closes, and who holds it.

    The test marks the holder (`take`/`drop`) right after a checkout and
    right before its checkin, so a close or an exclusive ping in between is
    a close or a ping under a holder.
    """

    def __init__(self, key: Hashable, factory: Rec) -> None:
        self.key = key
        self.factory = factory
        self.closed = 0
        self.pings = 0
        self.healthy = True
        self.holder: object = None
        self.under_holder: list[str] = []  # what happened while held

    def __repr__(self) -> str:
        return f"Res({self.key!r})"

    def take(self, holder: object = True) -> None:
        self.holder = holder

    def drop(self) -> None:
        self.holder = None

    def ping(self) -> None:
        self.pings += 1
        if self.holder is not None:
            self.under_holder.append("ping")
        if not self.healthy:
            raise ConnectionError(f"{self.key} is down")

    def close(self) -> None:
        if self.holder is not None:
            self.under_holder.append("close")
        gate = self.factory.close_gates.get(self.key)
        if gate is not None:
            assert gate.wait(30), "test close gate never opened"
        self.closed += 1


class Rec:
    """A factory that records its calls; `gates[key]` holds a creation back."""

    def __init__(self) -> None:
        self.calls: list[Hashable] = []
        self.made: list[Res] = []
        self.gates: dict[Hashable, threading.Event] = {}
        self.close_gates: dict[Hashable, threading.Event] = {}

    def __call__(self, key: Hashable) -> Res:
        self.calls.append(key)
        gate = self.gates.get(key)
        if gate is not None:
            assert gate.wait(30), "test gate never opened"
        res = Res(key, self)
        self.made.append(res)
        return res

    def of(self, key: Hashable) -> list[Res]:
        return [r for r in self.made if r.key == key]


@pytest.fixture
def rec() -> Rec:
    return Rec()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The supervisor's clock, moved by the test (`clock[0] += s`).

    The supervisor fires due timers before it reads its next message, so
    after `settle(pool)` every timer due at `clock[0]` has fired.
    """
    now = [1000.0]
    monkeypatch.setattr(sup, "monotonic", lambda: now[0])
    return now


def settle(pool: Pool[Any, Any]) -> None:
    """Return once the supervisor fired every timer due now (see `clock`)."""
    pool.stats()  # wakes the loop from its wait ...
    pool.stats()  # ... and is read only after the due timers fired


def new_pool(factory: Rec, **options: Any) -> Pool[Hashable, Res]:
    options.setdefault("health_check_interval", None)
    return Pool(factory, **options)


class Call:
    """A checkout in a thread of its own: `.lease` or `.error` once `.done`."""

    def __init__(
        self,
        pool: Pool[Hashable, Res],
        key: Hashable,
        *,
        then: Callable[[Lease[Hashable, Res]], None] | None = None,
        **kw: Any,
    ) -> None:
        self.lease: Lease[Hashable, Res] | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.ident = 0

        def run() -> None:
            try:
                self.lease = pool.checkout(key, **kw)
                if then is not None:
                    then(self.lease)
            except BaseException as error:
                self.error = error
            finally:
                self.done.set()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        assert thread.ident is not None
        self.ident = thread.ident

    def result(self) -> Lease[Hashable, Res]:
        assert self.done.wait(10), "checkout never answered"
        assert self.error is None, self.error
        assert self.lease is not None
        return self.lease


def waiting(pool: Pool[Any, Any], n: int) -> None:
    wait_for(lambda: pool.stats().wait_count == n)


def events(
    logs: list[MutableMapping[str, Any]], name: str
) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


# --- the three modes ----------------------------------------------------------


def test_shared_mode_hands_one_resource_to_every_holder(rec: Rec) -> None:
    with new_pool(rec) as pool:  # max_holders=None: the default
        leases = [pool.checkout("a") for _ in range(5)]
        assert len({id(lease.resource) for lease in leases}) == 1
        assert all(lease.key == "a" for lease in leases)
        assert rec.calls == ["a"]
        stats = pool.stats()
        assert (stats.holders, stats.checkouts, stats.wait_count) == (5, 5, 0)
        assert all(pool.checkin(lease) for lease in leases)
        assert pool.stats().holders == 0


def test_exclusive_mode_one_holder_at_a_time(rec: Rec) -> None:
    with new_pool(rec, max_holders=1) as pool:
        first = pool.checkout("a")
        second = Call(pool, "a")
        waiting(pool, 1)
        assert not second.done.is_set()
        assert pool.stats().holders == 1
        pool.checkin(first)
        assert second.result().resource is first.resource  # the same connection
        assert rec.calls == ["a"]
        pool.checkin(second.result())


def test_multiplexed_mode_k_holders_per_resource(rec: Rec) -> None:
    with new_pool(rec, max_holders=2) as pool:
        one, two = pool.checkout("a"), pool.checkout("a")
        assert one.resource is two.resource
        third = Call(pool, "a")
        waiting(pool, 1)
        assert pool.stats().holders == 2
        pool.checkin(one)
        assert third.result().resource is two.resource
        assert pool.stats().holders == 2
        assert rec.calls == ["a"]
        pool.checkin(two)
        pool.checkin(third.result())


# --- placement --------------------------------------------------------------


def test_placement_fewest_holders_first(rec: Rec) -> None:
    with new_pool(rec, max_holders=3, max_per_key=2) as pool:
        on_first = [pool.checkout("a") for _ in range(3)]  # fills the first one
        on_second = [pool.checkout("a") for _ in range(2)]  # needs a second one
        r1, r2 = rec.made
        assert {lease.resource for lease in on_first} == {r1}
        assert {lease.resource for lease in on_second} == {r2}
        for lease in on_second:  # r2: no holder left
            pool.checkin(lease)
        pool.checkin(on_first[0])  # r1: two holders, room for one more
        # Both have room; the one with the fewest holders is taken first,
        # though it is the newer one.
        more = [pool.checkout("a"), pool.checkout("a")]
        assert more[0].resource is r2
        assert more[1].resource is r2  # r2 had 1, r1 had 2
        assert rec.calls == ["a", "a"]
        for lease in on_first[1:] + more:
            pool.checkin(lease)


def test_max_per_key_makes_a_sub_pool_of_exclusive_connections(rec: Rec) -> None:
    with new_pool(rec, max_open_resources=6, max_holders=1, max_per_key=4) as pool:
        leases = [pool.checkout("a") for _ in range(4)]
        assert len({id(lease.resource) for lease in leases}) == 4
        fifth = Call(pool, "a")
        waiting(pool, 1)  # the key is full, though the pool has 2 free slots
        assert pool.stats().open_resources == 4
        other = pool.checkout("b", timeout=0)  # another key still gets one
        assert pool.stats().open_resources == 5
        pool.checkin(leases[2])
        assert fifth.result().resource is leases[2].resource
        assert rec.calls == ["a"] * 4 + ["b"]
        for lease in [*leases[:2], leases[3], fifth.result(), other]:
            pool.checkin(lease)


def test_single_flight_creation_is_shared_by_every_holder(rec: Rec) -> None:
    rec.gates["a"] = threading.Event()
    with new_pool(rec) as pool:
        calls = [Call(pool, "a")]
        wait_for(lambda: rec.calls == ["a"])
        calls += [Call(pool, "a") for _ in range(4)]
        wait_for(lambda: pool.stats().joins == 4)
        rec.gates["a"].set()
        assert len({id(c.result().resource) for c in calls}) == 1
        assert rec.calls == ["a"]
        assert pool.stats().wait_count == 0  # joiners are not queued
        for c in calls:
            pool.checkin(c.result())


def test_single_flight_joined_as_far_as_max_holders_allows(rec: Rec) -> None:
    rec.gates["a"] = threading.Event()
    with new_pool(rec, max_holders=2) as pool:  # max_per_key=1
        first = Call(pool, "a")
        wait_for(lambda: rec.calls == ["a"])
        second = Call(pool, "a")
        wait_for(lambda: pool.stats().joins == 1)
        third = Call(pool, "a")  # no place left in the creation: it queues
        waiting(pool, 1)
        assert pool.stats().joins == 1
        rec.gates["a"].set()
        assert first.result().resource is second.result().resource
        assert not third.done.is_set()
        assert pool.stats().holders == 2
        pool.checkin(first.result())
        assert third.result().resource is first.result().resource
        assert rec.calls == ["a"]
        pool.checkin(second.result())
        pool.checkin(third.result())


def test_single_flight_full_creation_starts_another_below_max_per_key(
    rec: Rec,
) -> None:
    rec.gates["a"] = threading.Event()
    with new_pool(rec, max_holders=2, max_per_key=2) as pool:
        calls = [Call(pool, "a")]
        wait_for(lambda: len(rec.calls) == 1)
        calls.append(Call(pool, "a"))
        wait_for(lambda: pool.stats().joins == 1)
        calls.append(Call(pool, "a"))  # the first creation is full: a second
        wait_for(lambda: len(rec.calls) == 2)
        calls.append(Call(pool, "a"))
        wait_for(lambda: pool.stats().joins == 2)
        rec.gates["a"].set()
        got = [c.result().resource for c in calls]
        assert got[0] is got[1] and got[2] is got[3] and got[0] is not got[2]
        assert rec.calls == ["a", "a"]
        for c in calls:
            pool.checkin(c.result())


# --- fairness -----------------------------------------------------------------


def test_fifo_per_key_for_a_holder_place(rec: Rec) -> None:
    order: list[int] = []

    def use(lease: Lease[Hashable, Res]) -> None:
        order.append(threading.get_ident())
        pool.checkin(lease)

    with new_pool(rec, max_holders=1) as pool:
        held = pool.checkout("a")
        started = []
        for n in range(1, 4):
            started.append(Call(pool, "a", then=use))
            waiting(pool, n)
        pool.checkin(held)
        wait_for(lambda: len(order) == 3)
        assert order == [call.ident for call in started]


def test_fifo_overall_for_a_slot(rec: Rec) -> None:
    order: list[Hashable] = []

    def use_and_release(lease: Lease[Hashable, Res]) -> None:
        order.append(lease.key)
        pool.checkin(lease)
        pool.release(lease.key)

    with new_pool(rec, max_open_resources=2, max_holders=1) as pool:
        a, b = pool.checkout("a"), pool.checkout("b")
        for n, key in enumerate(["c", "d", "e"], start=1):
            Call(pool, key, then=use_and_release)
            waiting(pool, n)
        pool.checkin(a)  # its slot frees (reclaimed): c, then d, then e
        wait_for(lambda: len(order) == 3)
        assert order == ["c", "d", "e"]
        assert rec.calls == ["a", "b", "c", "d", "e"]
        assert pool.checkin(b)


# --- timeouts and giving up -------------------------------------------------


def test_timeout_bounds_the_wait_for_a_holder_place(rec: Rec) -> None:
    with new_pool(rec, max_holders=1) as pool:
        held = pool.checkout("a")
        with pytest.raises(AcquireTimeout):
            pool.checkout("a", timeout=0.05)
        stats = pool.stats()
        assert (stats.wait_count, stats.timeouts, stats.holders) == (0, 1, 1)
        pool.checkin(held)


def test_timeout_bounds_the_creation_and_leaks_no_lease(rec: Rec) -> None:
    rec.gates["slow"] = threading.Event()
    with new_pool(rec, max_holders=1) as pool:
        with pytest.raises(AcquireTimeout):
            pool.checkout("slow", timeout=0.05)
        rec.gates["slow"].set()
        wait_for(lambda: pool.stats().created == 1)
        stats = pool.stats()
        assert (stats.holders, stats.checkouts) == (0, 0)  # nobody holds it
        lease = pool.checkout("slow", timeout=0)  # it stayed: a hit
        assert lease.resource is rec.made[0]
        pool.checkin(lease)


def test_zero_timeout_never_waits(rec: Rec) -> None:
    with new_pool(rec, max_open_resources=1, max_holders=1) as pool:
        held = pool.checkout("a")
        with pytest.raises(AcquireTimeout):
            pool.checkout("a", timeout=0)  # no holder place
        with pytest.raises(AcquireTimeout):
            pool.checkout("b", timeout=0)  # no slot
        stats = pool.stats()
        assert (stats.waits, stats.timeouts, stats.wait_count) == (0, 2, 0)
        pool.checkin(held)


def test_zero_timeout_still_awaits_a_creation_it_joins(rec: Rec) -> None:
    rec.gates["a"] = threading.Event()
    with new_pool(rec) as pool:
        first = Call(pool, "a")
        wait_for(lambda: rec.calls == ["a"])
        second = Call(pool, "a", timeout=0)
        wait_for(lambda: pool.stats().joins == 1)
        rec.gates["a"].set()
        assert first.result().resource is second.result().resource
        pool.checkin(first.result())
        pool.checkin(second.result())


def test_acquire_timeout_option_is_the_default_timeout(rec: Rec) -> None:
    with new_pool(rec, max_holders=1, acquire_timeout=0.05) as pool:
        held = pool.checkout("a")
        with pytest.raises(AcquireTimeout):
            pool.checkout("a")
        pool.checkin(held)


def test_an_ask_that_gave_up_is_never_granted(rec: Rec) -> None:
    with new_pool(rec, max_holders=1) as pool:
        held = pool.checkout("a")
        with pytest.raises(pykka.Timeout):
            pool.actor_ref.ask(Checkout("a"), timeout=0.05)
        waiting(pool, 0)  # withdrawn at once
        follower = Call(pool, "a")
        waiting(pool, 1)
        pool.checkin(held)
        assert follower.result().resource is held.resource
        stats = pool.stats()
        assert (stats.holders, stats.checkouts, stats.timeouts) == (1, 2, 1)
        pool.checkin(follower.result())


def test_a_grant_racing_a_give_up_is_checked_back_in(rec: Rec) -> None:
    """Callers give up while a holder checks in and out: any lease granted to
    a caller that had just given up goes back, so none is lost."""
    with new_pool(rec, max_holders=1) as pool:
        pool.checkin(pool.checkout("a"))
        stop = threading.Event()

        def churn() -> None:
            while not stop.is_set():
                pool.checkin(pool.checkout("a", timeout=10))

        churner = threading.Thread(target=churn, daemon=True)
        churner.start()
        got = gave_up = 0
        for n in range(300):
            try:
                lease = pool.actor_ref.ask(Checkout("a"), timeout=0.0002 * (n % 5))
            except pykka.Timeout:
                gave_up += 1
            else:
                got += 1
                pool.checkin(lease)
        stop.set()
        churner.join(10)
        assert got and gave_up  # both sides of the race happened
        wait_for(lambda: pool.stats().holders == 0)
        assert pool.stats().wait_count == 0
        pool.checkin(pool.checkout("a", timeout=5))  # not stuck behind a ghost
        assert rec.calls == ["a"]


def test_messages_checkout_and_checkin(rec: Rec) -> None:
    with new_pool(rec, max_holders=1) as pool:
        ref = pool.actor_ref
        lease = ref.ask(Checkout("a", timeout=5))
        assert isinstance(lease, Lease)
        assert (lease.key, lease.resource) == ("a", rec.made[0])
        assert ref.ask(Checkin(lease)) is True
        assert ref.ask(Checkin(lease)) is False


# --- never closed under a holder --------------------------------------------


def test_release_retires_a_held_resource_without_waiting(rec: Rec) -> None:
    with (
        new_pool(rec, max_open_resources=2) as pool,
        capture_logs() as logs,
    ):
        lease = pool.checkout("a")
        held: Res = lease.resource
        held.take()
        assert pool.release("a") is True  # the holder itself calls it: no wait
        assert held.closed == 0
        assert not pool.contains("a")  # out of the key map at once
        stats = pool.stats()
        assert (stats.retiring, stats.open_resources, stats.holders) == (1, 1, 1)
        fresh = pool.checkout("a")  # a new checkout gets a new resource
        assert fresh.resource is not held
        held.drop()
        assert pool.checkin(lease) is True
        wait_for(lambda: held.closed == 1)
        assert held.under_holder == []
        assert pool.stats().retiring == 0
        wait_for(lambda: events(logs, "pool.resource.drained"))
        (retired,) = events(logs, "pool.resource.retired")
        assert (retired["key"], retired["reason"], retired["holders"]) == (
            "a",
            "released",
            1,
        )
        assert events(logs, "pool.resource.drained")[0]["key"] == "a"
        pool.checkin(fresh)


def test_a_retiring_resource_still_counts_toward_the_cap(rec: Rec) -> None:
    with new_pool(rec, max_open_resources=1, max_holders=1) as pool:
        lease = pool.checkout("a")
        pool.release("a")
        with pytest.raises(AcquireTimeout):
            pool.checkout("b", timeout=0)  # the retiring one holds the slot
        waiter = Call(pool, "b")
        waiting(pool, 1)
        assert pool.stats().open_resources == 1
        pool.checkin(lease)  # closed now: its slot goes to the waiter
        assert waiter.result().key == "b"
        assert rec.made[0].closed == 1
        pool.checkin(waiter.result())


def test_release_all_retires_held_resources_without_waiting(rec: Rec) -> None:
    with new_pool(rec, max_holders=1) as pool:
        a, b = pool.checkout("a"), pool.checkout("b")
        idle = pool.checkout("c")
        pool.checkin(idle)
        pool.release_all()  # called by the holder of a and b: no wait
        wait_for(lambda: idle.resource.closed == 1)  # unheld: closed at once
        assert a.resource.closed == b.resource.closed == 0
        assert pool.stats().retiring == 2
        assert not pool.contains("a") and not pool.contains("b")
        pool.checkin(a)
        pool.checkin(b)
        wait_for(lambda: a.resource.closed == b.resource.closed == 1)
        assert pool.stats().open_resources == 0


def test_health_eviction_retires_a_held_resource(rec: Rec) -> None:
    with new_pool(rec, health_check_interval=0.02) as pool:  # shared: pinged
        lease = pool.checkout("a")
        res = lease.resource
        res.healthy = False
        wait_for(lambda: pool.stats().health_evictions == 1)
        assert not pool.contains("a")
        assert res.closed == 0
        assert pool.stats().retiring == 1
        pool.checkin(lease)
        wait_for(lambda: res.closed == 1)


def test_max_lifetime_retires_a_held_resource(rec: Rec) -> None:
    with new_pool(rec, max_holders=1, max_lifetime=0.05) as pool:
        lease = pool.checkout("a")
        wait_for(lambda: pool.stats().lifetime_expired == 1)
        assert not pool.contains("a")
        assert lease.resource.closed == 0
        renewed = pool.checkout("a")  # replaced on demand
        assert renewed.resource is not lease.resource
        pool.checkin(lease)
        wait_for(lambda: lease.resource.closed == 1)
        pool.checkin(renewed)


def test_max_idle_time_counts_from_the_last_checkin(
    rec: Rec, clock: list[float]
) -> None:
    with new_pool(rec, max_holders=1, max_idle_time=10) as pool:
        lease = pool.checkout("a")
        res = lease.resource
        clock[0] += 30  # held all along: never idle
        settle(pool)
        assert pool.contains("a") and res.closed == 0
        pool.checkin(lease)  # idle from now
        settle(pool)  # a checkin is a note: let the pool read it at this time
        clock[0] += 9
        settle(pool)
        assert pool.contains("a") and res.closed == 0
        assert pool.stats().idle_expired == 0
        clock[0] += 2  # 11 s since the checkin
        settle(pool)
        wait_for(lambda: res.closed == 1)
        assert pool.stats().idle_expired == 1


def test_refresh_retires_a_held_resource(rec: Rec) -> None:
    with new_pool(rec, max_open_resources=2, max_holders=1) as pool:
        lease = pool.checkout("a")
        assert pool.refresh("a") is True  # below the cap: the new one is in place
        fresh = pool.checkout("a", timeout=0)
        assert fresh.resource is not lease.resource
        assert lease.resource.closed == 0
        assert pool.stats().retiring == 1
        pool.checkin(lease)
        wait_for(lambda: lease.resource.closed == 1)
        pool.checkin(fresh)


def test_refresh_at_the_cap_waits_for_the_holder(rec: Rec) -> None:
    with new_pool(rec, max_open_resources=1, max_holders=1) as pool:
        lease = pool.checkout("a")
        refreshed: list[bool] = []
        refresher = threading.Thread(
            target=lambda: refreshed.append(pool.refresh("a")), daemon=True
        )
        refresher.start()
        wait_for(lambda: pool.stats().retiring == 1)
        assert lease.resource.closed == 0 and refreshed == []
        pool.checkin(lease)
        refresher.join(10)
        assert refreshed == [True]
        assert lease.resource.closed == 1
        with pool.lease("a", timeout=0) as res:
            assert res is rec.made[1]


def test_drain_timeout_closes_a_retiring_resource_anyway(
    rec: Rec, clock: list[float]
) -> None:
    with (
        new_pool(rec, max_holders=1, drain_timeout=5) as pool,
        capture_logs() as logs,
    ):
        lease = pool.checkout("a")
        pool.release("a")
        clock[0] += 4
        settle(pool)
        assert lease.resource.closed == 0
        clock[0] += 2
        settle(pool)
        wait_for(lambda: lease.resource.closed == 1)
        stats = pool.stats()
        assert (stats.drain_timeouts, stats.retiring, stats.holders) == (1, 0, 0)
        (event,) = events(logs, "pool.resource.drain_timeout")
        assert (event["key"], event["holders"], event["drain_timeout"]) == ("a", 1, 5)
        assert pool.checkin(lease) is True  # its first checkin: a no-op now
        assert pool.checkin(lease) is False


def test_a_late_checkin_after_a_drain_timeout_changes_nothing(
    rec: Rec, clock: list[float]
) -> None:
    gate = rec.close_gates["a"] = threading.Event()  # its close() takes a while
    with new_pool(rec, max_holders=1, drain_timeout=5) as pool:
        try:
            lease = pool.checkout("a")
            pool.release("a")
            clock[0] += 6
            settle(pool)
            stats = pool.stats()
            assert (stats.drain_timeouts, stats.closing) == (1, 1)
            # Closed under its holder, whose late checkin is the lease's first
            # (True) and changes nothing but the count: close() runs on.
            assert stats.holders == 1
            assert pool.checkin(lease) is True
            assert pool.checkin(lease) is False
            after = pool.stats()
            assert (after.holders, after.closing) == (0, 1)
        finally:
            gate.set()
        wait_for(lambda: pool.stats().open_resources == 0)


def test_close_drains_held_resources(rec: Rec) -> None:
    pool = new_pool(rec, max_holders=1)
    lease = pool.checkout("a")
    idle = pool.checkout("b")
    pool.checkin(idle)
    lease.resource.take()
    closer = threading.Thread(target=pool.close, daemon=True)
    closer.start()
    wait_for(lambda: idle.resource.closed == 1)
    assert closer.is_alive()  # waits for the holder
    assert lease.resource.closed == 0
    with pytest.raises(PoolClosedError):
        pool.checkout("c")  # closing: no new checkouts
    lease.resource.drop()
    assert pool.checkin(lease) is True
    closer.join(10)
    assert not closer.is_alive()
    assert lease.resource.closed == 1 and lease.resource.under_holder == []
    assert pool.closed
    assert pool.checkin(lease) is False  # checked in above already


def test_close_leaves_held_resources_to_their_holders_after_drain_timeout(
    rec: Rec,
) -> None:
    with capture_logs() as logs:
        pool = new_pool(rec, max_holders=1, drain_timeout=0.1)
        lease = pool.checkout("a")
        pool.close()  # waits drain_timeout for the holder, then returns
    assert lease.resource.closed == 0  # never closed under its holder
    assert pool.closed
    assert [e["key"] for e in events(logs, "pool.close.lease_out")] == ["a"]
    assert pool.checkin(lease) is True  # its first checkin closes it
    wait_for(lambda: lease.resource.closed == 1)
    assert pool.checkin(lease) is False


def test_idle_means_no_holders(rec: Rec, clock: list[float]) -> None:
    with new_pool(rec, max_idle_time=10) as pool:  # shared: many holders
        one, two = pool.checkout("a"), pool.checkout("a")
        pool.checkin(one)
        clock[0] += 20
        settle(pool)
        assert pool.contains("a")  # one holder left: not idle
        pool.checkin(two)
        settle(pool)  # a checkin is a note: let the pool read it at this time
        clock[0] += 11
        settle(pool)
        wait_for(lambda: not pool.contains("a"))
        assert pool.stats().idle_expired == 1


# --- health checks of exclusive resources -----------------------------------


def test_exclusive_resources_are_pinged_only_while_unheld(rec: Rec) -> None:
    with new_pool(rec, max_holders=1, health_check_interval=0.01) as pool:
        held = pool.checkout("held")
        pool.checkin(pool.checkout("free"))
        res, free = held.resource, rec.made[1]
        res.take()
        res.healthy = False  # would be evicted by a ping
        pings, sweeps = res.pings, free.pings  # no ping runs while it is held
        wait_for(lambda: free.pings >= sweeps + 5)  # five sweeps went by
        assert res.pings == pings and res.under_holder == []
        assert pool.contains("held")
        res.drop()
        pool.checkin(held)
        wait_for(lambda: pool.stats().health_evictions == 1)  # pinged again
        wait_for(lambda: res.closed == 1)


def test_shared_resources_are_pinged_while_held(rec: Rec) -> None:
    with new_pool(rec, health_check_interval=0.01) as pool:
        lease = pool.checkout("a")
        pings = lease.resource.pings
        wait_for(lambda: lease.resource.pings >= pings + 2)
        pool.checkin(lease)


# --- reclaim ------------------------------------------------------------------


def test_a_waiter_reclaims_the_least_recently_used_idle_resource(
    rec: Rec, clock: list[float]
) -> None:
    with (
        new_pool(rec, max_open_resources=2, max_holders=1) as pool,
        capture_logs() as logs,
    ):
        a, b = pool.checkout("a"), pool.checkout("b")
        pool.checkin(b)  # b is the least recently used: checked in first
        clock[0] += 1
        pool.checkin(a)
        c = pool.checkout("c", timeout=5)  # the cap is full: b makes room
        assert rec.made[1].closed == 1 and rec.made[0].closed == 0
        assert pool.contains("a") and not pool.contains("b")
        stats = pool.stats()
        assert (stats.reclaimed, stats.open_resources) == (1, 2)
        (event,) = events(logs, "pool.resource.reclaimed")
        assert event["key"] == "b"
        pool.checkin(c)


def test_reclaim_never_takes_a_held_resource(rec: Rec) -> None:
    with new_pool(rec, max_open_resources=1, max_holders=1) as pool:
        held = pool.checkout("a")
        with pytest.raises(AcquireTimeout):
            pool.checkout("b", timeout=0.05)
        assert held.resource.closed == 0 and pool.stats().reclaimed == 0
        pool.checkin(held)


def test_reclaim_never_takes_what_plain_acquire_returned(rec: Rec) -> None:
    with new_pool(rec, max_open_resources=2) as pool:  # shared: acquire allowed
        plain = pool.acquire("plain")
        pool.checkin(pool.checkout("leased"))
        lease = pool.checkout("c", timeout=5)  # reclaims "leased", not "plain"
        assert pool.contains("plain") and not pool.contains("leased")
        with pytest.raises(AcquireTimeout):
            pool.checkout("d", timeout=0.05)  # only "plain" is unheld now
        assert plain.closed == 0
        assert pool.stats().reclaimed == 1
        pool.checkin(lease)


def test_reclaim_idle_false_keeps_idle_resources(rec: Rec) -> None:
    with new_pool(rec, max_open_resources=1, max_holders=1, reclaim_idle=False) as pool:
        pool.checkin(pool.checkout("a"))
        with pytest.raises(AcquireTimeout):
            pool.checkout("b", timeout=0.05)
        assert pool.contains("a") and rec.made[0].closed == 0
        assert pool.stats().reclaimed == 0
        waiter = Call(pool, "b")
        waiting(pool, 1)
        pool.release("a")  # the slot frees only when asked
        assert waiter.result().key == "b"
        pool.checkin(waiter.result())


@pytest.mark.parametrize("max_holders", [None, 2, 1])
def test_callers_of_one_new_key_reclaim_only_what_they_need(
    rec: Rec, max_holders: int | None
) -> None:
    """Two callers of one new key need one creation (shared, or two places
    on a multiplexed one, or max_per_key=1): one idle resource is reclaimed."""
    gates = {k: rec.close_gates.setdefault(k, threading.Event()) for k in "ab"}
    with new_pool(rec, max_open_resources=3, max_holders=max_holders) as pool:
        try:
            held = pool.checkout("x")
            pool.checkin(pool.checkout("a"))
            pool.checkin(pool.checkout("b"))
            first = Call(pool, "c")
            wait_for(lambda: pool.stats().reclaimed == 1)  # a, closing slowly
            second = Call(pool, "c")
            waiting(pool, 2)
            settle(pool)
            assert pool.stats().reclaimed == 1
            assert pool.contains("b")
        finally:
            for gate in gates.values():
                gate.set()
        pool.checkin(first.result())
        pool.checkin(second.result())
        assert rec.calls == ["x", "a", "b", "c"]
        assert pool.contains("b") and pool.stats().reclaimed == 1
        pool.checkin(held)


def test_every_waiter_for_a_slot_reclaims_one(rec: Rec) -> None:
    with new_pool(rec, max_open_resources=3, max_holders=1) as pool:
        for key in ("a", "b", "c"):
            pool.checkin(pool.checkout(key))
        d = Call(pool, "d")
        wait_for(lambda: "d" in rec.calls)  # d asked first (threads race)
        e = Call(pool, "e")
        pool.checkin(d.result())
        pool.checkin(e.result())
        assert pool.stats().reclaimed == 2
        assert rec.calls == ["a", "b", "c", "d", "e"]


# --- broken ---------------------------------------------------------------------


def test_broken_checkin_retires_the_resource(rec: Rec) -> None:
    with new_pool(rec) as pool, capture_logs() as logs:  # shared: two holders
        one, two = pool.checkout("a"), pool.checkout("a")
        res = one.resource
        two.resource.take()
        assert pool.checkin(one, broken=True) is True
        assert not pool.contains("a")  # nobody new gets it
        assert res.closed == 0  # the other holder keeps it
        fresh = pool.checkout("a")
        assert fresh.resource is not res
        two.resource.drop()
        pool.checkin(two)
        wait_for(lambda: res.closed == 1)
        assert res.under_holder == []
        assert pool.stats().broken == 1
        assert [e["key"] for e in events(logs, "pool.lease.broken")] == ["a"]
        pool.checkin(fresh)


def test_broken_checkin_of_the_last_holder_closes_at_once(rec: Rec) -> None:
    with new_pool(rec, max_holders=1) as pool:
        lease = pool.checkout("a")
        pool.checkin(lease, broken=True)
        wait_for(lambda: lease.resource.closed == 1)
        with pool.lease("a") as res:
            assert res is not lease.resource


def test_is_broken_decides_for_an_exception_leaving_a_lease_block(rec: Rec) -> None:
    def is_broken(error: BaseException) -> bool:
        return isinstance(error, ConnectionError)

    with new_pool(rec, max_holders=1, is_broken=is_broken) as pool:
        with pytest.raises(ValueError), pool.lease("a") as res:
            raise ValueError("a bad query, not a bad connection")
        assert pool.stats().broken == 0 and res.closed == 0
        with pytest.raises(ConnectionError), pool.lease("a") as again:
            assert again is res
            raise ConnectionError("server closed the connection")
        wait_for(lambda: res.closed == 1)
        stats = pool.stats()
        assert (stats.broken, stats.holders, stats.checkouts) == (1, 0, 2)
        with pool.lease("a") as fresh:
            assert fresh is not res


def test_without_is_broken_an_exception_is_not_broken(rec: Rec) -> None:
    with new_pool(rec, max_holders=1) as pool:
        with pytest.raises(ConnectionError), pool.lease("a"):
            raise ConnectionError
        assert pool.stats().broken == 0 and pool.stats().holders == 0


def test_an_is_broken_that_raises_checks_the_lease_in_as_broken(rec: Rec) -> None:
    """SPEC 11: `is_broken` that raises anything still checks the lease in
    (as broken); the block's own error is the one the caller sees."""

    def is_broken(error: BaseException) -> bool:
        raise RuntimeError("bug in is_broken")

    with new_pool(rec, max_holders=1, is_broken=is_broken) as pool:
        with pytest.raises(ConnectionError), pool.lease("a"):
            raise ConnectionError
        assert pool.stats().broken == 1 and pool.stats().holders == 0


def test_an_is_broken_interrupted_still_checks_the_lease_in(rec: Rec) -> None:
    """Finding 4 of issue 20: `is_broken` raising a `BaseException` (here a
    `KeyboardInterrupt`) left the lease out for good: holders=1, key dead."""

    def is_broken(error: BaseException) -> bool:
        raise KeyboardInterrupt

    with new_pool(rec, max_holders=1, max_per_key=1, is_broken=is_broken) as pool:
        with pytest.raises(KeyboardInterrupt), pool.lease("a"):
            raise ConnectionError
        assert pool.stats().holders == 0
        with pool.lease("a", timeout=5):  # the key serves again
            pass


def test_lease_block_checks_in_on_success(rec: Rec) -> None:
    with new_pool(rec, max_holders=1) as pool:
        with pool.lease("a", timeout=1) as res:
            assert pool.stats().holders == 1
        assert pool.stats().holders == 0 and res.closed == 0


# --- misuse -------------------------------------------------------------------


def test_double_checkin_returns_false(rec: Rec) -> None:
    with new_pool(rec, max_holders=1) as pool:
        lease = pool.checkout("a")
        assert pool.checkin(lease) is True
        assert pool.checkin(lease) is False
        assert pool.checkin(lease, broken=True) is False  # counts nothing
        stats = pool.stats()
        assert (stats.holders, stats.broken) == (0, 0)


def test_a_lease_of_another_pool_is_a_value_error(rec: Rec) -> None:
    with new_pool(rec) as pool, new_pool(Rec()) as other:
        lease = other.checkout("a")
        with pytest.raises(ValueError, match="not granted"):
            pool.checkin(lease)
        with pytest.raises(ValueError):
            pool.actor_ref.ask(Checkin(lease))
        assert other.checkin(lease) is True


@pytest.mark.parametrize(
    "options",
    [{"max_holders": 1}, {"max_holders": 4}, {"max_per_key": 2}],
    ids=["exclusive", "multiplexed", "per-key"],
)
def test_acquire_on_a_lease_pool_is_a_type_error(
    rec: Rec, options: dict[str, Any]
) -> None:
    with new_pool(rec, **options) as pool:
        with pytest.raises(TypeError, match="lease"):
            pool.acquire("a")
        assert rec.calls == []  # nothing was created
        assert pool.stats().acquires == 1


def test_acquire_and_lease_share_a_shared_pool(rec: Rec) -> None:
    with new_pool(rec) as pool:
        plain = pool.acquire("a")
        with pool.lease("a") as leased:
            assert leased is plain
        assert rec.calls == ["a"]


# --- stats --------------------------------------------------------------------


def test_lease_stats(rec: Rec) -> None:
    with new_pool(rec, max_open_resources=3, max_holders=2, max_per_key=2) as pool:
        stats = pool.stats()
        assert (stats.holders, stats.checkouts, stats.retiring) == (0, 0, 0)
        assert (stats.reclaimed, stats.drain_timeouts, stats.broken) == (0, 0, 0)
        leases = [pool.checkout("a") for _ in range(3)]  # 2 on one, 1 on another
        stats = pool.stats()
        assert (stats.holders, stats.checkouts, stats.open) == (3, 3, 2)
        pool.checkin(leases.pop())
        stats = pool.stats()
        assert (stats.holders, stats.checkouts) == (2, 3)  # holders now, total
        pool.release("a")  # one held resource retires, the idle one closes
        wait_for(lambda: pool.stats().open_resources == 1)
        stats = pool.stats()
        assert (stats.retiring, stats.open, stats.holders) == (1, 0, 2)
        pool.checkin(leases.pop(), broken=True)
        pool.checkin(leases.pop())
        wait_for(lambda: pool.stats().open_resources == 0)
        stats = pool.stats()
        assert (stats.retiring, stats.holders, stats.broken) == (0, 0, 1)
        assert stats.checkouts == 3


# --- AsyncPool ------------------------------------------------------------------


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def until(predicate: Callable[[], Any], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.002)


def new_apool(factory: Rec, **options: Any) -> AsyncPool[Hashable, Res]:
    options.setdefault("health_check_interval", None)
    return AsyncPool(factory, **options)


def test_async_lease_is_exclusive(rec: Rec) -> None:
    async def main() -> None:
        async with new_apool(rec, max_holders=1) as pool:
            order: list[str] = []

            async def use(name: str) -> Res:
                async with pool.lease("a") as res:
                    order.append(f"{name} in")
                    await asyncio.sleep(0)  # let the other task run
                    order.append(f"{name} out")
                    return res

            one, two = await asyncio.gather(use("one"), use("two"))
            assert one is two
            assert order == ["one in", "one out", "two in", "two out"]
            assert (await pool.stats()).checkouts == 2

    run(main())


def test_async_cancelled_checkout_is_never_granted(rec: Rec) -> None:
    async def main() -> None:
        async with new_apool(rec, max_holders=1) as pool:
            held = await pool.checkout("a")
            task = asyncio.create_task(pool.checkout("a"))
            await until(lambda: _waiting(pool, 1))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await until(lambda: _waiting(pool, 0))
            follower = asyncio.create_task(pool.checkout("a"))
            await until(lambda: _waiting(pool, 1))
            assert await pool.checkin(held) is True
            lease = await asyncio.wait_for(follower, 10)
            assert lease.resource is held.resource
            stats = await pool.stats()
            assert (stats.holders, stats.checkouts, stats.timeouts) == (1, 2, 1)
            await pool.checkin(lease)

    run(main())


def test_async_lease_block_cancelled_still_checks_in(rec: Rec) -> None:
    async def main() -> None:
        async with new_apool(rec, max_holders=1) as pool:
            inside = asyncio.Event()

            async def hold() -> None:
                async with pool.lease("a"):
                    inside.set()
                    await asyncio.Event().wait()  # until cancelled

            task = asyncio.create_task(hold())
            await inside.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await until(lambda: _holders(pool, 0))
            async with pool.lease("a", timeout=1) as res:
                assert res is rec.made[0]

    run(main())


def test_async_is_broken_and_acquire_type_error(rec: Rec) -> None:
    async def main() -> None:
        async with new_apool(
            rec, max_holders=1, is_broken=lambda e: isinstance(e, OSError)
        ) as pool:
            with pytest.raises(TypeError, match="lease"):
                await pool.acquire("a")
            with pytest.raises(OSError):
                async with pool.lease("a"):
                    raise OSError("connection reset")
            await until(lambda: _closed(rec.made[0]))
            assert (await pool.stats()).broken == 1
            lease = await pool.checkout("a")
            assert await pool.checkin(lease) is True
            assert await pool.checkin(lease) is False

    run(main())


async def _waiting(pool: AsyncPool[Hashable, Res], n: int) -> bool:
    return (await pool.stats()).wait_count == n


async def _holders(pool: AsyncPool[Hashable, Res], n: int) -> bool:
    return (await pool.stats()).holders == n


async def _closed(res: Res) -> bool:
    return res.closed == 1


# --- a thread storm (issue 11's "Done when") ----------------------------------


class StormRes:
    """A resource that checks the pool's promises itself, under one lock."""

    def __init__(self, key: Hashable, world: World) -> None:
        self.key = key
        self.world = world
        self.holders: set[int] = set()  # threads holding it now
        self.closes = 0

    def take(self) -> None:
        world = self.world
        with world.lock:
            if self.closes:
                world.violations.append(f"{self.key}: leased after close")
            self.holders.add(threading.get_ident())
            if world.max_holders is not None and len(self.holders) > world.max_holders:
                world.violations.append(f"{self.key}: {len(self.holders)} holders")

    def use(self) -> None:
        with self.world.lock:
            if self.closes:
                self.world.violations.append(f"{self.key}: used after close")

    def drop(self) -> None:
        with self.world.lock:
            self.holders.remove(threading.get_ident())

    def ping(self) -> None:
        with self.world.lock:
            if self.world.max_holders == 1 and self.holders:
                self.world.violations.append(f"{self.key}: pinged while held")

    def close(self) -> None:
        with self.world.lock:
            if self.holders:
                self.world.violations.append(f"{self.key}: closed while held")
            self.closes += 1
            if self.closes == 1:
                self.world.alive -= 1


class World:
    """The storm's factory: counts what exists (created and not closed)."""

    def __init__(self, max_holders: int | None) -> None:
        self.max_holders = max_holders
        self.lock = threading.Lock()
        self.alive = 0
        self.most_alive = 0
        self.made: list[StormRes] = []
        self.violations: list[str] = []

    def __call__(self, key: Hashable) -> StormRes:
        with self.lock:
            self.alive += 1
            self.most_alive = max(self.most_alive, self.alive)
            res = StormRes(key, self)
            self.made.append(res)
            return res


STORM_CAP = 3
STORM_SECONDS = 2.0
STORM_OPS = 600  # per thread, at most


@pytest.mark.parametrize(
    ("max_holders", "max_per_key"),
    [(1, 2), (2, 2), (None, 1)],
    ids=["exclusive", "multiplexed", "shared"],
)
def test_thread_storm_keeps_every_lease_promise(
    max_holders: int | None, max_per_key: int
) -> None:
    world = World(max_holders)
    pool: Pool[str, StormRes] = Pool(
        world,
        max_open_resources=STORM_CAP,
        max_holders=max_holders,
        max_per_key=max_per_key,
        health_check_interval=0.01,  # exclusive: never pinged while held
        max_lifetime=0.2,  # retires held resources too
        max_idle_time=0.05,
    )
    keys = [f"k{i}" for i in range(5)]
    errors: list[BaseException] = []
    done = {"checkouts": 0, "releases": 0, "refreshes": 0, "release_alls": 0}
    deadline = time.monotonic() + STORM_SECONDS
    count_lock = threading.Lock()

    def count(what: str) -> None:
        with count_lock:
            done[what] += 1

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            for _ in range(STORM_OPS):
                if time.monotonic() > deadline:
                    return
                op = rnd.random()
                key = rnd.choice(keys)
                if op < 0.75:
                    hold(rnd, key)
                elif op < 0.88:
                    pool.release(key)
                    count("releases")
                elif op < 0.99:
                    pool.refresh(key)  # never while holding: it may wait
                    count("refreshes")
                else:
                    pool.release_all()
                    count("release_alls")
        except BaseException as error:
            errors.append(error)

    def hold(rnd: random.Random, key: str) -> None:
        try:
            lease = pool.checkout(key, timeout=rnd.choice([0, 0.01, 0.2]))
        except AcquireTimeout:
            return
        res = lease.resource
        res.take()
        count("checkouts")
        for _ in range(rnd.randrange(3)):
            res.use()
            if rnd.random() < 0.2:
                pool.release(key)  # the holder keeps it: retired, not closed
            if rnd.random() < 0.05:
                pool.release_all()
            time.sleep(rnd.random() * 0.002)
            res.use()
        res.drop()
        if not pool.checkin(lease, broken=rnd.random() < 0.05):
            errors.append(AssertionError(f"checkin of {lease} returned False"))

    threads = [
        threading.Thread(target=worker, args=(n,), name=f"storm-{n}", daemon=True)
        for n in range(16)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(STORM_SECONDS + 30)
    assert not any(t.is_alive() for t in threads), "a storm thread hangs"
    stats = pool.stats()
    pool.close()

    assert errors == []
    assert world.violations == []
    assert world.most_alive <= STORM_CAP
    assert world.alive == 0
    assert [r.closes for r in world.made] == [1] * len(world.made)
    # The storm did what it says: contention, retirements, reclaims.
    assert done["checkouts"] >= 100 and done["releases"] and done["refreshes"]
    assert stats.checkouts >= done["checkouts"]
    assert stats.waits and stats.created > STORM_CAP
    assert stats.holders == 0 and stats.open_resources <= STORM_CAP


class _Conn:
    """A connection that does nothing: the tests below watch the pool."""

    def ping(self) -> None: ...

    def close(self) -> None: ...


class _StuckLogger:
    """A logger that blocks the supervisor's thread at the first
    `pool.acquire.queued` event until `gate` is set; `queued` says it did."""

    def __init__(self) -> None:
        self.queued, self.gate = threading.Event(), threading.Event()

    def _log(self, event: str, **fields: Any) -> None:
        if event == "pool.acquire.queued" and not self.queued.is_set():
            self.queued.set()
            assert self.gate.wait(30)

    debug = info = warning = error = _log

    def is_enabled_for(self, _level: int) -> bool:
        return True


def test_a_checkin_hands_its_connection_to_the_queued_caller_itself() -> None:
    """Rule 9 of `_fastpath`: a checkin serves the caller queued for its key
    in its own thread. Here the supervisor is stuck (in a logging call) from
    the moment the second caller is queued; the first caller's checkin still
    hands the connection over, and the pool's books agree once it resumes."""
    logger = _StuckLogger()
    queued, gate = logger.queued, logger.gate
    made: list[_Conn] = []

    def connect(key: str) -> _Conn:
        made.append(_Conn())
        return made[-1]

    got: list[Lease[str, _Conn]] = []
    with Pool(connect, max_open_resources=1, max_holders=1, logger=logger) as pool:
        first = pool.checkout("t")
        waiter = threading.Thread(
            target=lambda: got.append(pool.checkout("t", timeout=30)), daemon=True
        )
        waiter.start()
        assert queued.wait(10)  # queued, and the supervisor is stuck now
        assert pool.checkin(first)
        waiter.join(10)
        assert not waiter.is_alive(), "the checkin did not hand the connection on"
        assert got[0].resource is first.resource
        assert not gate.is_set()  # the supervisor took no part
        gate.set()
        wait_for(lambda: pool.stats().wait_count == 0)
        stats = pool.stats()
        assert (stats.checkouts, stats.holders, stats.waits) == (2, 1, 1)
        assert pool.checkin(got[0])
        wait_for(lambda: pool.stats().holders == 0)
    assert made == [first.resource]


def test_a_checkin_hands_on_to_a_future_with_a_done_callback() -> None:
    """Rule 9 and a `ref.ask(Checkout(...), block=False)` future with a
    user's done-callback: the checkin serves it (the callback runs on a
    thread of its own), rather than leaving it unanswered."""
    called = threading.Event()
    with Pool(lambda key: _Conn(), max_open_resources=1, max_holders=1) as pool:
        first = pool.checkout("t")
        future = pool.actor_ref.ask(Checkout("t", timeout=30), block=False)
        future.add_done_callback(lambda f: called.set())
        wait_for(lambda: pool.stats().wait_count == 1)
        assert pool.checkin(first)
        second = future.get(timeout=10)
        assert second.resource is first.resource
        assert called.wait(10)
        assert pool.checkin(second)
        wait_for(lambda: pool.stats().holders == 0 and pool.stats().checkouts == 2)


def test_a_checkout_queues_itself_behind_queued_callers() -> None:
    """Rule 10 of `_fastpath`: a checkout of a key with queued callers queues
    itself, and checkins serve it in order, while the supervisor is stuck
    (in a logging call) from the moment the first waiter was queued; the
    books agree once it resumes."""
    logger = _StuckLogger()
    queued, gate = logger.queued, logger.gate
    order: list[str] = []
    leases: dict[str, Lease[str, _Conn]] = {}

    def wait_for_it(name: str) -> None:
        leases[name] = pool.checkout("t", timeout=30)
        order.append(name)

    with Pool(
        lambda key: _Conn(), max_open_resources=1, max_holders=1, logger=logger
    ) as pool:
        first = pool.checkout("t")
        second = threading.Thread(target=wait_for_it, args=("second",), daemon=True)
        second.start()
        assert queued.wait(10)  # queued by the core; the supervisor is stuck now
        third = threading.Thread(target=wait_for_it, args=("third",), daemon=True)
        third.start()
        wait_for(lambda: len(pool._counter.queue.get("t", ())) == 2)  # queued itself
        assert pool.checkin(first)
        second.join(10)
        assert order == ["second"]
        assert pool.checkin(leases["second"])
        third.join(10)
        assert order == ["second", "third"]
        assert not gate.is_set()  # the supervisor took no part
        gate.set()
        wait_for(lambda: pool.stats().wait_count == 0)
        stats = pool.stats()
        assert (stats.checkouts, stats.holders, stats.waits) == (3, 1, 2)
        assert stats.acquires == 3
        assert pool.checkin(leases["third"])
        wait_for(lambda: pool.stats().holders == 0)


@pytest.mark.parametrize("max_waiting", [None, 10], ids=["queued-itself", "asked"])
def test_a_cancelled_async_checkout_granted_meanwhile_gives_the_lease_back(
    max_waiting: int | None,
) -> None:
    """A task cancelled just after its checkout was granted (here by a
    checkin handing its connection on, before the task ran again) never
    receives the lease: the pool takes it back instead of losing it. The
    checkout queued itself (rule 10 of `_fastpath`), or, with `max_waiting`
    set, asked the supervisor."""

    async def main() -> None:
        async with AsyncPool(
            lambda key: _Conn(),
            max_open_resources=1,
            max_holders=1,
            max_waiting=max_waiting,
        ) as pool:
            first = await pool.checkout("t")
            waiter = asyncio.create_task(pool.checkout("t", timeout=30))
            for _ in range(10_000):  # until the core has queued it
                if (await pool.stats()).wait_count:
                    break
                await asyncio.sleep(0.001)
            assert await pool.checkin(first)  # granted to the waiter, now
            waiter.cancel()  # before the waiter's task runs again
            with pytest.raises(asyncio.CancelledError):
                await waiter
            again = await pool.checkout("t", timeout=10)
            assert again.resource is first.resource
            assert await pool.checkin(again)

    asyncio.run(main())


def test_a_checkout_interrupted_while_it_queues_itself_leaves_nothing_behind() -> None:
    """Rule 10 and SPEC 7's interrupted caller: a checkout interrupted
    (Ctrl-C) between putting its number in the key's queue and its note has
    given up; the next checkin does not hand the connection to it, and the
    connection is not lost."""

    class Interrupting(deque[tuple[Any, ...]]):
        """The notes, until a checkout's note: then an interrupt instead."""

        def append(self, note: tuple[Any, ...]) -> None:
            if note[0] == ASK:
                raise KeyboardInterrupt
            super().append(note)

    with Pool(lambda key: _Conn(), max_open_resources=1, max_holders=1) as pool:
        first = pool.checkout("t")
        pub = pool.actor_ref.counter
        notes, pub.notes = pub.notes, Interrupting()
        try:
            with pytest.raises(KeyboardInterrupt):
                pool.checkout("t", timeout=30)
        finally:
            left, pub.notes = pub.notes, notes
            notes.extend(left)
        assert pool.checkin(first)  # not handed to the caller that gave up
        again = pool.checkout("t", timeout=10)
        assert again.resource is first.resource
        assert pool.checkin(again)
        wait_for(lambda: pool.stats().holders == 0)


def test_lease_issue_makes_what_the_constructor_makes() -> None:
    """`Lease.issue` (the counter's fast path) and `Lease(...)` set the same
    slots to the same values: a slot added to one and not the other fails."""
    from pooler_actors.lease import Lease  # noqa: PLC0415

    def lost(_lease: Lease[Any, Any]) -> None:
        pass

    pool, handle = object(), object()
    made = Lease("k", 1, pool=pool, rid=2, lid=3, handle=handle, on_lost=lost)
    issued = Lease.issue("k", 1, pool, 2, 3, handle, lost)
    for cls in type(made).__mro__:
        for name in getattr(cls, "__slots__", ()):
            assert getattr(made, name, None) == getattr(issued, name, None), name
    for lease in (made, issued):
        lease.on_lost = None  # (collected as checked in)
