"""The core's fleet-wide reservations, driven event by event (no threads, no server).

Each test feeds [PoolCore][pooler_actors._core.PoolCore] the events a shell
would (requests, grants, reports, the time) and checks the effects it asks
for: which reservations it makes, withdraws and gives back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from pooler_actors import AcquireTimeout, Lease
from pooler_actors._core import PoolCore
from pooler_actors._effects import (
    CancelSlot,
    Close,
    Effect,
    Fail,
    Reply,
    ReserveSlot,
    ReturnSlot,
    Start,
)
from pooler_actors.options import PoolOptions

E = TypeVar("E", bound=Effect)

TTL = 3.0


class FakeCapacity:
    """Enough of a GlobalCapacity for PoolOptions; the core never calls it."""

    name = "fake"
    lease_ttl = TTL
    on_unavailable = "closed"

    def try_acquire(self, waiting: Sequence[str]) -> list[str]:
        raise AssertionError("the core does no I/O")

    def release(self, tokens: Sequence[str]) -> None:
        raise AssertionError("the core does no I/O")

    def renew(self, held: Sequence[str], waiting: Sequence[str]) -> list[str]:
        raise AssertionError("the core does no I/O")


def make_core(**options: Any) -> PoolCore:
    opts = PoolOptions(
        global_capacity=FakeCapacity(), health_check_interval=None, **options
    )
    core = PoolCore(opts, pool_id=object(), rand=lambda: 0.5)
    core.start(0.0)
    core.effects.clear()
    return core


def take(core: PoolCore, kind: type[E]) -> list[E]:
    """The effects of `kind` asked for since the last call; all effects cleared."""
    found: list[E] = [e for e in core.effects if isinstance(e, kind)]
    core.effects.clear()
    return found


def grant_and_open(core: PoolCore, now: float, rid: int, obj: object) -> list[Reply]:
    """Grant reservation `rid` a slot and let its factory return `obj`; the replies."""
    core.global_granted(now, rid, True)
    (start,) = take(core, Start)
    assert start.rid == rid
    core.ready(now, start.rid, start.attempt, obj)
    return take(core, Reply)


def open_resource(core: PoolCore, now: float, cid: int, key: str) -> Lease[Any, Any]:
    """Check `key` out through a granted reservation; the lease."""
    core.acquire(now, cid, key, 10.0, {}, hold=True)
    (reserve,) = take(core, ReserveSlot)
    (reply,) = grant_and_open(core, now, reserve.rid, object())
    assert isinstance(reply.value, Lease)
    return reply.value


def test_a_grant_for_a_withdrawn_reservation_is_given_back() -> None:
    core = make_core()
    core.acquire(0.0, 1, "a", 1.0, {}, hold=True)
    (reserve,) = take(core, ReserveSlot)
    core.advance(1.0)  # the caller's deadline: nobody wants the slot any more
    assert take(core, CancelSlot) == [CancelSlot(reserve.rid)]
    core.global_granted(1.0, reserve.rid, True)  # it crossed the withdrawal
    assert take(core, ReturnSlot) == [ReturnSlot(reserve.rid)]
    assert core.snapshot().open_resources == 0


def test_waiting_callers_of_the_key_keep_a_reservation_its_joiner_gave_up() -> None:
    # max_holders=1: the second caller cannot join the first one's creation
    # and waits in the key's queue. When the first gives up, the reservation
    # (and its place in the fleet's queue) goes to the second caller instead
    # of being withdrawn and asked for again at the back of the queue.
    core = make_core(max_holders=1, max_open_resources=2)
    core.acquire(0.0, 1, "a", 1.0, {}, hold=True)
    (reserve,) = take(core, ReserveSlot)
    core.acquire(0.0, 2, "a", 10.0, {}, hold=True)
    assert take(core, ReserveSlot) == []
    core.advance(1.0)
    effects = list(core.effects)
    (fail,) = [e for e in effects if isinstance(e, Fail)]
    assert fail.cid == 1
    assert not [e for e in effects if isinstance(e, CancelSlot | ReserveSlot)]
    core.effects.clear()
    (reply,) = grant_and_open(core, 1.5, reserve.rid, "conn")
    assert reply.cid == 2
    assert reply.value.resource == "conn"


def test_a_released_reservation_is_withdrawn_when_its_last_joiner_gives_up() -> None:
    # A refresh's replacement is waiting for a slot; a caller joined it; the
    # key is released (the replacement leaves the key map but still serves
    # its joiner). Once that caller gives up nobody wants the slot.
    core = make_core(max_holders=1, max_open_resources=3)
    lease = open_resource(core, 0.0, 1, "a")
    core.refresh(0.0, 2, "a")
    (standby,) = take(core, ReserveSlot)
    core.acquire(0.0, 3, "a", 0.2, {}, hold=True)  # joins the replacement
    core.release(0.1, 4, "a")
    assert take(core, CancelSlot) == []  # its joiner still wants it
    core.advance(0.2)  # the joiner's deadline
    effects = list(core.effects)
    core.effects.clear()
    assert [e for e in effects if isinstance(e, CancelSlot)] == [
        CancelSlot(standby.rid)
    ]
    # The refresh answers that nothing was replaced; the release, waiting for
    # the replacement to end, answers too.
    replies = [(r.cid, r.value) for r in effects if isinstance(r, Reply)]
    assert replies == [(2, False), (4, True)]
    core.checkin(0.3, 5, lease, False)
    assert core.snapshot().global_waiting == 0


def test_a_refresh_at_the_fleet_limit_retires_the_old_resource_first() -> None:
    # Below the local cap a refresh creates the replacement beside the old
    # resource. When the fleet has no slot for it, waiting would never end
    # if this pool's own old resource is what fills the fleet: after a
    # short wait the old one is retired; the replacement keeps its place in
    # the fleet's queue and takes the slot the old one gives back.
    core = make_core(max_open_resources=2)
    lease = open_resource(core, 0.0, 1, "a")
    core.checkin(0.0, 2, lease, False)
    core.effects.clear()
    core.refresh(0.0, 3, "a")
    (standby,) = take(core, ReserveSlot)
    deadline = core.next_deadline()
    assert deadline is not None
    assert deadline <= TTL / 3
    core.advance(deadline)
    closes = take(core, Close)
    assert closes == [Close(lease.rid)]
    core.closed(deadline, lease.rid, 0, None)
    assert take(core, ReturnSlot) == [ReturnSlot(lease.rid)]
    assert [r.value for r in grant_and_open(core, deadline, standby.rid, "new")] == [
        True
    ]
    core.acquire(deadline, 4, "a", 1.0, {}, hold=True)
    (reply,) = take(core, Reply)
    assert reply.value.resource == "new"


def test_a_refresh_with_a_slot_free_keeps_the_old_resource_until_the_new_opens() -> (
    None
):
    core = make_core(max_open_resources=2)
    lease = open_resource(core, 0.0, 1, "a")
    core.refresh(0.0, 2, "a")
    (standby,) = take(core, ReserveSlot)
    core.global_granted(0.01, standby.rid, True)
    (start,) = take(core, Start)
    core.advance(10.0)  # long past the wait: the replacement is being created
    assert take(core, Close) == []
    core.ready(10.0, start.rid, start.attempt, "new")
    assert [r.value for r in core.effects if isinstance(r, Reply)] == [True]
    core.effects.clear()
    core.checkin(10.0, 3, lease, False)
    assert take(core, Close) == [Close(lease.rid)]


def test_a_prewarm_stops_waiting_for_a_fleet_slot() -> None:
    core = make_core(max_open_resources=4)
    core.prewarm(0.0, 1, ["a", "b"])
    reserves = take(core, ReserveSlot)
    assert len(reserves) == 2
    assert grant_and_open(core, 0.0, reserves[0].rid, "conn-a") == []
    deadline = core.next_deadline()
    assert deadline is not None
    core.advance(deadline)
    effects = list(core.effects)
    assert [e for e in effects if isinstance(e, CancelSlot)] == [
        CancelSlot(reserves[1].rid)
    ]
    (reply,) = [e for e in effects if isinstance(e, Reply)]
    assert reply.value == {"a": "created", "b": "not_created"}
    assert core.snapshot().open_resources == 1


def test_a_prewarmed_reservation_a_caller_joined_keeps_waiting_for_it() -> None:
    core = make_core(max_open_resources=4)
    core.prewarm(0.0, 1, ["a"])
    (reserve,) = take(core, ReserveSlot)
    core.acquire(0.0, 2, "a", 10.0, {}, hold=True)
    assert take(core, ReserveSlot) == []  # joined the prewarm's creation
    deadline = core.next_deadline()
    assert deadline is not None
    assert deadline < 10.0
    core.advance(deadline)
    effects = list(core.effects)
    assert [r.value for r in effects if isinstance(r, Reply)] == [{"a": "not_created"}]
    assert not [e for e in effects if isinstance(e, CancelSlot)]
    core.effects.clear()
    (reply,) = grant_and_open(core, 1.0, reserve.rid, "conn")
    assert reply.cid == 2


def test_timeout_zero_does_not_wait_long_for_a_fleet_slot() -> None:
    core = make_core()
    core.acquire(0.0, 1, "a", 0, {}, hold=True)
    (reserve,) = take(core, ReserveSlot)
    deadline = core.next_deadline()
    assert deadline is not None
    assert deadline <= TTL / 3
    core.advance(deadline)
    effects = list(core.effects)
    (fail,) = [e for e in effects if isinstance(e, Fail)]
    assert fail.cid == 1
    assert isinstance(fail.error, AcquireTimeout)
    assert [e for e in effects if isinstance(e, CancelSlot)] == [
        CancelSlot(reserve.rid)
    ]
    assert core.snapshot().timeouts == 1


def test_a_lost_lease_of_a_held_resource_retires_it_until_checkin() -> None:
    core = make_core(max_holders=1)
    lease = open_resource(core, 0.0, 1, "a")
    core.global_lost(1.0, lease.rid)
    stats = core.snapshot()
    assert (stats.retiring, stats.global_held, stats.global_lost) == (1, 0, 1)
    assert take(core, Close) == []
    core.checkin(2.0, 2, lease, False)
    effects = list(core.effects)
    assert [e for e in effects if isinstance(e, Close)] == [Close(lease.rid)]
    core.effects.clear()
    core.closed(2.0, lease.rid, 0, None)
    # The driver already forgot the lost slot: nothing to give back.
    assert take(core, ReturnSlot) == []


def test_an_abandoned_resource_keeps_its_fleet_slot_until_it_ends() -> None:
    core = make_core(close_timeout=1.0)
    lease = open_resource(core, 0.0, 1, "a")
    core.checkin(0.0, 2, lease, False)
    core.release(0.0, 3, "a")
    assert take(core, Close) == [Close(lease.rid)]
    core.advance(1.0)  # close() did not return: abandoned
    stats = core.snapshot()
    assert (stats.open_resources, stats.abandoned, stats.global_held) == (0, 1, 1)
    assert take(core, ReturnSlot) == []
    core.closed(5.0, lease.rid, 0, None)
    assert take(core, ReturnSlot) == [ReturnSlot(lease.rid)]
    assert core.snapshot().global_held == 0
