"""The deterministic simulation of the core and its counter
(`tests/simulation.py`), in short.

`make sim` runs it for over a million steps; here a fixed set of seeds runs
in a few seconds, a seed replays exactly, and the simulation is shown to
catch defects planted in the core (two of the old pool's) and in the counter
(each breaking one of `pooler_actors._counter`'s invariants), one for each
of its checkers of a former blind spot, and the library bugs it found (still
there while they are excused in `simulation.KNOWN_BUGS`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

import pytest
import simulation
from simulation import SimResult, run_seed, run_seeds

from pooler_actors._core import KeyEntry, PoolCore, Resource
from pooler_actors._counter import Counter
from pooler_actors._counter_blocks import Block, Blocks
from pooler_actors._counter_state import IN
from pooler_actors._effects import Reply
from pooler_actors._health import Health
from pooler_actors._inventory import Inventory
from pooler_actors._placement import Placement
from pooler_actors._waiters import Waiters

SIMULATION = Path(simulation.__file__)
FIXED_SEEDS = range(40)
SEARCH_SEEDS = range(120)  # a re-introduced defect must show within these


def _first_violation(seeds: range) -> SimResult:
    results = run_seeds(seeds, stop_at_first=True)
    found = results[-1]
    assert found.violation, f"no violation in {sum(r.steps for r in results)} steps"
    # Print where, for the record (pytest -s shows it).
    print(f"\nfound at seed {found.seed}, step {found.steps}: {found.violation}")
    return found


def test_fixed_seeds_keep_every_invariant() -> None:
    results = run_seeds(FIXED_SEEDS)
    failures = [r for r in results if r.violation]
    assert not failures, "\n".join(
        f"seed {r.seed} step {r.steps}: {r.violation}\n" + "\n".join(r.trace)
        for r in failures
    )
    assert sum(r.steps for r in results) > 50_000


def test_a_seed_replays_exactly() -> None:
    first, again = run_seed(7), run_seed(7)
    assert first == again
    assert first.steps > 1000


def test_the_command_line_output_is_the_same_in_every_process() -> None:
    """String hashing differs between processes; the simulation never
    depends on it, so a seed replays exactly in a new interpreter."""

    def run(hash_seed: str) -> str:
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        env.pop("SEED", None)
        done = subprocess.run(
            [sys.executable, str(SIMULATION), "--seeds", "4", "--first", "30"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=env,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    out = run("1")
    assert out == run("2")
    assert out.splitlines()[-1].endswith(" steps, 4 seeds, 0 violations")


def _forget_withdrawals(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 3 of issue 10 put back: the core ignores a caller's give-up."""

    def give_up(self: Waiters, now: float, cid: int) -> None:
        return None

    monkeypatch.setattr(Waiters, "give_up", give_up)


def _hide_standbys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 2 of issue 10 put back: the core's placement does not see a
    refresh's replacement while it is being made."""
    original = Placement.joinable

    def joinable(self: Placement, entry: KeyEntry, hold: bool) -> Resource | None:
        visible = [r for r in entry.resources if not r.replaces]
        return original(self, KeyEntry(entry.key, visible), hold)

    monkeypatch.setattr(Placement, "joinable", joinable)


def test_the_simulation_catches_a_withdrawn_caller_left_in_the_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Defect 3: a caller that gave up stayed queued and was later granted."""
    _forget_withdrawals(monkeypatch)
    found = _first_violation(SEARCH_SEEDS)
    violation = str(found.violation)  # granted later, or its record kept
    assert "after its give-up" in violation or "give-up records" in violation


def test_the_simulation_catches_a_refresh_invisible_to_callers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Defect 2: while a refresh's replacement was being made (its old
    resource evicted meanwhile), callers of the key did not see it: they
    were not woken, or made a second factory call."""
    _hide_standbys(monkeypatch)
    found = _first_violation(SEARCH_SEEDS)
    assert "has a place" in str(found.violation)


