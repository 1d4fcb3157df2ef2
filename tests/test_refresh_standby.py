"""A refresh's replacement in the lifecycle table: `STANDBY` and its `swap`.

The table's new edges (and only they) are legal; driven by hand, the pure
core moves a refresh's replacement `CREATING --standby--> STANDBY --swap-->
OPEN` while what it replaces retires, and a replacement whose refresh is
given up while it is being made (its key released, the pool closed, its
actor stopped unasked) ends through its creation's own edges and the one
exit, `GONE`, without ever entering `STANDBY`.
"""

from __future__ import annotations

from typing import Any

import pytest
from core_kit import Res, make_core, take

from pooler_actors import _effects as fx
from pooler_actors._core import PoolCore
from pooler_actors._lifecycle import (
    COUNTED,
    TRANSITIONS,
    IllegalTransition,
    Phase,
    advance,
)
from pooler_actors.lease import Lease

EVENTS = sorted({event for _phase, event in TRANSITIONS})
Move = tuple[int, str, str, str]  # rid, phase before, event, phase after

# --- the table ----------------------------------------------------------------


def test_a_ready_replacement_enters_standby_and_is_swapped_in() -> None:
    assert advance(Phase.CREATING, "standby") is Phase.STANDBY
    assert advance(Phase.STANDBY, "swap") is Phase.OPEN


def test_standby_has_one_way_in_and_one_way_out() -> None:
    into = [(p, e) for (p, e), after in TRANSITIONS.items() if after is Phase.STANDBY]
    out = [(e, after) for (p, e), after in TRANSITIONS.items() if p is Phase.STANDBY]
    assert into == [(Phase.CREATING, "standby")]
    assert out == [("swap", Phase.OPEN)]


@pytest.mark.parametrize("event", [e for e in EVENTS if e != "swap"])
def test_a_standby_takes_no_other_edge(event: str) -> None:
    with pytest.raises(IllegalTransition, match="from 'standby'"):
        advance(Phase.STANDBY, event)


@pytest.mark.parametrize(
    "phase", [p for p in Phase if p is not Phase.CREATING], ids=lambda p: p.value
)
def test_only_a_creation_becomes_a_standby(phase: Phase) -> None:
    with pytest.raises(IllegalTransition, match="on 'standby'"):
        advance(phase, "standby")


@pytest.mark.parametrize(
    "phase", [p for p in Phase if p is not Phase.STANDBY], ids=lambda p: p.value
)
def test_only_a_standby_is_swapped_in(phase: Phase) -> None:
    with pytest.raises(IllegalTransition, match="on 'swap'"):
        advance(phase, "swap")


def test_a_standby_takes_a_slot_under_the_cap() -> None:
    assert Phase.STANDBY in COUNTED


def test_every_phase_is_reached_and_reaches_the_one_exit() -> None:
    def reach(start: set[Phase], edges: list[tuple[Phase, Phase]]) -> set[Phase]:
        seen = set(start)
        while grown := {b for a, b in edges if a in seen} - seen:
            seen |= grown
        return seen

    edges = [(phase, after) for (phase, _event), after in TRANSITIONS.items()]
    born = {Phase.RESERVING, Phase.CREATING}  # with and without a fleet cap
    assert reach(born, edges) == set(Phase)
    backward = [(b, a) for a, b in edges]
    assert reach({Phase.GONE}, backward) == set(Phase)
    assert not [e for (p, e) in TRANSITIONS if p is Phase.GONE]


# --- the core, by hand ----------------------------------------------------------


def record(core: PoolCore) -> list[Move]:
    """Every move along the table from now on (the inventory's `move`, wrapped)."""
    moves: list[Move] = []
    move = core.inventory.move

    def moved(now: float, res: Any, event: str) -> None:
        before = res.phase
        move(now, res, event)
        moves.append((res.rid, before.value, event, res.phase.value))

    core.inventory.move = moved  # type: ignore[method-assign]
    return moves


