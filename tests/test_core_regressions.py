"""Regressions in the pure core found by the deterministic simulation.

Each test replays, with the core alone, a short sequence of events for one bug
the simulation (`tests/simulation.py`) found; each fails without its fix. The
seed cited is where `make sim` finds the bug with its fix alone reverted
(`SEED=n make sim` replays it).
"""

from __future__ import annotations

from typing import Any

from core_kit import Res
from core_kit import make_core as _core
from core_kit import take as _take

from pooler_actors import _effects as fx
from pooler_actors._core import PoolCore, Resource
from pooler_actors._counter import MISS
from pooler_actors._counter_state import IN, WOKEN
from pooler_actors._timers import Timers
from pooler_actors.lease import Lease


def test_cancelling_a_fired_timer_is_a_no_op() -> None:
    timers = Timers()
    handle = timers.add(1.0, "deadline", 1)
    assert timers.pop_due(1.0) == (handle, "deadline", 1)
    timers.cancel(handle)  # raised ValueError in len() (a phantom cancel) before
    assert len(timers) == 0
    assert timers.next_deadline() is None


def test_cancelling_a_timer_twice_is_a_no_op() -> None:
    timers = Timers()
    first = timers.add(1.0, "deadline", 1)
    timers.cancel(first)
    assert timers.next_deadline() is None  # drops the cancelled entry
    timers.cancel(first)
    second = timers.add(2.0, "deadline", 2)
    assert len(timers) == 1
    assert timers.pop_due(2.0) == (second, "deadline", 2)
    assert len(timers) == 0


def test_a_withdrawn_grant_leaves_the_timer_count_right() -> None:
    """Simulation seed 1, step 1327: a queued caller is granted, its grant comes back
    undelivered and its withdrawal arrives: its deadline timer was cancelled
    twice and the core's timer count went wrong."""
    core = _core(max_open_resources=1, max_holders=1)
    core.acquire(0.0, 1, "k", None, {}, hold=True)
    (start,) = _take(core, fx.Start)
    core.ready(0.0, start.rid, start.attempt, Res())
    (first,) = _take(core, fx.Reply)
    core.acquire(0.0, 2, "k", 5.0, {}, hold=True)  # waits, with a deadline
    assert len(core.timers) == 1
    core.checkin(1.0, 3, first.value, broken=False)
    (grant,) = [r for r in _take(core, fx.Reply) if r.cid == 2]
    assert isinstance(grant.value, Lease)
    core.undelivered(1.0, grant)  # caller 2 had given up meanwhile
    assert core.next_deadline() is None  # the shell looks between messages
    core.give_up(1.0, 2)
    assert len(core.timers) == 0


def test_refresh_whose_old_resource_is_lost_has_one_factory_call() -> None:
    """Simulation seed 13, step 1338 (SPEC 7: a refresh whose old resource is evicted
    meanwhile ends with exactly one factory call): exclusive resources, one per
    key; the refreshed resource is lost while its replacement is being made; a
    second checkout that finds no place on the replacement must wait for it,
    not start a second resource for the key."""
    core = _core(max_open_resources=4, max_holders=1, max_per_key=1)
    core.acquire(0.0, 1, "k", None, {}, hold=True)
    (old,) = _take(core, fx.Start)
    core.ready(0.0, old.rid, old.attempt, Res())
    (lease,) = _take(core, fx.Reply)
    core.checkin(0.0, 2, lease.value, broken=False)
    core.refresh(1.0, 3, "k")
    (new,) = _take(core, fx.Start)
    core.closed(1.0, old.rid, old.attempt, None)  # its actor stopped unasked
    core.acquire(1.0, 4, "k", None, {}, hold=True)  # joins the replacement
    core.acquire(1.0, 5, "k", None, {}, hold=True)  # no place on it: waits
    assert _take(core, fx.Start) == []
    assert core.snapshot().wait_count == 1
    core.ready(2.0, new.rid, new.attempt, Res())
    replies = {r.cid: r.value for r in _take(core, fx.Reply)}
    assert replies[3] is True  # the refresh
    assert isinstance(replies[4], Lease)
    core.checkin(3.0, 6, replies[4], broken=False)
    (grant,) = [r for r in _take(core, fx.Reply) if r.cid == 5]
    assert grant.value.rid == new.rid


