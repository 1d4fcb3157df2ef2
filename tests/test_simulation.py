"""The deterministic simulation of the core and its hit path
(`tests/simulation.py`), in short.

`make sim` runs it for over a million steps; here a fixed set of seeds runs
in a few seconds, a seed replays exactly, and the simulation is shown to
catch defects put back into the core (two of the old pool's) and into the
hit path (each breaking one rule of `pooler_actors._fastpath`).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import simulation
from simulation import SimResult, run_seed, run_seeds

from pooler_actors import _fastpath as fastpath
from pooler_actors._core import (
    ASK,
    GIVEN,
    OUT,
    POLLING,
    QUIET,
    KeyEntry,
    PoolCore,
    Published,
    Resource,
)
from pooler_actors._inventory import Inventory
from pooler_actors._placement import Placement
from pooler_actors._waiters import Waiters

SIMULATION = Path(simulation.__file__)
FIXED_SEEDS = range(120)
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
    assert sum(r.steps for r in results) > 200_000


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
        visible = [r for r in entry.resources if not r.standby]
        return original(self, KeyEntry(entry.key, visible), hold)

    monkeypatch.setattr(Placement, "joinable", joinable)


def test_the_simulation_catches_a_withdrawn_caller_left_in_the_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Defect 3: a caller that gave up stayed queued and was later granted."""
    _forget_withdrawals(monkeypatch)
    found = _first_violation(SEARCH_SEEDS)
    assert "after its give-up" in str(found.violation)


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
        return sum(1 for r in entry.resources if not r.standby)

    _hide_standbys(monkeypatch)
    monkeypatch.setattr(Placement, "count", count)
    _first_violation(SEARCH_SEEDS)


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


# --- the hit path: each defect breaks one rule of `_fastpath` ------------------


def test_the_simulation_catches_a_checkout_that_skips_the_retired_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rule 4: after its `pop`, a caller re-checks `retired`; here it does not,
    and uses a resource the core retired (or lost) while it was idle."""

    def take_idle(pub: Published, key: Any, debug: Any, wake: Any) -> Any:
        idle = pub.idle.get(key)
        if not idle:
            return fastpath.MISS
        context = fastpath._context(debug)
        try:
            res = idle.pop()
        except IndexError:
            return fastpath.MISS
        lease = fastpath.Lease(key, res.obj, pool=pub.pool_id, rid=res.rid, lid=0)
        lease._handle = res
        fastpath._note(pub, (OUT, res, context, lease), wake)  # no `retired` check
        return lease

    monkeypatch.setattr(fastpath, "_take_idle", take_idle)
    found = _first_violation(SEARCH_SEEDS)
    assert "got retired resource" in str(found.violation)


def test_the_simulation_catches_a_core_closing_what_it_did_not_take(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rule 3: the core closes, pings or expires an idle exclusive resource
    only once it has taken it from its idle list; here every claim succeeds,
    whoever has the resource."""

    def claim(self: PoolCore, res: Resource) -> bool:
        return True

    monkeypatch.setattr(PoolCore, "_claim", claim)
    found = _first_violation(SEARCH_SEEDS)
    assert "Close of" in str(found.violation) or "pinged" in str(found.violation)


def test_the_simulation_catches_a_notes_message_read_before_polling_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rule 6: on a `Notes` message the supervisor sets `POLLING`, then
    drains; here the other way round, so an urgent note left between the two
    sees `WOKEN`, sends nothing, and waits for the next poll."""

    def drain(pub: Published, *, woken: bool = False) -> tuple[list[Any], list[Any]]:
        notes, hits = pub.notes, pub.hits
        taken = [notes.popleft() for _ in range(len(notes))]
        keys = [hits.popleft() for _ in range(len(hits))]
        if woken:
            pub.noted = POLLING  # after draining
        return taken, keys

    monkeypatch.setattr(fastpath, "drain", drain)
    found = _first_violation(SEARCH_SEEDS)
    assert "wait for a poll" in str(found.violation)


def test_the_simulation_catches_a_poll_that_goes_quiet_after_its_last_look(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rule 6: a poll that found no note sets `QUIET`, then looks once more;
    here it looks, then sets `QUIET`, so a note left between the two sees
    `POLLING`, sends nothing, and is stranded."""

    def poll(pub: Published) -> tuple[list[Any], list[Any]]:
        quiet = pub.noted == POLLING and not (pub.notes or pub.hits)
        read = fastpath.drain(pub)
        if quiet:
            pub.noted = QUIET  # after the last look
        return read

    monkeypatch.setattr(fastpath, "poll", poll)
    found = _first_violation(SEARCH_SEEDS)
    assert "stranded" in str(found.violation)