def of(moves: list[Move], rid: int) -> list[tuple[str, str, str]]:
    return [(before, event, after) for r, before, event, after in moves if r == rid]


def open_one(core: PoolCore, key: str = "k") -> tuple[fx.Start, Lease[Any, Any]]:
    """A resource of `key`, opened and checked out by caller 1."""
    core.acquire(0.0, 1, key, None, {}, hold=True)
    (start,) = take(core, fx.Start)
    core.ready(0.0, start.rid, start.attempt, Res())
    (reply,) = take(core, fx.Reply)
    assert isinstance(reply.value, Lease)
    return start, reply.value


def replies(effects: list[fx.Effect]) -> dict[int, Any]:
    return {e.cid: e.value for e in effects if isinstance(e, fx.Reply)}


def test_a_refresh_s_replacement_is_a_standby_then_swapped_in() -> None:
    # Exclusive, one holder each: the old resource is held, so a second
    # caller of the key joins the replacement while it is being made.
    core = make_core(max_open_resources=2, max_holders=1)
    old, lease = open_one(core)
    moves = record(core)
    core.refresh(1.0, 2, "k")
    (new,) = take(core, fx.Start)
    standby, replaced = core.resources[new.rid], core.resources[old.rid]
    assert standby.phase is Phase.CREATING and standby.replaces == [replaced]
    assert standby.mapped and replaced.mapped  # both in the key map
    assert core.snapshot().open_resources == 2  # the standby takes a slot
    core.acquire(1.0, 3, "k", None, {}, hold=True)  # joins the standby
    assert take(core, fx.Start) == [] and standby.joiners

    core.ready(2.0, new.rid, new.attempt, Res())
    effects = list(core.effects)
    core.effects.clear()
    assert of(moves, new.rid) == [
        ("creating", "standby", "standby"),
        ("standby", "swap", "open"),
    ]
    answered = replies(effects)
    assert answered[2] is True  # the refresh: replaced in place
    assert answered[3].rid == new.rid  # its joiner got the new one
    assert (standby.phase, standby.mapped) == (Phase.OPEN, True)
    assert standby.replaces == []
    # The old one left service through `retire`: held, it drains.
    assert of(moves, old.rid) == [("open", "drain", "retiring")]
    assert not replaced.mapped and replaced.reason == "refreshed"
    assert [r.rid for r in core.keys["k"].resources] == [new.rid]

    core.checkin(3.0, 4, lease, broken=False)
    assert take(core, fx.Close) == [fx.Close(old.rid)]
    core.closed(3.0, old.rid, old.attempt, None)
    assert of(moves, old.rid)[-2:] == [
        ("retiring", "close", "closing"),
        ("closing", "closed", "gone"),
    ]
    assert old.rid not in core.resources  # the one exit
    assert core.snapshot().open_resources == 1


def test_a_standby_whose_key_is_released_while_it_is_made_never_swaps() -> None:
    core = make_core(max_open_resources=2, max_holders=1)
    old, lease = open_one(core)
    core.checkin(0.0, 2, lease, broken=False)
    moves = record(core)
    core.refresh(1.0, 3, "k")
    (new,) = take(core, fx.Start)
    standby = core.resources[new.rid]
    core.release(1.5, 4, "k")  # gives the refresh up: out of the key map
    assert not standby.mapped and standby.replaces == []
    assert standby.phase is Phase.CREATING  # its factory still runs
    assert take(core, fx.Close) == [fx.Close(old.rid)]
    core.closed(1.5, old.rid, old.attempt, None)

    core.ready(2.0, new.rid, new.attempt, Res())  # opens as a plain creation
    effects = list(core.effects)
    core.effects.clear()
    assert [e for e in effects if isinstance(e, fx.Close)] == [fx.Close(new.rid)]
    assert replies(effects) == {3: False}  # the refresh: nothing replaced
    core.closed(2.5, new.rid, new.attempt, None)
    assert replies(core.effects) == {4: True}  # the release: one was open
    core.effects.clear()
    assert of(moves, new.rid) == [
        ("creating", "ready", "open"),
        ("open", "close", "closing"),
        ("closing", "closed", "gone"),
    ]
    assert not core.resources and not core.keys
    assert core.snapshot().open_resources == 0