def test_a_slot_taken_by_an_older_waiter_of_the_key_keeps_its_owner_in_line() -> None:
    """Simulation seed 80, step 747 (SPEC 3: every event that frees capacity grants as
    many queued callers as there are free slots, oldest first): the slot of
    caller 7 started a creation that an older waiter of its key joined (FIFO
    per key); caller 7 lost its place in the slot queue and was left waiting
    while a slot was free."""
    core = _core(max_open_resources=3, max_holders=1, max_per_key=2, create_retries=0)
    starts: dict[Any, int] = {}

    def checkout(cid: int, key: str) -> None:
        core.acquire(0.0, cid, key, None, {}, hold=True)
        for start in _take(core, fx.Start):
            starts[start.rid] = start.attempt

    checkout(1, "k")  # creation Rk1, joined by 1
    checkout(2, "a")  # Ra
    checkout(3, "b")  # Rb: the cap is reached
    rk1, ra, rb = sorted(starts)
    for cid, key in ((4, "k"), (5, "k"), (6, "x"), (7, "k")):
        checkout(cid, key)  # all four wait for a slot, in this order
    core.failed(1.0, ra, 0, RuntimeError("down"))  # 4 gets a slot: Rk2
    core.failed(1.0, rb, 0, RuntimeError("down"))  # 5 finds k full; 6 gets Rx
    core.effects.clear()
    core.release(2.0, 8, "k")  # Rk1 and Rk2 leave the key map (still created)
    rx = max(r.rid for r in core.resources.values() if r.key == "x")
    core.failed(3.0, rx, 0, RuntimeError("down"))  # a slot: 7's turn
    joined = {cid: c.joined is not None for cid, c in core.callers.items()}
    assert joined[5]  # the older waiter of "k" took the new creation
    assert not joined[7]
    core.effects.clear()
    core.failed(4.0, rk1, 0, RuntimeError("down"))  # one more slot frees
    assert [s.key for s in core.effects if isinstance(s, fx.Start)] == ["k"]
    assert core.callers[7].joined is not None
    assert core.snapshot().wait_count == 0


def test_with_two_per_key_a_freed_slot_goes_to_a_key_with_nothing_first() -> None:
    """Issue 20's no-thrash rule, second half (`Placement.next_slot`): with
    `max_per_key > 1`, a slot that frees goes to a caller whose key has
    nothing open or being made before an older caller whose key has one."""
    core = _core(max_open_resources=2, max_holders=1, max_per_key=2, create_retries=0)
    starts: list[fx.Start] = []

    def checkout(cid: int, key: str) -> None:
        core.acquire(0.0, cid, key, None, {}, hold=True)
        starts.extend(_take(core, fx.Start))

    checkout(1, "a")  # Ra, being made for 1
    checkout(2, "c")  # Rc: the cap is reached
    rc = starts[1].rid
    checkout(3, "a")  # "a" has one: 3 waits for a slot (or Ra's checkin)
    checkout(4, "b")  # "b" has nothing: 4 waits for a slot, behind 3
    assert [c.cid for c in core.waiters.slots] == [3, 4]
    starts.clear()
    core.failed(1.0, rc, 0, RuntimeError("down"))  # one slot frees
    assert [s.key for s in starts + _take(core, fx.Start)] == ["b"]
    assert [c.cid for c in core.waiters.slots] == [3]  # next in line


class Capacity:
    """A fleet-wide capacity as the options check it (the core never calls it)."""

    def try_acquire(self, *_args: Any) -> bool:
        return True

    def release(self, *_args: Any) -> None:
        pass

    def renew(self, *_args: Any) -> None:
        pass


