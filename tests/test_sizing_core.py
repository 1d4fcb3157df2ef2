"""Sizing in the pure core (SPEC 12): resize, keys kept warm, pop_stats.

Each test drives `PoolCore` alone with a made-up clock and reads its effects.
"""

from __future__ import annotations

from typing import Any

import pytest
from core_kit import Res
from core_kit import make_core as _core
from core_kit import take as _take

from pooler_actors import _effects as fx
from pooler_actors._core import PoolCore
from pooler_actors._lifecycle import Phase
from pooler_actors.errors import PoolClosedError
from pooler_actors.lease import Lease


def _replies(core: PoolCore) -> dict[int, Any]:
    return {e.cid: e for e in _take(core, fx.Reply | fx.Fail)}  # type: ignore[arg-type]


def _lease(core: PoolCore, now: float, cid: int, key: str) -> Lease[Any, Any]:
    """Check a lease of `key` out, creating its resource if needed."""
    core.acquire(now, cid, key, None, {}, hold=True)
    starts = [e for e in core.effects if isinstance(e, fx.Start)]
    core.effects.clear()
    for start in starts:
        core.ready(now, start.rid, start.attempt, Res())
    (reply,) = [r for r in _take(core, fx.Reply) if r.cid == cid]
    assert isinstance(reply.value, Lease)
    return reply.value


def _phase(core: PoolCore, key: str) -> list[Phase]:
    return [r.phase for r in core.resources.values() if r.key == key]


def test_growing_serves_a_caller_waiting_for_a_slot_at_once() -> None:
    core = _core(max_open_resources=1, max_holders=1)
    _lease(core, 0.0, 1, "a")
    core.acquire(1.0, 2, "b", None, {}, hold=True)
    assert not _take(core, fx.Start)  # no slot: it waits
    core.resize(2.0, 3, 2)
    effects = list(core.effects)
    assert [e.key for e in effects if isinstance(e, fx.Start)] == ["b"]
    assert any(isinstance(e, fx.Reply) and e.cid == 3 for e in effects)
    assert core.snapshot().max_open_resources == 2


def test_shrinking_closes_idle_resources_least_recently_used_first() -> None:
    core = _core(max_open_resources=3, max_holders=1)
    leases = {k: _lease(core, 0.0, i, k) for i, k in enumerate("abc", 1)}
    core.checkin(2.0, 10, leases["b"], broken=False)  # b: used at 2
    core.checkin(1.0, 11, leases["a"], broken=False)  # a: used at 1, before b
    core.effects.clear()
    core.resize(3.0, 12, 2)  # one too many: a, the least recently used
    closes = [
        core.resources[e.rid].key for e in core.effects if isinstance(e, fx.Close)
    ]
    assert closes == ["a"]
    assert 12 not in _replies(core)  # done once a is closed
    (rid,) = [r.rid for r in core.resources.values() if r.key == "a"]
    core.closed(3.5, rid, 0, None)
    assert _replies(core)[12].value is None
    core.resize(4.0, 13, 1)  # b, idle, goes before c, held
    assert _phase(core, "b") == [Phase.CLOSING]
    assert _phase(core, "c") == [Phase.OPEN]


def test_a_held_resource_over_a_shrunk_cap_closes_at_its_checkin() -> None:
    core = _core(max_open_resources=2, max_holders=1, drain_timeout=1.0)
    first = _lease(core, 0.0, 1, "a")
    _lease(core, 1.0, 2, "b")
    core.resize(2.0, 3, 1)
    # a, held and least recently used, retires; nothing is closed under it,
    # and no drain timer will close it later.
    assert not [e for e in core.effects if isinstance(e, fx.Close)]
    assert _replies(core)[3].value is None  # retiring with holders: done
    (res,) = [r for r in core.resources.values() if r.key == "a"]
    assert res.phase is Phase.RETIRING and "drain" not in res.timers
    assert core.used == 2 > core.cap  # exceeded only by a retiring resource
    core.acquire(3.0, 4, "c", None, {}, hold=True)  # waits: used >= cap
    assert not _take(core, fx.Start)
    core.advance(100.0)
    assert res.phase is Phase.RETIRING  # still not closed under its holder
    core.checkin(101.0, 5, first, broken=False)
    assert [e.rid for e in _take(core, fx.Close)] == [res.rid]
    core.closed(101.5, res.rid, 0, None)
    assert core.used == 1
    assert not _take(core, fx.Start)  # c still waits: used == cap