def test_a_standby_in_backoff_whose_key_is_released_ends_at_once() -> None:
    core = make_core(max_open_resources=2, max_holders=1)
    old, lease = open_one(core)
    moves = record(core)
    core.refresh(1.0, 2, "k")
    (new,) = take(core, fx.Start)
    core.failed(1.2, new.rid, new.attempt, ConnectionError("down"))
    assert core.resources[new.rid].phase is Phase.BACKOFF
    core.release(1.5, 3, "k")
    assert of(moves, new.rid) == [
        ("creating", "backoff", "backoff"),
        ("backoff", "failed", "gone"),
    ]
    assert new.rid not in core.resources
    assert replies(core.effects)[2] is False
    core.effects.clear()
    core.checkin(2.0, 4, lease, broken=False)  # the old one drained: it closes
    assert take(core, fx.Close) == [fx.Close(old.rid)]


def test_a_standby_made_while_the_pool_closes_ends_through_the_one_exit() -> None:
    core = make_core(max_open_resources=2, max_holders=1)
    old, lease = open_one(core)
    core.checkin(0.0, 2, lease, broken=False)
    moves = record(core)
    core.refresh(1.0, 3, "k")
    (new,) = take(core, fx.Start)
    core.close(1.5, 4)
    standby = core.resources[new.rid]
    assert not standby.mapped and standby.replaces == []
    assert take(core, fx.Close) == [fx.Close(old.rid)]
    core.closed(1.6, old.rid, old.attempt, None)
    core.ready(2.0, new.rid, new.attempt, Res())
    assert replies(core.effects) == {3: False}  # the refresh: nothing replaced
    assert take(core, fx.Close) == [fx.Close(new.rid)]
    core.closed(2.1, new.rid, new.attempt, None)
    effects = list(core.effects)
    assert replies(effects) == {4: None}  # the close: the pool stopped
    assert any(isinstance(e, fx.Stopped) for e in effects)
    assert of(moves, new.rid) == [
        ("creating", "ready", "open"),
        ("open", "close", "closing"),
        ("closing", "closed", "gone"),
    ]
    assert not core.resources


def test_a_standby_whose_factory_hangs_while_the_pool_closes_is_abandoned() -> None:
    core = make_core(max_open_resources=2, max_holders=1, close_timeout=1.0)
    old, lease = open_one(core)
    core.checkin(0.0, 2, lease, broken=False)
    moves = record(core)
    core.refresh(1.0, 3, "k")
    (new,) = take(core, fx.Start)
    core.close(1.5, 4)
    core.closed(1.6, old.rid, old.attempt, None)
    core.advance(2.5)  # close_timeout: its factory never returned
    assert fx.Close(new.rid) in core.effects
    core.effects.clear()
    core.closed(3.0, new.rid, new.attempt, None)  # its actor ends at last
    assert of(moves, new.rid) == [
        ("creating", "timed_out", "abandoned"),
        ("abandoned", "closed", "gone"),
    ]
    assert not core.resources


def test_a_standby_whose_actor_stops_unasked_ends_and_the_old_one_serves() -> None:
    core = make_core(max_open_resources=2, max_holders=1)
    old, lease = open_one(core)
    core.checkin(0.0, 2, lease, broken=False)
    moves = record(core)
    core.refresh(1.0, 3, "k")
    (new,) = take(core, fx.Start)
    core.closed(1.5, new.rid, new.attempt, None)  # lost before it was ready
    assert of(moves, new.rid) == [("creating", "closed", "gone")]
    assert replies(core.effects) == {3: False}
    core.effects.clear()
    assert of(moves, old.rid) == []  # never retired: it still serves
    core.acquire(2.0, 4, "k", None, {}, hold=True)
    (reply,) = take(core, fx.Reply)
    assert reply.value.rid == old.rid