def test_the_simulation_catches_a_second_factory_call_for_a_refreshed_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Defect 2 as the first version of the core had it: the replacement
    neither joinable nor counted toward `max_per_key`."""

    def count(self: Placement, entry: KeyEntry) -> int:
        return sum(1 for r in entry.resources if not r.replaces)

    _hide_standbys(monkeypatch)
    monkeypatch.setattr(Placement, "count", count)
    _first_violation(SEARCH_SEEDS)


def test_the_simulation_catches_a_swap_that_keeps_the_replaced_resource(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A refresh's standby is swapped in (`STANDBY --swap--> OPEN`) but what
    it replaces stays in service: the swap does not see `replaces`."""
    swap = Inventory.swap

    def forgetful(self: Inventory, now: float, res: Resource) -> None:
        res.replaces = []  # hidden from the real swap: nothing retires
        swap(self, now, res)

    monkeypatch.setattr(Inventory, "swap", forgetful)
    found = _first_violation(SEARCH_SEEDS)
    assert "after its refresh's replacement was swapped in" in str(found.violation)


def test_the_simulation_catches_a_close_under_a_holder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SPEC 8: a resource is never closed under its holder. The core forgets
    the holders when it retires a resource here."""
    original = Inventory.retire

    def retire(
        self: Inventory, now: float, res: Resource, reason: str, *, owned: bool = False
    ) -> None:
        holders, res.holders = res.holders, 0
        original(self, now, res, reason, owned=owned)
        res.holders = holders

    monkeypatch.setattr(Inventory, "retire", retire)
    found = _first_violation(SEARCH_SEEDS)
    assert "uses it" in str(found.violation)


# --- the counter: each defect breaks one of its invariants ---------------------
#
# Each is planted through a hook around the real method (it calls it, then
# does the wrong thing, or hides one thing from it), never a copy of it.


def test_the_simulation_catches_a_checkin_back_in_the_idle_list_unnoted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Invariant 2 (one place) and 3 (nothing unnoted): an exclusive checkin
    puts its resource back in the idle list without its note."""
    checkin = Counter._checkin

    def unnoted(self: Counter, lease: Any, broken: bool, answer: list[Any]) -> bool:
        ring = checkin(self, lease, broken, answer)
        if self.notes and self.notes[-1][0] == IN and self.notes[-1][2] is lease:
            deque.pop(self.notes)  # the note is lost (the model saw it go in)
        return ring

    monkeypatch.setattr(Counter, "_checkin", unnoted)
    found = _first_violation(SEARCH_SEEDS)
    assert "holders" in str(found.violation)


def test_the_simulation_catches_an_interrupted_take_that_loses_the_resource(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """All or nothing: a take interrupted inside undoes its note but forgets
    to put the resource back in the idle list: nobody has it."""
    take_idle = Counter._take_idle

    def forgetful(self: Counter, key: Any, context: Any) -> Any:
        idle = self.idle.get(key)
        res = idle[-1] if idle else None
        try:
            return take_idle(self, key, context)
        except BaseException:
            if idle is not None and res in idle:
                idle.remove(res)  # the undo forgot it
            raise

    monkeypatch.setattr(Counter, "_take_idle", forgetful)
    found = _first_violation(range(400))  # an interrupt inside a take: rarer
    assert "neither idle nor held" in str(found.violation) or "liveness" in str(
        found.violation
    )


def test_the_simulation_catches_a_drain_that_drops_the_hits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Invariant 3: the supervisor's `drain` loses the bare hits (no debug
    context) it takes from the counter: the stats miss them."""
    drain = Counter.drain

    def lossy(self: Counter, *, woken: bool = False) -> Any:
        notes, _hits, *blocks = drain(self, woken=woken)
        return notes, [], *blocks

    monkeypatch.setattr(Counter, "drain", lossy)
    found = _first_violation(SEARCH_SEEDS)
    assert "stats.acquires" in str(found.violation) or "stats.hits" in str(
        found.violation
    )


def test_the_simulation_catches_a_core_closing_what_it_did_not_take(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Invariant 2 (one place): the core closes, pings or expires an idle
    exclusive resource only once it has taken it from its idle list; here
    every claim succeeds, whoever has the resource."""

    def claim(self: PoolCore, res: Resource) -> bool:
        return True

    monkeypatch.setattr(PoolCore, "_claim", claim)
    found = _first_violation(SEARCH_SEEDS)
    assert "Close of" in str(found.violation) or "pinged" in str(found.violation)