def test_the_simulation_catches_an_urgent_note_that_waits_for_a_poll(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rule 6: a note someone waits on (a hand-over, a broken checkin, a
    resource handed back) wakes a polling supervisor; here no note does."""
    note = fastpath._note

    def lazy(pub: Published, item: Any, wake: Any, urgent: bool = False) -> None:
        note(pub, item, wake, False)

    monkeypatch.setattr(fastpath, "_note", lazy)
    found = _first_violation(range(300))  # rarer: a hand-over while polling
    assert "wait for a poll" in str(found.violation)


def test_the_simulation_catches_a_shared_checkout_reading_the_flag_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rule 7: a shared checkout appends its token, then reads `retired`;
    here the other way round, so the core can retire and close the resource
    between the two, seeing no token, and the caller uses it."""

    def take_shared(pub: Published, key: Any, debug: Any, wake: Any) -> Any:
        res = pub.view.get(key)
        if res is None:
            return fastpath.MISS
        lease = fastpath.Lease(key, res.obj, pool=pub.pool_id, rid=res.rid, lid=0)
        lease._handle = res
        if res.retired:  # the flag first...
            return fastpath.MISS
        res.tokens.append(lease)  # ...then the token
        fastpath._note(pub, (OUT, res, fastpath._context(debug), lease), wake)
        return lease

    monkeypatch.setattr(fastpath, "_take_shared", take_shared)
    found = _first_violation(SEARCH_SEEDS)
    violation = str(found.violation)
    assert "got retired resource" in violation or "uses it" in violation


def test_the_simulation_catches_a_core_serving_a_caller_a_checkin_took(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rule 9: the core takes a queued caller's number out of the hit path's
    queue before it serves, joins or fails it; here it never looks, so a
    caller a checkin has served is answered again."""

    def take_waiter(self: Waiters, caller: Any) -> bool:
        if caller.handoff:
            caller.handoff = False
            with contextlib.suppress(ValueError):
                self.core.published.queue[caller.key].remove(caller.cid)
        return True

    monkeypatch.setattr(Waiters, "take_waiter", take_waiter)
    found = _first_violation(SEARCH_SEEDS)
    violation = str(found.violation)  # the caller is served twice, one way or another
    assert any(
        what in violation
        for what in ("answered twice", "gone joiner", "a checkin claimed", "callers")
    ), violation


def test_the_simulation_catches_a_hand_over_settled_before_its_note(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rule 9: a checkin that hands its resource on appends its GIVEN note,
    then settles the caller's future; here the other way round, so the
    caller's own checkin can reach the core first, for a lease it never
    heard of."""

    def hand_on(pub: Published, res: Any, lease: Any, wake: Any) -> bool:
        queue = pub.queue.get(lease.key)
        while queue:
            try:
                cid = queue.popleft()
            except IndexError:
                return False
            fulfil = pub.claim(cid)
            if fulfil is None:
                continue
            given = fastpath.Lease(
                lease.key, res.obj, pool=pub.pool_id, rid=res.rid, lid=0, handle=res
            )
            fulfil(given)  # first...
            fastpath._note(pub, (GIVEN, res, lease, given, cid), wake)  # ...then
            return True
        return False

    monkeypatch.setattr(fastpath, "_hand_on", hand_on)
    found = _first_violation(SEARCH_SEEDS)
    assert "holders" in str(found.violation) or "GIVEN" in str(found.violation)


def test_the_simulation_catches_a_checkout_noted_before_it_is_queued(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rule 10: a checkout that queues itself appends its number, then its
    ASK note; here the other way round, so the core can read the note before
    the number is there, take the caller for one a checkin took, and never
    serve or time it out."""

    def enqueue(pub: Published, key: Any, timeout: Any, since: float, wake: Any) -> Any:
        if not pub.direct or timeout == 0 or pub.register is None:
            return fastpath.MISS
        queue = pub.queue.get(key)
        if queue is None:
            return fastpath.MISS
        cid, future = pub.register()
        fastpath._note(pub, (ASK, key, cid, since, timeout, {}, queue), wake)  # first
        queue.append(cid)  # ...then
        return future

    monkeypatch.setattr(fastpath, "enqueue", enqueue)
    found = _first_violation(SEARCH_SEEDS)
    assert "past its deadline" in str(found.violation)


def test_the_simulation_catches_a_core_reading_a_served_checkout_as_new(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rule 10: the core takes a self-queued checkout's number back before
    it reads it as a request; here it reads it anyway, so a caller a checkin
    has served is answered again."""

    def asked(self: PoolCore, now: float, note: tuple[Any, ...]) -> None:
        _, key, cid, since, timeout, context, queue = note
        with contextlib.suppress(ValueError):
            queue.remove(cid)
        self.acquire(now, cid, key, timeout, context, hold=True, since=since)

    monkeypatch.setattr(PoolCore, "_asked", asked)
    found = _first_violation(SEARCH_SEEDS)
    violation = str(found.violation)  # the caller is served twice, one way or another
    assert any(
        what in violation
        for what in ("answered twice", "gone joiner", "a checkin claimed", "callers")
    ), violation


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