def _starts_after_lost_slot(*, fail_first: bool) -> tuple[list[Any], list[Any]]:
    core = _core(global_capacity=Capacity(), create_retries=2, create_backoff=0.1)
    core.acquire(0.0, 1, "k", None, {})
    (reserve,) = _take(core, fx.ReserveSlot)
    core.global_granted(0.0, reserve.rid, held=True)
    assert len(_take(core, fx.Start)) == 1
    if fail_first:  # the slot is lost between two tries of the factory
        core.failed(1.0, reserve.rid, 0, RuntimeError("refused"))
        core.global_lost(1.0, reserve.rid)
    else:  # the slot is lost while the factory runs; then it fails
        core.global_lost(1.0, reserve.rid)
        core.failed(1.0, reserve.rid, 0, RuntimeError("refused"))
    fails = [e for e in core.effects if isinstance(e, fx.Fail)]
    core.effects.clear()
    core.advance(10.0)  # any retry would be due by now
    return _take(core, fx.Start), fails


def test_a_creation_that_lost_its_fleet_slot_is_not_retried() -> None:
    """Simulation seed 4, step 124 (SPEC 9: a global slot is taken before the factory
    runs): the slot of a creation was lost while its factory ran; the factory
    then failed and was retried without a slot."""
    starts, fails = _starts_after_lost_slot(fail_first=False)
    assert starts == []
    assert [f.cid for f in fails] == [1]


def test_a_creation_that_lost_its_fleet_slot_between_tries_is_not_retried() -> None:
    starts, fails = _starts_after_lost_slot(fail_first=True)
    assert starts == []
    assert [f.cid for f in fails] == [1]


def test_a_finished_health_check_leaves_no_ping_timer() -> None:
    """Simulation seed 7, step 958 (SPEC 7: timers cancelled when moot, memory
    proportional to what exists): each health check's ping timeout stayed in
    the timer heap after every ping had answered, one more per check."""
    core = _core(health_check_interval=1.0, ping_timeout=30.0)
    core.acquire(0.0, 1, "k", None, {})
    (start,) = _take(core, fx.Start)
    core.ready(0.0, start.rid, start.attempt, Res())
    core.effects.clear()
    for n in range(1, 4):
        core.advance(float(n))  # the health timer fires: one ping
        (ping,) = _take(core, fx.Ping)
        core.ping_result(float(n), ping.rid, ping.seq, None)
        assert len(core.timers) == 1  # the next health check only
    core.advance(4.0)  # one more check, still running when the pool closes
    assert len(_take(core, fx.Ping)) == 1
    core.close(5.0, 2)
    core.closed(5.0, start.rid, start.attempt, None)
    assert any(isinstance(e, fx.Stopped) for e in core.effects)
    assert len(core.timers) == 0


# --- the hit path (issue 12) --------------------------------------------------


def _open_exclusive(core: PoolCore, key: str, cid: int) -> Lease[Any, Any]:
    """A checkout that creates `key`'s resource: its lease."""
    core.acquire(0.0, cid, key, None, {}, hold=True)
    (start,) = _take(core, fx.Start)
    core.ready(0.0, start.rid, start.attempt, Res())
    (reply,) = _take(core, fx.Reply)
    lease: Lease[Any, Any] = reply.value
    return lease


def test_the_core_taking_from_an_idle_list_a_caller_empties_meanwhile() -> None:
    """Simulation seed 1, step 694: the core saw an idle list non-empty
    (`while entry.idle`), a caller's thread popped its last resource, and the
    core's own `pop` raised `IndexError`: the supervisor failed."""
    core = _core(max_open_resources=1, max_holders=1)
    lease = _open_exclusive(core, "k", 1)
    assert core.published.checkin(lease, False)
    core.notes(1.0, *core.published.drain())
    entry = core.keys["k"]
    caller_took: list[Any] = []

    class Raced(list[Any]):
        """The idle list, emptied by a caller between the core's look and pop."""

        def pop(self, index: Any = -1) -> Any:
            caller_took.append(list.pop(self))  # the caller's `pop`, first
            return list.pop(self, index)

    raced = Raced(entry.idle)
    entry.idle = core.published.idle["k"] = raced
    for res in entry.resources:
        res.home = raced
    core.acquire(2.0, 2, "k", None, {}, hold=True)  # raised IndexError
    assert caller_took  # the race happened: the caller has the resource
    assert _take(core, fx.Reply) == []
    assert core.snapshot().wait_count == 1  # the checkout waits for it