def test_the_simulation_catches_a_lost_lease_never_given_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A lease collected while out (its `LeaseLost` message) is ignored by
    the core: its holder place is never freed."""

    def ignore(self: PoolCore, now: float, lease: Any) -> None:
        return None

    monkeypatch.setattr(PoolCore, "lost", ignore)
    found = _first_violation(SEARCH_SEEDS)
    assert "liveness" in str(found.violation) or "retiring" in str(found.violation)


# --- the block path (`_counter_blocks`): each defect breaks its invariant ------


def test_the_simulation_catches_a_leave_that_keeps_the_block_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The block path's invariant: a block's id is counted only while its
    place is set. Here `leave` clears the place and forgets to take the id
    out: the resource would count a holder nobody is, for ever."""
    leave = Blocks.leave

    def forgetful(
        self: Blocks, block: Block, broken: bool = False, r: str = ""
    ) -> None:
        place = block.place
        leave(self, block, broken, r)
        if (
            place is not None
            and block.place is None
            and place[1] not in place[0].blocks
        ):
            dict.__setitem__(place[0].blocks, place[1], None)  # the id stays in

    monkeypatch.setattr(Blocks, "leave", forgetful)
    found = _first_violation(SEARCH_SEEDS)
    assert "counts block" in str(found.violation), found.violation


def test_the_simulation_catches_a_retire_blind_to_blocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SPEC 8 for blocks: a resource is never closed under a block. Here
    `retire` does not see the blocks inside (`held` without `blocks`)."""
    retire = Inventory.retire

    def blind(
        self: Inventory, now: float, res: Resource, reason: str, *, owned: bool = False
    ) -> None:
        blocks, res.blocks = res.blocks, {}
        try:
            retire(self, now, res, reason, owned=owned)
        finally:
            res.blocks = blocks

    monkeypatch.setattr(Inventory, "retire", blind)
    found = _first_violation(SEARCH_SEEDS)
    violation = str(found.violation)
    assert "Close of resource" in violation and "<block" in violation, violation


def test_the_simulation_catches_block_exits_the_core_never_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Invariant 3 for blocks: what a block's exit leaves (`used`) is read
    as an `IN` note is. Here the core ignores it: a retiring resource whose
    last block left is never closed."""

    def ignore(self: Inventory, now: float, used: Any) -> None:
        return None

    monkeypatch.setattr(Inventory, "blocks_left", ignore)
    found = _first_violation(SEARCH_SEEDS)
    violation = str(found.violation)
    assert "waiting for nobody" in violation or "idle" in violation, violation


def test_the_simulation_catches_a_dropped_block_never_taken_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A block dropped with its place set (its `__exit__` never ran) comes
    back when collected, as a lease of its id. Here the core's `lost`
    checks that lease in without taking the block's id out."""

    def keep(self: Blocks, res: Any, lid: int) -> None:
        return None

    monkeypatch.setattr(Blocks, "_unhold", keep)
    found = _first_violation(range(400))  # a block dropped: rarer
    violation = str(found.violation)
    assert "still counted" in violation or "liveness" in violation, violation