def test_a_pool_closing_leaves_resized_held_resources_to_their_holders() -> None:
    """A resize retired a held resource (no drain timer while the pool is
    open); the close then waits its time for holders and leaves each held
    resource to its holder: closed at its checkin, never under it."""
    core = _core(max_open_resources=2, max_holders=1, drain_timeout=1.0)
    a = _lease(core, 0.0, 1, "a")
    b = _lease(core, 1.0, 2, "b")
    core.resize(2.0, 3, 1)
    core.close(3.0, 4)
    core.advance(4.0)  # the close's wait for holders is over
    assert _take(core, fx.Close) == []  # never under a holder
    core.checkin(5.0, 5, a, broken=False)
    core.checkin(5.0, 6, b, broken=False)
    assert len(_take(core, fx.Close)) == 2


@pytest.mark.parametrize("closing", [False, True])
def test_a_refused_resize_changes_nothing(closing: bool) -> None:
    core = _core(max_open_resources=4, max_per_key=3)
    if closing:
        core.close(0.0, 1)
        core.effects.clear()
    core.resize(1.0, 2, 2)
    (fail,) = _take(core, fx.Fail)
    if closing:
        assert isinstance(fail.error, PoolClosedError)
    else:
        assert isinstance(fail.error, ValueError)
        assert "max_per_key (3)" in str(fail.error)
    assert core.cap == 4


def test_warm_keys_are_created_at_start_as_far_as_the_cap_allows() -> None:
    core = _core(max_open_resources=2, keep_warm=("a", "b", "c"))
    starts = _take(core, fx.Start)
    assert [s.key for s in starts] == ["a", "b"]
    for s in starts:
        core.ready(0.5, s.rid, s.attempt, Res())
    assert not _take(core, fx.Start)
    core.release(1.0, 1, "a")  # a closed: made again (warm keys in order)
    (close,) = _take(core, fx.Close)
    core.closed(1.5, close.rid, 0, None)
    assert [s.key for s in _take(core, fx.Start)] == ["a"]
    core.resize(2.0, 2, 3)
    assert [s.key for s in _take(core, fx.Start)] == ["c"]


def test_a_waiting_caller_comes_before_a_warm_key() -> None:
    core = _core(max_open_resources=1, max_holders=1, keep_warm=("w",))
    (start,) = _take(core, fx.Start)
    core.ready(0.5, start.rid, start.attempt, Res())
    core.acquire(1.0, 1, "x", None, {}, hold=True)  # reclaims w for x
    (close,) = _take(core, fx.Close)
    core.closed(1.5, close.rid, 0, None)
    assert [s.key for s in _take(core, fx.Start)] == ["x"]


def test_a_warm_key_whose_factory_fails_backs_off() -> None:
    core = _core(create_retries=0, create_backoff=1.0, keep_warm=("a",))
    (start,) = _take(core, fx.Start)
    core.failed(0.1, start.rid, start.attempt, OSError("down"))
    assert not _take(core, fx.Start)  # no spin
    assert core.next_deadline() == pytest.approx(1.1)  # 1.0 * (0.5 + 0.5)
    core.advance(1.1)
    (start,) = _take(core, fx.Start)
    core.failed(1.2, start.rid, start.attempt, OSError("down"))
    assert core.next_deadline() == pytest.approx(3.2)  # doubled
    core.advance(3.2)
    (start,) = _take(core, fx.Start)
    core.ready(3.3, start.rid, start.attempt, Res())
    assert core.sizing.failures == {}  # opened: the next failure waits 1 s again


def test_pop_stats_counts_since_its_last_call_and_stats_stays_cumulative() -> None:
    core = _core(max_open_resources=2, max_holders=1)
    _lease(core, 0.0, 1, "a")
    core.pop_stats(2)
    first = _replies(core)[2].value
    assert (first.acquires, first.created, first.holders) == (1, 1, 1)
    _lease(core, 1.0, 3, "b")
    core.pop_stats(4)
    second = _replies(core)[4].value
    assert (second.acquires, second.created, second.checkouts) == (1, 1, 1)
    assert (second.holders, second.open_resources) == (2, 2)  # gauges: now
    core.pop_stats(5)
    assert _replies(core)[5].value.acquires == 0
    core.stats(6)
    assert _replies(core)[6].value.acquires == 2


def test_resize_and_warm_backoff_are_logged() -> None:
    core = _core(max_open_resources=2, create_retries=0, keep_warm=("a",))
    (start,) = _take(core, fx.Start)
    core.failed(0.1, start.rid, start.attempt, OSError("down"))
    core.resize(0.2, 1, 1)
    logs = {e.event: e.fields for e in core.effects if isinstance(e, fx.Log)}
    assert logs["pool.warm.backoff"]["failures"] == 1
    assert logs["pool.resized"] == {"max_open_resources": 1, "was": 2, "retired": 0}