def test_a_checkout_does_not_pass_a_caller_queued_for_the_idle_list() -> None:
    """Simulation seed 3, step 325 (SPEC 8: FIFO per key for a holder place):
    a hit-path checkin read `waiting` before caller 2 was queued, then put the
    resource back in the idle list; its note not read yet, a later checkout
    (caller 3) took the resource from the idle list ahead of caller 2."""
    core = _core(max_open_resources=1, max_holders=1)
    lease = _open_exclusive(core, "k", 1)
    core.acquire(1.0, 2, "k", None, {}, hold=True)  # nothing idle: queued
    assert core.snapshot().wait_count == 1
    # The checkin, past its `waiting` check (it looked before caller 2 came):
    res = lease.handle
    assert isinstance(res, Resource)
    assert lease.claim_checkin()
    assert res.home is not None
    res.home.append(res)
    core.published.notes.append((IN, res, lease))
    core.acquire(2.0, 3, "k", None, {}, hold=True)  # was granted at once
    assert _take(core, fx.Reply) == []
    core.notes(3.0, *core.published.drain())  # the checkin's note
    (grant,) = _take(core, fx.Reply)
    assert grant.cid == 2
    assert core.callers.keys() == {3}


def test_an_idle_timer_that_fires_during_a_ping_is_armed_again() -> None:
    """Simulation seed 9, step 1899 (SPEC 8: idle means no holders;
    `max_idle_time` counts from the last checkin): an exclusive resource's
    idle timer fired while the core had it for a ping, could not claim it and
    was not armed again: the resource never expired."""
    core = _core(max_open_resources=2, max_holders=1, max_idle_time=1.0)
    lease = _open_exclusive(core, "k", 1)
    core.checkin(0.0, 2, lease, broken=False)
    core.effects.clear()
    core.health_check(0.5)
    (ping,) = _take(core, fx.Ping)
    core.advance(1.0)  # the idle timer fires: the core has it for the ping
    core.ping_result(1.5, ping.rid, ping.seq, None)
    assert core.next_deadline() == 1.0  # armed again (from its last use)
    core.advance(1.5)
    assert [c.rid for c in _take(core, fx.Close)] == [ping.rid]
    assert core.n["idle_expired"] == 1


def _reclaim_setup() -> tuple[PoolCore, Any]:
    """A shared pool at its cap, its one resource prewarmed (never handed out)."""
    core = _core(max_open_resources=1, reclaim_idle=True)
    core.prewarm(0.0, 1, ["a"])
    (start,) = _take(core, fx.Start)
    core.ready(0.0, start.rid, start.attempt, Res())
    core.effects.clear()
    return core, core.keys["a"].resources[0]


def test_a_resource_a_hit_returned_is_not_reclaimed_before_its_note() -> None:
    """Simulation seed 939, step 158 (SPEC 8: a resource that a plain
    `acquire()` returned is never reclaimed): a hit returned it; before its
    note was read, a caller waiting for a slot had it reclaimed."""
    core, res = _reclaim_setup()
    got = core.published.hit("a")
    assert got is res.obj
    core.acquire(1.0, 2, "b", None, {})  # at the cap: waits for a slot
    assert _take(core, fx.Close) == []
    assert core.n["reclaimed"] == 0
    assert core.snapshot().wait_count == 1


def test_a_hit_after_a_reclaim_asks_instead() -> None:
    """The same race the other way round. Under the counter's lock a reclaim
    (a core event) cannot run inside a hit: the hit comes after it, finds the
    resource gone from `view` and asks the supervisor (`MISS`)."""
    core, res = _reclaim_setup()
    core.acquire(1.0, 2, "b", None, {})  # a reclaim
    assert [c.rid for c in _take(core, fx.Close)] == [res.rid]
    assert core.published.hit("a") is MISS