def test_the_simulation_catches_blocks_entered_but_never_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Invariant 3: a block's entry counts an acquire, a hit and a checkout
    (`entered`, read with the notes). Here the supervisor's read loses it."""
    drain = Counter.drain

    def lossy(self: Counter, *, woken: bool = False) -> Any:
        notes, hits, used, _entered = drain(self, woken=woken)
        return notes, hits, used, 0

    monkeypatch.setattr(Counter, "drain", lossy)
    found = _first_violation(SEARCH_SEEDS)
    assert "stats.acquires" in str(found.violation), found.violation


# --- blind spots: each checker shown to catch a defect it alone sees -----------


def test_the_simulation_catches_an_idle_expiry_of_a_held_resource(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(a) Idle expiry never takes a held resource; here it does not see the
    holders."""
    on_idle = Inventory.on_idle

    def blind(self: Inventory, now: float, rid: int) -> None:
        res = self.resources.get(rid)
        if res is None:
            return on_idle(self, now, rid)
        holders, tokens, res.holders, res.tokens = res.holders, res.tokens, 0, []
        try:
            on_idle(self, now, rid)
        finally:
            res.holders, res.tokens = res.holders + holders, tokens + res.tokens

    monkeypatch.setattr(Inventory, "on_idle", blind)
    found = _first_violation(SEARCH_SEEDS)
    assert "taken by max_idle_time" in str(found.violation)


def test_the_simulation_catches_a_reclaim_of_a_held_resource(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(a) Reclaim takes idle resources only; here it does not see holders."""
    reclaim = Placement.reclaim

    def blind(self: Placement, now: float) -> None:
        resources = self.core.resources
        saved = {r.rid: (r.holders, r.tokens) for r in resources.values()}
        for res in resources.values():
            res.holders, res.tokens = 0, []
        try:
            reclaim(self, now)
        finally:
            for res in resources.values():
                holders, tokens = saved.get(res.rid, (0, []))
                res.holders, res.tokens = res.holders + holders, tokens + res.tokens

    monkeypatch.setattr(Placement, "reclaim", blind)
    found = _first_violation(SEARCH_SEEDS)
    violation = str(found.violation)  # seen as it leaves service, or as it closes
    assert "taken by reclaimed" in violation or "uses it" in violation, violation


def test_the_simulation_catches_a_reclaim_of_an_acquired_resource(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(c) A resource a plain `acquire()` got (at the counter, or from the
    core) is never reclaimed; here reclaim's choice of victim forgets
    `handed_out` (a hit racing a reclaim is not reachable: a resource
    becomes reclaimable only in an event that reads every note first)."""
    reclaim = Placement.reclaim

    def blind(self: Placement, now: float) -> None:
        marked = [r for r in self.core.resources.values() if r.handed_out]
        for res in marked:
            res.handed_out = False
        try:
            reclaim(self, now)
        finally:
            for res in marked:
                res.handed_out = True

    monkeypatch.setattr(Placement, "reclaim", blind)
    found = _first_violation(SEARCH_SEEDS)
    assert "acquire() returned it" in str(found.violation)


def test_the_simulation_catches_a_health_timer_not_re_armed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(d) The health timer re-arms itself when it fires; here it does not."""
    on_health = Health.on_timer

    def once(self: Health, now: float, ident: int) -> None:
        on_health(self, now, ident)
        self.timers.cancel(self.timer)

    monkeypatch.setattr(Health, "on_timer", once)
    found = _first_violation(SEARCH_SEEDS)
    assert "health timer" in str(found.violation)


def test_the_simulation_catches_a_retiring_resource_without_a_drain_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(d) A resource retiring with holders has a drain timer; here none."""
    retire = Inventory.retire

    def timeless(
        self: Inventory, now: float, res: Resource, reason: str, *, owned: bool = False
    ) -> None:
        retire(self, now, res, reason, owned=owned)
        self.timers.cancel(res.timers.pop("drain", None))

    monkeypatch.setattr(Inventory, "retire", timeless)
    found = _first_violation(SEARCH_SEEDS)
    assert "drain timer" in str(found.violation)


def test_the_simulation_catches_a_drain_timeout_not_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(e) `stats.drain_timeouts` against the model's count."""
    on_drain = Inventory.on_drain_timeout

    def uncounted(self: Inventory, now: float, rid: int) -> None:
        before = self.n["drain_timeouts"]
        on_drain(self, now, rid)
        self.n["drain_timeouts"] = before

    monkeypatch.setattr(Inventory, "on_drain_timeout", uncounted)
    found = _first_violation(SEARCH_SEEDS)
    assert "stats.drain_timeouts" in str(found.violation)


def test_the_simulation_catches_a_give_up_not_counted_as_a_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(e) `stats.timeouts` against the model's count."""
    give_up = Waiters.give_up

    def uncounted(self: Waiters, now: float, cid: int) -> None:
        before = self.n["timeouts"]
        give_up(self, now, cid)
        self.n["timeouts"] = before

    monkeypatch.setattr(Waiters, "give_up", uncounted)
    found = _first_violation(SEARCH_SEEDS)
    assert "stats.timeouts" in str(found.violation)


def test_the_simulation_catches_an_idle_expiry_not_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(e) `stats.idle_expired` against the model's count."""
    on_idle = Inventory.on_idle

    def uncounted(self: Inventory, now: float, rid: int) -> None:
        before = self.n["idle_expired"]
        on_idle(self, now, rid)
        self.n["idle_expired"] = before

    monkeypatch.setattr(Inventory, "on_idle", uncounted)
    found = _first_violation(SEARCH_SEEDS)
    assert "stats.idle_expired" in str(found.violation)


def test_the_simulation_catches_an_undelivered_lease_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(g) A lease granted to a caller that withdrew goes back
    (`core.undelivered`, driven as the shell does); here it is kept."""
    undelivered = Waiters.undelivered

    def keep(self: Waiters, now: float, reply: Reply) -> None:
        undelivered(self, now, Reply(reply.cid, None, reply.caller))

    monkeypatch.setattr(Waiters, "undelivered", keep)
    found = _first_violation(SEARCH_SEEDS)
    violation = str(found.violation)
    assert "liveness" in violation or "holders" in violation, violation


def test_the_simulation_catches_a_wrong_contains(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(h) `contains(key)` against the model: here a key with only callers
    waiting (no resource) counts as contained."""
    contains = Inventory.contains

    def loose(self: Inventory, cid: int, key: Any) -> None:
        contains(self, cid, key)
        reply = self.effects.pop()
        self.effects.append(Reply(reply.cid, key in self.keys))

    monkeypatch.setattr(Inventory, "contains", loose)
    found = _first_violation(range(400))  # contains() of a key only waited for
    assert "contains(" in str(found.violation)


# --- library bugs the simulation found (excused by default: KNOWN_BUGS) --------


@pytest.mark.parametrize(
    ("bug", "seed"),
    [
        ("lost-rings", 0),
        ("hand-no-on-lost", 2),
        ("claim-interrupted", 60),
        ("note-unrung", 11),
        ("claim-interrupted-before", 118),
        ("hand-on-popped-then-interrupted", 244),
        ("wake-twice-on-interrupt", 226),
    ],
)
def test_a_library_bug_the_simulation_found_stays_fixed(bug: str, seed: int) -> None:
    """Each library bug the simulation found (issue 20), at the seed that
    showed it, with nothing excused."""
    result = run_seed(seed, known=())
    assert not result.violation, f"{bug} shows again at seed {seed}: {result}"


def test_the_simulation_catches_an_interrupted_note_left_unrung(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Invariant 3 (nothing unnoted): a caller interrupted just past its note
    wakes the supervisor itself; here it does not (the doorbell's wake is
    dropped while an interrupt unwinds the append)."""
    original = Counter._add

    def _add(self: Counter, items: Any, item: Any, urgent: bool, *also: Any) -> bool:
        wake, self.wake = self.wake, lambda: None
        try:
            return original(self, items, item, urgent, *also)
        finally:
            self.wake = wake

    monkeypatch.setattr(Counter, "_add", _add)
    found = _first_violation(range(300))
    assert "Notes message" in str(found.violation) or "stranded" in str(found.violation)


def test_a_failing_seed_is_reported_with_its_replay(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _forget_withdrawals(monkeypatch)
    assert simulation.main(["--seeds", "1", "--steps", "500"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("VIOLATION seed=0 step=")
    assert "python tests/simulation.py --seed 0 --steps 500" in out[2]
    assert any(line.startswith("  step ") for line in out)
    steps = int(out[0].split("step=")[1].split(":")[0])
    assert out[-1] == f"{steps} steps, 1 seeds, 1 violations"


def test_the_simulation_catches_a_slot_given_to_a_key_that_has_a_resource(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The no-thrash rule with `max_per_key > 1`: a slot that frees goes to a
    key with nothing open before a key that has a resource. Here it goes to
    the oldest in line whatever its key has (plain FIFO across keys)."""

    def next_slot(self: Placement, slots: dict[Any, Any]) -> Any:
        return next(iter(slots.values()))

    monkeypatch.setattr(Placement, "next_slot", next_slot)
    found = _first_violation(range(300))
    assert "which has a resource" in str(found.violation)


def test_the_simulation_catches_a_put_off_checkout_never_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A self-queued checkout a poll put off (`PoolCore.later`) is read at the
    next step; here the core forgets it (a checkin may still serve it, but
    nobody else ever will, and the core never counts it)."""
    original = PoolCore.read_notes

    def read_notes(self: PoolCore, now: float, **kw: bool) -> None:
        original(self, now, **kw)
        self.later.clear()

    monkeypatch.setattr(PoolCore, "read_notes", read_notes)
    found = _first_violation(SEARCH_SEEDS)
    assert "still unread" in str(found.violation)


def test_the_simulation_catches_a_checkout_put_off_again_and_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A put-off checkout is read at the next step whatever that step is;
    here each poll puts it off again while it is queued (its note goes back
    to the counter), so a key whose resource breaks is never made again for
    it."""
    original = PoolCore.read_notes

    def read_notes(self: PoolCore, now: float, **kw: bool) -> None:
        if kw and self.later:
            later, self.later = self.later, []
            self.published.notes.extendleft(reversed(later))
        original(self, now, **kw)

    monkeypatch.setattr(PoolCore, "read_notes", read_notes)
    found = _first_violation(range(300))
    assert "still unread" in str(found.violation)


def test_the_simulation_catches_a_give_up_of_a_skipped_checkout_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A self-queued checkout that gave up, skipped by a checkin before the
    core read its `ASK`, waits in `Waiters.taken` for its withdrawal. Here
    the withdrawal does not look there: the caller is kept for ever."""
    original = Waiters.give_up

    def give_up(self: Waiters, now: float, cid: int) -> None:
        taken, self.taken = self.taken, {}
        try:
            original(self, now, cid)
        finally:
            self.taken = taken

    monkeypatch.setattr(Waiters, "give_up", give_up)
    found = _first_violation(range(300))
    assert "after its give-up" in str(found.violation)


def test_the_simulation_catches_a_served_checkout_kept_unanswered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A self-queued checkout a checkin served before the core read its `ASK`
    is done when the `GIVEN` note comes. Here the core's read of the hand-on
    does not look in `Waiters.taken`: the caller is kept after its answer."""
    original = PoolCore._given

    def _given(self: PoolCore, now: float, *rest: Any) -> None:
        taken, self._taken = self._taken, {}
        try:
            original(self, now, *rest)
        finally:
            self._taken = taken

    monkeypatch.setattr(PoolCore, "_given", _given)
    found = _first_violation(range(300))
    assert "the core keeps" in str(found.violation)