def test_a_hit_after_the_reclaim_chose_its_victim_keeps_it() -> None:
    """The window between the reclaim's choice (it read `handed_out` false)
    and its taking the resource out of `view`: a caller's whole hit runs
    there. The core reads `handed_out` again once the resource is out of
    `view`, finds the caller's mark and keeps the resource. (The simulation
    seldom finds this half of the race: not in seeds 0-2999 with the core's
    half alone reverted; with both halves reverted, at seed 939.)"""
    core, res = _reclaim_setup()
    got: list[Any] = []
    plain = Resource.handed_out

    class Watched(Resource):
        """The resource, its first `handed_out` read by the core raced."""

        __slots__ = ()

        @property  # type: ignore[override]
        def handed_out(self) -> bool:
            value: bool = plain.__get__(self)
            if not got:  # the core's read, then the caller's hit
                got.append(None)
                got.append(core.published.hit("a"))
            return value

        @handed_out.setter
        def handed_out(self, value: bool) -> None:
            plain.__set__(self, value)

    res.__class__ = Watched
    core.acquire(1.0, 2, "b", None, {})  # at the cap: a reclaim
    assert got[1] is res.obj  # the hit ran inside the reclaim, and got it
    assert _take(core, fx.Close) == []
    assert core.n["reclaimed"] == 0
    assert core.published.view["a"] is res  # published again


def test_a_checkin_message_comes_after_its_leases_checkout_note() -> None:
    """Simulation seed 430, step 1686 (SPEC 8: never closed under a holder): a
    hit-path checkout left its note, a `Notes` message another caller was
    about to send on its way; the holder then checked in by message, which
    the core read first: it counted one holder less than there were and
    closed the retiring resource under the other holder."""
    core = _core(max_open_resources=1)
    core.prewarm(0.0, 1, ["k"])
    (start,) = _take(core, fx.Start)
    core.ready(0.0, start.rid, start.attempt, Res())
    core.effects.clear()
    core.acquire(0.0, 2, "k", None, {}, hold=True)
    (first,) = _take(core, fx.Reply)  # a lease by message: counted at once
    core.published.noted = WOKEN  # another caller's `Notes` is on its way
    second = core.published.take("k")
    assert isinstance(second, Lease)  # its OUT note is not read yet
    core.release(1.0, 3, "k")  # retired, with two holders
    core.effects.clear()
    core.checkin(2.0, 4, second, broken=False)  # by message, before the note
    assert _take(core, fx.Close) == []
    assert core.snapshot().holders == 1
    core.checkin(3.0, 5, first.value, broken=False)
    assert [c.rid for c in _take(core, fx.Close)] == [start.rid]


def test_a_hit_that_finds_the_mark_set_rechecks_retired() -> None:
    """Rule 2 (seed 939 with 2,500 seeds from 700): two callers read a shared
    resource in `view`; a reclaim takes it out and reads `handed_out` unset;
    the first caller then marks it, re-reads `view` and backs off; the
    second, finding the mark set, skipped its re-check and used the resource
    the reclaim was closing. It must check `retired` instead."""
    core = _core(max_open_resources=1, reclaim_idle=True)
    core.prewarm(0.0, 1, ["k0"])
    (start,) = _take(core, fx.Start)
    core.ready(0.0, start.rid, start.attempt, Res())
    res = core.published.view["k0"]  # both callers read it here
    core.effects.clear()
    core.acquire(1.0, 2, "k1", None, {})  # waits for a slot: k0's is reclaimed
    assert [c.rid for c in _take(core, fx.Close)] == [start.rid]
    res.handed_out = True  # the first caller's mark; it then backs off

    class Stale(dict[Any, Any]):
        """`view` as the second caller saw it, before the reclaim."""

        def __getitem__(self, key: Any) -> Any:
            return res

    pub = core.published
    pub.view = Stale()
    assert pub.hit("k0") is MISS
