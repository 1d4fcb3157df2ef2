"""Deterministic simulation of the pool's core and its counter (SPEC 7, 8).

One seeded `random.Random` and a fake clock drive a
[PoolCore][pooler_actors._core.PoolCore] the way the supervisor shell does:
callers put requests into a FIFO mailbox and may give up at any moment;
resource actors are simulated mailboxes that run the factory, pings and
closes in order, with random durations, failures and hangs, or stop unasked;
a fleet-wide capacity grants, refuses and loses slots; timers fire when the
clock reaches the core's next deadline. After every step the simulator checks
the invariants of SPEC 3, 6, 7 and 8 against its own model of what exists and
who waits, and the core's books against each other.

The counter ([_counter][pooler_actors._counter]) is the real one. A few
caller threads ("strands", one to four per seed) call its REAL methods as
the facades do -- `hit` (`Pool.acquire`, which asks the supervisor on a
`MISS`), `take` then `enqueue` (`Pool.checkout`: a lease, a self-queued
future, or it asks), `checkin`, `give_back` (an async caller cancelled
just as it was granted), and, in some seeds of a shared pool, the block path
of `with pool.lease(key)` (`LeaseBlock`): `enter` (its place, or `MISS`: it
checks a lease out instead), undone by `leave` if an interrupt lands before
`__enter__` returns, and later `leave` (broken now and then), made again if
an interrupt lands in it; a block whose undo or exit is itself interrupted,
or whose `__exit__` never runs, is dropped and collected at a later step
(`LeaseBlock.__del__`: `Counter.dropped`, a lease of its id found lost).
Its one lock is the simulator's: a strand stops at `lock.__enter__` until
the scheduler lets it go on, and then runs the whole method -- one atomic
step -- to its next counter call. Core events are fed
under the same lock, whole (`PoolCore` is never interleaved inside), and
their effects are carried out after it, as the shell's `_step` does: a
strand may do a counter call between two effects, and an undelivered grant
goes back through `core.undelivered` in a step of its own. Every strand is a
real thread, but only one runs at a time (a baton passed through two locks),
so a seed replays exactly. The shell's hooks -- `claim`, `register`, `wake`,
`debug`, `context`, `on_lost` -- are the simulator's.

Interrupts: at each counter call the scheduler may make a `KeyboardInterrupt`
land at the lock (before the method does anything), inside it (just before
or after a note's append, at the reply registration, around a claim), or
just after its locked body (its return value lost), and just after a call
or a wait returned a lease, before the caller recorded it. The model follows
the notes the counter appends and takes back (`SimNotes`), so it knows what
each interrupted call left: a lease the caller never got is dropped, and
collected at a random later step the way `Lease.__del__` does (its `on_lost`:
a `LeaseLost` message, `core.lost` under the lock); a queued checkout whose
caller never waited is an orphan whose grant is dropped too. Before closing,
a liveness phase collects every dropped lease and reads every note: every
holder the core counts must then be a lease some caller holds, and every
block a resource counts a block some caller is inside.

Checked after every step, besides the core's own invariants: a resource is
never closed while a lease of it is out, except after `drain_timeout`; an
exclusive resource has one holder at most and sits in its idle list only
when nobody holds it; a take at the counter gets an open resource in service
and never passes a caller queued for its key (in the core, or self-queued:
strict FIFO per key), and `_pick_key` seeks keys with callers queued; idle
expiry and reclaim never take a held resource, nor reclaim one a plain
`acquire()` returned; `view` shows only resources in service; every note is
drained (the supervisor polls, or a `Notes` message is on its way; for an
urgent note, a message); a block's id is counted in its resource's
`blocks` only while its place is set, a block inside a resource is counted
there (a block that left is not), and each block counts one acquire, hit
and checkout when it enters (`entered`); the core's `holders`, `acquires`,
`hits` and `checkouts` equal what callers did, less the notes not yet
drained, and `stats.holders` the model's own count of leases out (and
blocks inside) once they are; `timeouts`, `releases`, `refreshed`,
`reclaimed`, `idle_expired`, `lifetime_expired` and `drain_timeouts` equal
the model's counts, and `wait_duration` is bounded by `waits x max_wait`;
the health timer is armed while the pool is open, and
every retiring resource has a drain timer; `contains(key)` agrees with the
resources in service or in creation and with the leases out; FIFO per key
holds for callers queued in the core; nobody is granted after giving up; a
refresh's standby (one per key at most) is a creation in the key map, never
rests in `STANDBY`, and once swapped in leaves nothing it replaces in
service. Refreshes are steered toward keys with a creation in flight.

Sizing (SPEC 12), from a source of its own (a seed's other draws are as
before): a few seeds keep one or two keys warm (`keep_warm`), and callers
now and then `resize` the pool (to `max_per_key`..5) or `pop_stats`. The cap
is strict except after a shrink: the resources in service (in the key map)
never exceed the cap, and while more than the cap count, their number never
grows (only resources leaving are over it); a resize's reply comes once each
resource it retired is closed or retiring (a held one: no drain timer, it
closes at its checkin); `pop_stats` counts since the last one, with the
gauges of the moment.

Library bugs the simulation found are listed in `KNOWN_BUGS`: excused by
default (the simulation then behaves as the proposed fix would), shown with
`--strict`.

Blocks draw from a source of their own too: a seed that takes no block
path (a pool of leases, or `p_block` 0) runs as it did before they existed.

    python tests/simulation.py [--seeds N] [--steps M] [--seed S] [--jobs J]
                               [--first F] [--strict] [--coverage]

prints, per failing seed, the seed, the step, what broke and a short trace,
and as its last line `N steps, M seeds, V violations`; `--coverage` counts
the rare paths taken (interrupts, dropped and collected leases, hand-ons,
undelivered grants, expiries, reclaims, drain timeouts). `--seed S` (or
`SEED=S` in the environment) replays one seed exactly: everything random
comes from the seed, nothing from the real clock, thread timing or hash
order.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from pooler_actors import _effects as fx
from pooler_actors import _health
from pooler_actors._core import KeyEntry, PoolCore, Resource
from pooler_actors._counter_state import (
    ASK,
    BACK,
    BROKEN,
    GIVEN,
    HANDOVER,
    HIT,
    IN,
    MISS,
    OUT,
    POLL,
    QUIET,
    SPOILT,
    WOKEN,
)
from pooler_actors._inventory import ENDED
from pooler_actors._lifecycle import COUNTED, Phase
from pooler_actors.errors import AcquireTimeout, PoolClosedError, TooManyWaiters
from pooler_actors.lease import Lease
from pooler_actors.options import PoolOptions
from pooler_actors.stats import COUNTERS, GAUGES, Stats

__all__ = ["Sim", "SimResult", "Violation", "main", "run_seed", "run_seeds"]

DEFAULT_SEEDS = 700  # x DEFAULT_STEPS: about 1.3 million steps in all
DEFAULT_STEPS = 2000
INF = math.inf
T0 = 1000.0  # the fake clock's start (traces show time since)
TRACE_LEN = int(os.environ.get("SIM_TRACE", "40"))
FINISH_STEPS = 20_000  # bound on the steps from close() to Stopped
# May be in the key map.
_LIVE = (Phase.RESERVING, Phase.CREATING, Phase.BACKOFF, Phase.OPEN)
_GRANTS = ("acquire", "checkout")
_CHECKINS = (IN, HANDOVER, BROKEN)
_IN_SERVICE = (Phase.OPEN, Phase.RETIRING)
_IN_CREATION = (Phase.RESERVING, Phase.CREATING, Phase.BACKOFF)
_URGENT = (HANDOVER, BROKEN, BACK, SPOILT)  # notes that always wake a polling one
# Why a resource left service -> the stats counter that counts it.
_RETIRED_AS = {
    "reclaimed": "reclaimed",
    "max_idle_time": "idle_expired",
    "max_lifetime": "lifetime_expired",
}


# Library bugs the simulation finds, excused by default so that it stays a
# regression check for everything else (`--strict` excuses none); each is
# reported, with a seed that shows it, in docs/reliability.md.
KNOWN_BUGS: dict[str, str] = {
    # None now: the four the counter's first version had (lost-rings,
    # hand-no-on-lost, claim-interrupted, note-unrung) are fixed, and
    # tests/test_simulation.py keeps their seeds as regression checks.
}


class Violation(Exception):
    """An invariant does not hold."""


class FakeCapacity:
    """Stands in for a fleet capacity: the core only checks that it exists."""

    def try_acquire(self, *_args: Any) -> bool:
        return True

    def release(self, *_args: Any) -> None:
        return None

    def renew(self, *_args: Any) -> None:
        return None


class Res:
    """A resource the simulated factory made; it counts its closes."""

    __slots__ = ("attempt", "closes", "key", "rid")

    def __init__(self, rid: int, attempt: int, key: Hashable) -> None:
        self.rid = rid
        self.attempt = attempt
        self.key = key
        self.closes = 0

    def __repr__(self) -> str:
        return f"<Res {self.rid}.{self.attempt}>"


@dataclass(eq=False, slots=True)
class Req:
    """A caller's request and its reply future."""

    n: int
    kind: str
    key: Any = None
    timeout: float | None = None
    arg: Any = None  # checkin: (lease, broken); prewarm: the keys
    cid: int = 0  # the core's number for it, given when the shell reads it
    state: str = "pending"  # pending | claimed | value | error | withdrawn
    value: Any = None  # what the caller received
    got: Any = None  # what the core answered (received or not)
    answers: int = 0  # Reply/Fail effects the core addressed to it
    gone_at_read: bool = False  # withdrawn before the shell read it
    withdraw_read: bool = False  # its withdrawal reached the core
    undelivered: bool = False  # granted after it withdrew: handed back
    deadline: float = INF
    mark: int = 0  # how many resources had opened when it was read
    targets: tuple[int, ...] = ()  # release: the resources it touches
    expect: Any = None
    orphan: bool = False  # its caller was interrupted before it could wait
    future: SimFuture | None = None  # queued itself: its reply future


@dataclass(eq=False, slots=True)
class Held:
    """A lease a caller holds."""

    lease: Lease[Any, Any]
    forget: bool  # a holder that never checks in


class SimFuture:
    """The reply future of a checkout that queued itself at the counter (the
    shell's `Replies.register`), or one an async caller cancels: its request,
    as the simulator follows it."""

    __slots__ = ("callbacks", "req", "sim")

    def __init__(self, sim: Sim, req: Req) -> None:
        self.sim = sim
        self.req = req
        self.callbacks: list[Callable[[SimFuture], None]] = []

    def withdraw(self, error: BaseException) -> bool:
        """The caller gives up (an interrupt inside `enqueue` undoes its
        queuing this way): it wins against a pending future only, and then
        tells the supervisor (`PoolRef.withdraw`)."""
        return self.sim.withdraw(self.req, error)

    def settled(self) -> None:
        """The request was answered: run the callbacks (`give_back`'s)."""
        callbacks, self.callbacks = self.callbacks, []
        for fn in callbacks:
            fn(self)

    def add_done_callback(self, fn: Callable[[SimFuture], None]) -> None:
        if self.req.state in ("value", "error", "withdrawn"):
            fn(self)
        else:
            self.callbacks.append(fn)

    def get(self, timeout: float | None = None) -> Any:
        req = self.req
        if req.state == "value":
            return req.value
        if req.state in ("error", "withdrawn"):
            raise req.value
        raise TimeoutError("not settled")


@dataclass(eq=False, slots=True)
class Actor:
    """A simulated resource actor: one mailbox, handled in order."""

    rid: int
    attempt: int
    key: Hashable
    mailbox: deque[tuple[Any, ...]] = field(default_factory=deque)
    due: float = INF  # when the item at the head of the mailbox is done
    obj: Res | None = None
    in_factory: bool = True
    dead: bool = False
    abandoned: bool = False


@dataclass
class SimResult:
    """The outcome of one seed: steps run, and the violation if any."""

    seed: int
    steps: int
    violation: str | None = None
    trace: list[str] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict, compare=False)


class Fleet:
    """A fleet-wide capacity shared with other processes; FIFO reservations."""

    def __init__(self, rng: random.Random, cap: int) -> None:
        self.limit = rng.randint(max(1, cap - 1), cap + 2)
        self.others = rng.randint(0, 1)  # slots other processes hold
        self.pending: deque[int] = deque()
        self.held: dict[int, str] = {}  # rid -> "inflight" | "delivered"
        self.open_grants: set[int] = set()  # granted without a slot (fail open)
        self.lost_inflight: set[int] = set()
        self.strays = 0  # CancelSlot/ReturnSlot of a slot not held: a no-op


# --- the counter's lock and notes, as the simulation sees them -----------------
#
# The counter (`pooler_actors._counter.Counter`) is the real one. Its lock is
# the simulator's: a strand (a caller's thread) stops at `__enter__` until the
# scheduler lets it go on, and then runs the whole counter method -- one
# atomic step -- to the next lock it meets. Its notes and hits deques tell the
# model what each step did (and undid), and are where an interrupt may land
# inside a counter method.


class _Killed(BaseException):
    """Ends a strand's thread in the middle of a call (the run is over)."""


class SimLock:
    """`Counter.lock`: the suspension point of every counter call."""

    __slots__ = ("held", "sim")

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.held = False

    def __enter__(self) -> None:
        sim = self.sim
        strand = sim.running
        if strand is not None:
            strand.suspend(sys._getframe(1).f_code.co_name)
            if strand.inject == "enter":  # before the method did anything
                strand.inject = ""
                raise KeyboardInterrupt("at the lock")
        if self.held:
            raise Violation("the counter's lock taken twice (a nested step)")
        self.held = True
        sim.inside = strand

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        sim = self.sim
        self.held = False
        sim.inside = None
        strand = sim.running
        if strand is not None:
            sim.armed = ""  # an interrupt armed inside and not landed: gone
            if strand.inject == "exit" and exc is None:
                strand.inject = ""  # just after the method's locked body
                raise KeyboardInterrupt("after the lock")
        return False


class SimNotes(deque[Any]):
    """`Counter.notes` or `Counter.hits`: each note appended (or taken back by
    an undo) updates the model; an interrupt armed for this step may land
    just before or just after an append."""

    __slots__ = ("sim",)

    def __init__(self, sim: Sim) -> None:
        super().__init__()
        self.sim = sim

    def append(self, note: Any) -> None:
        sim = self.sim
        sim.land("before")
        deque.append(self, note)
        sim.after_note(note if isinstance(note, tuple) else (HIT, note, None))
        sim.land("after")

    def pop(self) -> Any:
        note = deque.pop(self)
        self.sim.unnote(note if isinstance(note, tuple) else (HIT, note, None))
        return note

    def __iadd__(self, notes: Any) -> SimNotes:  # (`hits += (key,)`)
        for note in notes:
            self.append(note)
        return self


class SimBlocks(dict[int, None]):
    """A shared resource's `blocks` (the ids of the blocks inside it): an
    interrupt armed for this step may land just before or just after an id
    goes in or out."""

    __slots__ = ("sim",)

    def __init__(self, sim: Sim) -> None:
        super().__init__()
        self.sim = sim

    def __setitem__(self, lid: int, value: None) -> None:
        self.sim.land("before")
        dict.__setitem__(self, lid, value)
        self.sim.land("after")

    def __delitem__(self, lid: int) -> None:
        self.sim.land("before")
        dict.__delitem__(self, lid)
        self.sim.land("after")

    def pop(self, lid: int, *default: Any) -> Any:  # type: ignore[override]
        self.sim.land("before")
        value = dict.pop(self, lid, *default)
        self.sim.land("after")
        return value


class SimBlock:
    """A `pool.lease(key)` block on the counter's block path, as its caller
    has it: `place` is the counter's (`Block`); the rest is the model's."""

    __slots__ = ("key", "lid", "place", "state")

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.place: tuple[Any, int] | None = None
        self.lid = 0  # its id, once the counter gave it one
        #: entering | in | leaving | dropped (to be collected) | lost
        #: (collected: its lease told) | out
        self.state = "entering"

    def __repr__(self) -> str:
        return f"<block {self.lid or '?'} of {self.key!r} ({self.state})>"


# --- caller threads ----------------------------------------------------------------


class Strand:
    """A caller's thread that runs the facade's calls on the real counter:
    it stops at each counter call (its lock) until the scheduler lets it do
    that call, atomically. Only one thread runs at any moment."""

    def __init__(self, sim: Sim, n: int) -> None:
        self.sim = sim
        self.n = n
        self._go = threading.Lock()
        self._go.acquire()
        self._back = threading.Lock()
        self._back.acquire()
        self._job: Callable[[], Any] | None = None
        self._kill = False
        self.busy = False
        self.at = ""  # the counter method it stopped before
        self.inject = ""  # an interrupt for its next step: enter | inside | exit
        self.result: Any = None
        self.error: BaseException | None = None
        # The call in progress, and what its steps did.
        self.op = ""
        self.key: Any = None
        self.timeout: float | None = None
        self.lease: Lease[Any, Any] | None = None
        self.was_out = False  # checkin: the lease was out when it began
        self.broken = False
        self.foreign = False
        self.drop = False  # an interrupt lands just after it returns a lease
        self.outs: list[Lease[Any, Any]] = []  # leases its OUT notes made
        self.asks: list[Req] = []  # requests its ASK notes queued
        self.asked: Req | None = None  # its request after a MISS, until answered
        self.block: SimBlock | None = None  # the block it enters or leaves
        self.counted = 0  # blocks its call counted (`entered`)
        self.speed = 1.0  # how often the scheduler picks it, relatively
        self.thread = threading.Thread(
            target=self._main, name=f"sim-strand-{n}", daemon=True
        )
        self.thread.start()

    def __repr__(self) -> str:
        return f"<strand {self.n}>"

    def _main(self) -> None:
        while True:
            self._go.acquire()
            job = self._job
            if job is None or self._kill:
                self._back.release()
                return
            try:
                self.result, self.error = job(), None
            except _Killed:
                self._back.release()
                return
            except BaseException as error:  # handed to the scheduler
                self.result, self.error = None, error
            self._job = None
            self.busy = False
            self._back.release()

    def start(self, op: str, job: Callable[[], Any]) -> None:
        """Begin a call (it runs up to its first counter call)."""
        self.op, self._job, self.busy = op, job, True
        self.at, self.inject, self.drop = "", "", False
        self.outs, self.asks, self.counted = [], [], 0
        self.resume()

    def resume(self) -> None:
        """Do the counter call it stopped before, and on to the next (scheduler)."""
        if not self.busy:  # its thread would end: the scheduler would hang
            raise AssertionError(f"{self!r} resumed outside a call")
        sim = self.sim
        sim.running = self
        entered = sim.pub.entered
        self._go.release()
        self._back.acquire()
        sim.running = None
        if sim.pub.entered != entered:  # (only a core event reads it)
            sim.entered(self, sim.pub.entered - entered)

    def suspend(self, at: str) -> None:
        """Stop before counter method `at` until resumed (in the strand's own
        thread)."""
        self.at = at
        self._back.release()
        self._go.acquire()
        if self._kill:
            raise _Killed
        if self.inject == "inside":
            where = ("before", "after", "claimed") if self.op == "checkin" else ()
            self.sim.armed = self.sim.rng.choice(where or ("before", "after"))
            self.inject = ""

    def stop(self) -> None:
        """End the thread, abandoning a call in progress."""
        self._kill = True
        self._go.release()
        self.thread.join(timeout=30)


class Sim:
    """One seed's simulation; see the module docstring."""

    def __init__(
        self,
        seed: int,
        core_cls: type[PoolCore] = PoolCore,
        known: Iterable[str] = KNOWN_BUGS,
    ) -> None:
        self.seed = seed
        self.known = frozenset(known)  # library bugs excused (see KNOWN_BUGS)
        rng = self.rng = random.Random(seed)
        self.now = T0
        # A calm world (user code never fails, resources live long, few
        # releases and refreshes) keeps resources open: the counter serves
        # most calls there. Other worlds are turbulent.
        self.calm = rng.random() < 0.4
        # Sizing (SPEC 12) draws from its own source, so the other draws of
        # a seed are the ones they were before it existed.
        sizing = self.sizing_rng = random.Random(seed * 104729 + 3)
        warm = [f"k{i}" for i in range(2)] if sizing.random() < 0.3 else []
        self.opts = opts = replace(
            self._options(rng, self.calm), keep_warm=warm[: sizing.randint(1, 2)]
        )
        # The most resources may count while over a shrunk cap: what counted
        # just after the shrink, then never more (resources only leave).
        self.over = opts.max_open_resources
        self.popped: dict[str, Any] = {}  # the counters at the last pop_stats
        self.pop_total = Stats()
        self.shared = opts.shared
        self.pool_id = object()
        jitter = random.Random(seed * 7919 + 1).random
        self.core = core_cls(opts, pool_id=self.pool_id, rand=jitter)
        self.core.debug = rng.random() < 0.5
        self.ping_chunk = rng.choice([64, 64, 1, 2])  # 1, 2: sweeps need Resume
        self.keys = [
            f"k{i}" for i in range(rng.randint(1, opts.max_open_resources + 2))
        ]
        # This seed's world: how often user code fails or hangs, how callers act.
        bad = not self.calm and rng.random() < 0.8
        self.p_factory_fail = rng.uniform(0, 0.3) if bad else 0.0
        self.p_factory_hang = rng.uniform(0, 0.06) if bad else 0.0
        self.p_ping_fail = rng.uniform(0, 0.3) if bad else 0.0
        self.p_ping_hang = rng.uniform(0, 0.05) if bad else 0.0
        self.p_close_raise = rng.uniform(0, 0.3) if bad else 0.0
        self.p_close_hang = rng.uniform(0, 0.05) if bad else 0.0
        self.lost_actors = not self.calm and rng.random() < 0.6
        self.p_forget = rng.choice([0.0, 0.0, 0.02, 0.1])
        self.p_broken = rng.uniform(0, 0.3)
        self.close_early = rng.random() < 0.3
        self.tempo = rng.choice([0.02, 0.1, 0.5])  # callers' mean think time
        self.p_quiet = 0.01 if self.calm else 0.1  # a spell of seconds passes
        self.p_late = rng.choice([0.0, 0.03, 0.2])  # the clock overtakes due work
        # The counter: caller threads, and how often an interrupt lands in
        # one of their calls.
        self.n_strands = rng.randint(1, 4)
        self.p_interrupt = rng.choice([0.0, 0.02, 0.05, 0.15])
        self.p_between = rng.choice([0.0, 0.2, 0.5])  # callers run amid effects
        # How often each thread gets to run (PCT-style priorities): a slow
        # one stays stopped before a counter call across many events.
        self.speeds = [rng.choice([1.0, 1.0, 0.2, 0.03]) for _ in range(self.n_strands)]
        # The block path (shared pools), from a source of its own: how often a
        # caller's checkout is a `with pool.lease(key)` block instead.
        blocks = self.block_rng = random.Random(seed * 6007 + 5)
        self.p_block = blocks.choice([0.0, 0.4, 0.7]) if opts.shared else 0.0
        if self.p_block and blocks.random() < 0.8:
            self.core.debug = False  # (debug events want a lease per block)
        # The shell.
        self.inbox: deque[tuple[Any, ...]] = deque()
        self.next_cid = 0
        self.by_cid: dict[int, Req] = {}
        self.reqs: list[Req] = []
        self.shell_actors: dict[int, Actor] = {}
        self.actors: list[Actor] = []
        self.stopped = False
        self.fleet = (
            Fleet(rng, opts.max_open_resources) if opts.global_capacity else None
        )
        self.strands: list[Strand] = []
        self.running: Strand | None = None  # the strand whose step runs now
        self.inside: Strand | None = None  # the strand holding the counter's lock
        self.armed = ""  # an interrupt lands inside this step: before | after
        self.in_event = False  # the core is handling an event (or its effects)
        self.notes_msgs = 0  # `Notes` messages in the mailbox
        # The model.
        self.held: list[Held] = []  # leases callers received, not checked in
        self.returned: deque[Lease[Any, Any]] = deque(maxlen=8)
        # Leases out (granted, taken or handed on at the counter) until the
        # checkin that counts is noted:
        self.holding: dict[Lease[Any, Any], int] = {}  # lease -> rid
        # rid -> its leases out (a dict: ordered, so messages replay exactly)
        self.users: dict[int, dict[Lease[Any, Any], None]] = {}
        # Leases an interrupt dropped (their holder never had them, or lost
        # them), each with the step at which it is collected.
        self.dropped: list[tuple[Lease[Any, Any], int]] = []
        # The block path: blocks callers are inside; every block given an id
        # (by id: a lease of its id, once it is dropped, is recognised);
        # blocks dropped with their place set, each with its collection step.
        self.blocks_in: list[SimBlock] = []
        self.blocks: dict[int, SimBlock] = {}
        self.dropped_blocks: list[tuple[SimBlock, int]] = []
        self.late_lost: list[Lease[Any, Any]] = []  # told after the stop
        self.collected = 0  # dropped leases collected so far
        self.unreported: list[Lease[Any, Any]] = []  # collected, no `on_lost`
        # What the core's `holders` of each resource will be once every note
        # appended so far is drained.
        self.expect: dict[int, int] = {}
        self.acquired: set[int] = set()  # rids a plain acquire() returned
        self.close_ok: dict[int, bool] = {}  # rid -> closed after drain_timeout
        self.pending_callers: dict[int, Req] = {}  # read, unanswered, not withdrawn
        self.undelivered_cids: set[int] = set()
        self.objs: list[Res] = []
        self.closes: dict[int, int] = {}  # Close effects per resource
        self.retiring_since: dict[int, float] = {}
        self.handed_back: set[int] = set()  # rids of leases handed back undelivered
        self.opened: list[Hashable] = []  # the key of each Ready accepted, in order
        self.retired_as: dict[int, str] = {}  # rid -> why it left service
        self.counts = dict.fromkeys(
            (
                "created",
                "acquires",
                "hits",
                "checkouts",
                "rejected",
                "abandoned",
                "broken",
                "timeouts",
                "releases",
                "refreshed",
                "reclaimed",
                "idle_expired",
                "lifetime_expired",
                "drain_timeouts",
            ),
            0,
        )
        # Per step and per event.
        self.step = 0
        self.trace: deque[tuple[int, float, str]] = deque(maxlen=TRACE_LEN)
        self._pre: dict[str, Any] = {}
        self._event = ("", 0)  # (name, rid) of the event being fed
        self._grants: list[tuple[int, int]] = []  # (cid, rid) to new requests
        self._replied: set[int] = set()
        self._created_keys: set[Hashable] = set()
        self._created_rids: set[int] = set()
        self._reclaimed_before = 0
        self._dirty_ok = False  # a reclaim left dirty keys, not yet served
        self.wake_lost = False  # an interrupt may have skipped a wake
        self.seen: dict[str, int] = {}  # rare paths taken (`--coverage`)
        #: What refresh replacements that became standbys in this step replace.
        self.swapped: list[Resource] = []
        self.collecting = False  # the simulated collector runs `on_lost`
        self.quiescing = False  # the liveness check: no caller runs
        # The real counter, with the simulator's lock, notes and hooks.
        pub = self.pub = self.counter = self.core.published
        pub.lock = self.lock = SimLock(self)
        pub.notes = SimNotes(self)
        pub.hits = SimNotes(self)
        pub.claim = self._claim_reply
        pub.register = self._register
        pub.wake = self._wake
        pub.context = lambda: {"sim": True}
        pub.on_lost = self._on_lost
        self.exclusive = pub.exclusive
        # cids a checkin claimed whose GIVEN note is not read yet.
        self.handing: set[int] = set()
        self.direct: list[Req] = []  # checkouts that queued themselves
        self.unread: set[int] = set()  # ... whose ASK note is not read yet
        self.reads = 0  # the core's reads of the notes (`_read_notes`)
        self.put_off: dict[int, int] = {}  # cid -> the read that drained its ASK
        self._asks: list[Req] = []  # their ASK notes read in this event
        # A resource that retires, even for a moment within one event (its
        # holder's checkin lands in the same event), is retiring since then;
        # each leaving service, and each close under holders, is counted.
        move = self.core.inventory.move

        def moved(now: float, res: Resource, event: str) -> None:
            before = res.phase
            move(now, res, event)
            self._moved(res, before, event)

        self.core.inventory.move = moved  # type: ignore[method-assign]
        # Every batch of notes the core reads (a `Notes` message's, or those a
        # checkin by message drains first) passes through `_counted`.
        notes = type(self.core).notes
        self.core.notes = lambda now, items, *rest, **kw: notes(  # type: ignore[method-assign]
            self.core, now, self._counted(items), *rest, **kw
        )
        # A self-queued checkout counts when the core reads its `ASK`: at
        # once, or at the step after a poll put it off (`PoolCore.later`).
        asked = type(self.core)._asked

        def _asked(now: float, note: tuple[Any, ...]) -> None:
            self.put_off.pop(note[2], None)
            self._ask_read(note)
            asked(self.core, now, note)

        self.core._asked = _asked  # type: ignore[method-assign]

    @staticmethod
    def _options(rng: random.Random, calm: bool) -> PoolOptions:
        cap = rng.randint(1, 4)

        def maybe(lo: float, hi: float, p_none: float = 0.4) -> float | None:
            return None if rng.random() < p_none else rng.uniform(lo, hi)

        return PoolOptions(
            max_open_resources=cap,
            max_holders=rng.choice([None, 1, 2]),
            max_per_key=rng.randint(1, min(2, cap)),
            max_waiting=rng.choice([None, None, None, 0, 1, 2, 4]),
            create_retries=rng.choice([0, 0, 1, 2]),
            create_backoff=rng.uniform(0.05, 0.5),
            create_timeout=maybe(0.5, 5.0, 0.2),
            close_timeout=rng.uniform(0.5, 5.0),
            ping_timeout=rng.uniform(0.2, 3.0),
            drain_timeout=rng.uniform(0.5, 10.0),
            health_check_interval=maybe(0.5, 10.0, 0.3),
            max_lifetime=maybe(20.0, 200.0, 0.5) if calm else maybe(1.0, 20.0),
            max_idle_time=maybe(1.0, 20.0) if calm else maybe(0.5, 10.0),
            acquire_timeout=maybe(0.5, 10.0, 0.7),
            reclaim_idle=rng.random() < 0.6,
            global_capacity=FakeCapacity() if rng.random() < 0.3 else None,
            name="sim",
        )

    def describe(self) -> str:
        """The seed's options in one line."""
        o = self.opts
        return (
            f"cap={o.max_open_resources} max_holders={o.max_holders} "
            f"max_per_key={o.max_per_key} max_waiting={o.max_waiting} "
            f"retries={o.create_retries} create_timeout={_f(o.create_timeout)} "
            f"close_timeout={_f(o.close_timeout)} ping_timeout={_f(o.ping_timeout)} "
            f"drain={_f(o.drain_timeout)} health={_f(o.health_check_interval)} "
            f"lifetime={_f(o.max_lifetime)} idle={_f(o.max_idle_time)} "
            f"acquire_timeout={_f(o.acquire_timeout)} reclaim={o.reclaim_idle} "
            f"global={self.fleet is not None} keys={len(self.keys)} "
            f"threads={self.n_strands} speeds={self.speeds} "
            f"interrupts={self.p_interrupt} between={self.p_between} calm={self.calm} "
            f"blocks={self.p_block}"
        )

    # --- running -------------------------------------------------------------

    def run(self, steps: int) -> SimResult:
        """Run `steps` random steps, then close the pool and run it to its end."""
        patches = [(_health, "_PING_CHUNK", self.ping_chunk)]
        saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
        for module, name, value in patches:
            setattr(module, name, value)
        self.strands = [Strand(self, n + 1) for n in range(self.n_strands)]
        for strand, speed in zip(self.strands, self.speeds, strict=True):
            strand.speed = speed
        try:
            self._feed("start", self.core.start)
            self.check()
            close_at = self.rng.randint(steps // 3, steps) if self.close_early else -1
            for i in range(steps):
                self.step += 1
                if i == close_at:
                    self._send("close")
                    if self.rng.random() < 0.3:
                        self._send("close")  # again, while it closes
                else:
                    self._random_step()
                self.check()
                if self.stopped and not self.inbox and not self._runnable_actors():
                    break
            self._finish()
        except Violation as violation:
            return SimResult(
                self.seed, self.step, str(violation), self._trace(), self.seen
            )
        finally:
            for strand in self.strands:
                strand.stop()
            for module, name, value in saved:
                setattr(module, name, value)
            # Leases the run leaves behind are collected quietly.
            self.pub.on_lost = None
            self.dropped.clear()
            self.dropped_blocks.clear()
        return SimResult(self.seed, self.step, seen=self.seen)

    def _random_step(self) -> None:
        x = self.rng.random() * 100
        if x < 50 and self._serve_unread_ask():  # (a rare moment: taken often)
            return
        if x < 10:
            self._client()
        elif not (
            (x < 30 and self._strand_step())
            or (30 <= x < 42 and self._strand_start())
            or (42 <= x < 43.5 and self._checkin())
            or (43.5 <= x < 45.5 and self._give_up())
            or (45.5 <= x < 49.5 and self._fleet_step())
            or (49.5 <= x < 49.9 and self._lose_actor())
            or (49.9 <= x < 51 and self._collect())
        ):
            self._progress()

    def _serve_unread_ask(self) -> bool:
        """A caller checks in a lease of a key whose self-queued checkout's
        `ASK` the core has not read yet, and runs its checkin at once: the
        core then reads a checkout a checkin served (or skipped, if it gave
        up) before it reads the checkout itself (`Waiters.taken`)."""
        asks = [n for n in self.pub.notes if isinstance(n, tuple) and n[0] == ASK]
        unread = {n[1] for n in asks}
        wanted = [h for h in self.held if not h.forget and h.lease.key in unread]
        idle = [s for s in self.strands if not s.busy and not self._blocked(s)]
        if not wanted or not idle:
            return False
        held = self.rng.choice(wanted)
        if self.rng.random() < 0.3:  # its caller gives up first: skipped
            for note in asks:
                req = self.by_cid[note[2]]
                if note[1] == held.lease.key and req.state == "pending":
                    self.withdraw(req, KeyboardInterrupt("gave up"))
                    break
        self.held.remove(held)
        self.held.insert(0, held)  # `_strand_checkin` takes it (see there)
        strand = self.rng.choice(idle)
        if not self._strand_checkin(strand, first=True):
            return False
        self._seen("a checkin of a key whose ASK is unread")
        while strand.busy:
            self._resume(strand)
        return True

    def _progress(self) -> None:
        """The supervisor or an actor does its next thing; if nothing is due,
        time passes."""
        if self.rng.random() < 0.5:
            done = self._deliver() or self._actor_step()
        else:
            done = self._actor_step() or self._deliver()
        if not done:
            self._tick()

    def _finish(self) -> None:
        """Check liveness; close the pool, run it until `Stopped`, let the
        actors finish, check."""
        self._liveness()
        if not self.stopped:
            self._send("close")
        for _ in range(FINISH_STEPS):
            if self.stopped:
                break
            self.step += 1
            x = self.rng.random()
            if not (
                (x < 0.01 and self._checkin())
                or (0.01 <= x < 0.05 and self._strand_start(checkin=True))
                or (0.05 <= x < 0.07 and self._give_up())
                or (0.07 <= x < 0.12 and self._fleet_step())
                or (0.12 <= x < 0.3 and self._strand_step())
                or (0.3 <= x < 0.33 and self._collect())
            ):
                self._progress_or_jump()
            self.check()
        else:
            phases = [(r.rid, r.phase.value) for r in self.core.resources.values()]
            raise Violation(
                f"the pool did not stop within {FINISH_STEPS} steps of close() "
                f"(used={self.core.used}, resources={phases})"
            )
        for _ in range(FINISH_STEPS):  # callers' calls in progress end too
            if not self._strand_step():
                break
            self.step += 1
            self.check()
        # Leases still out after the stop are checked in (forgotten ones too):
        # a resource the close left to its holders closes at its last checkin,
        # read by the caller (`PoolRef.wake` calls `core.late_notes`).
        out = [h.lease for h in self.held]
        out += [lease for users in self.users.values() for lease in users]
        for lease in out:
            if not lease.checked_in:
                self._note(f"after the stop: checkin {_short(lease)}")
                self.pub.checkin(lease, False)
        self.held.clear()
        # Blocks too: their callers leave them; dropped ones are collected,
        # and checked in by the thread `PoolRef.lost` starts after the stop.
        for block in self.blocks_in:
            self._note(f"after the stop: leave {block!r}")
            self.pub.leave(block)
            block.state = "out"
        self.blocks_in.clear()
        while self.dropped_blocks:
            self._collect_block(self.dropped_blocks[0])
        for lease in self.late_lost:
            self._note(f"after the stop: checkin {_short(lease)} (a block's)")
            self.pub.checkin(lease, False)
        self._feed("late", self.core.late_notes)
        for _ in range(FINISH_STEPS):  # actors with a finite hang end too
            self.step += 1
            if not self._actor_step():
                due = self._next_due()
                if due == INF:
                    break
                self.now = max(self.now, due)
        self.final_check()

    def _liveness(self) -> None:
        """Before closing: every dropped lease is collected and every message
        and note read; then every holder the core counts is a lease a caller
        holds (or is checking in), so every key serves again."""
        if self.stopped:
            return
        self.quiescing = True  # callers' threads stay where they are
        pub = self.pub
        for _ in range(FINISH_STEPS):
            if self.stopped:
                break
            self.step += 1
            if not self._collect(every=True):
                if not (
                    self.inbox
                    or pub.notes
                    or pub.hits
                    or pub.used
                    or pub.entered
                    or self.core.later
                ):
                    break
                if not self._deliver():
                    self._feed("poll", self._poll_event)
            self.check()
        self.quiescing = False
        if self.stopped:
            return
        held = {id(h.lease) for h in self.held}
        held.update(id(s.lease) for s in self.strands if s.busy and s.lease)
        for res in self.core.resources.values():
            if res.phase not in _IN_SERVICE:
                continue
            users = self.users.get(res.rid, ())
            lost = [lease for lease in users if id(lease) not in held]
            if lost or res.holders != len(users):
                raise Violation(
                    f"liveness: resource {res.rid} ({res.phase.value}) counts "
                    f"{res.holders} holders; leases out nobody holds: "
                    f"{[_short(lease) for lease in lost]} (collected "
                    f"{self.collected}, never reported {len(self.unreported)})"
                )
        busy = {id(s.block) for s in self.strands if s.busy and s.block}
        for res in self.core.resources.values():
            stray = [
                lid
                for lid in res.blocks
                if self.blocks[lid].state != "in" and id(self.blocks[lid]) not in busy
            ]
            if stray:
                raise Violation(
                    f"liveness: resource {res.rid} ({res.phase.value}) counts "
                    f"blocks {stray} nobody is inside"
                )

    def _progress_or_jump(self) -> None:
        if not (self._deliver() or self._actor_step()):
            if self.fleet is not None and self.fleet.pending and self._fleet_step():
                return
            due = self._next_due()  # nothing to do until then
            self.now = due if self.now < due < INF else self.now + 1.0
            self._note("time jump")

    # --- time -------------------------------------------------------------------

    def _next_due(self) -> float:
        """The next moment an actor finishes something or a timer is due (now,
        while the supervisor has messages: it reads them at once)."""
        if self.inbox and not self.stopped:
            return self.now
        due = min((a.due for a in self.actors if not a.dead and a.mailbox), default=INF)
        deadline = None if self.stopped else self.core.next_deadline()
        return due if deadline is None else min(due, deadline)

    def _tick(self) -> None:
        """Time passes: a caller's pause or a quiet spell, up to what is due."""
        rng = self.rng
        if rng.random() < self.p_quiet:
            dt = rng.uniform(0.0, 5.0)  # a quiet spell: expiries and timeouts
        else:
            dt = rng.expovariate(1.0 / self.tempo)
        if rng.random() > self.p_late:
            # What is due first happens first; now and then the clock runs
            # ahead and things due at nearly the same time race.
            dt = max(0.0, min(dt, self._next_due() - self.now))
        self.now += dt
        self._note(f"time +{dt:.3f}")

    # --- tracing ------------------------------------------------------------------

    def _note(self, what: str) -> None:
        self.trace.append((self.step, self.now, what))

    def _trace(self) -> list[str]:
        return [f"  step {s} t={t - T0:.3f} {what}" for s, t, what in self.trace]

    # --- the shell: feeding the core --------------------------------------------

    def _feed(self, name: str, event: Callable[[float], None], rid: int = 0) -> None:
        """One core event and its effects, as the supervisor's `_step` does:
        the event under the counter's lock (one atomic step for every
        caller), its effects after, outside it (callers may run between)."""
        core = self.core
        self._event = (name, rid)
        self._pre = self._snapshot()
        self._reclaimed_before = core.n["reclaimed"]
        self._grants = []
        self._replied = set()
        self._created_keys = set()
        self._created_rids = set()
        self._asks = []
        self.in_event = True
        try:
            with self.lock:
                rang = self.pub.noted
                event(self.now)
                core.handed.clear()  # the shell forgets replies a checkin settled
                self._core_rang(rang)
            self._effects()
        except Violation:
            raise
        except Exception as error:  # a bug of the core: the real shell crashes
            raise Violation(f"core raised {error!r} in {name}") from error
        finally:
            self.in_event = False
        self._after_event()

    def _core_rang(self, before: int) -> None:
        """Only callers ring the doorbell (and send the `Notes` message that
        goes with it); a core event that leaves it `WOKEN` strands it there:
        no caller rings again, and polls never make it `QUIET`."""
        pub = self.pub
        if pub.noted == WOKEN and before != WOKEN:
            if "lost-rings" not in self.known:
                raise Violation(
                    f"the core's {self._event[0]} left the doorbell WOKEN, and no "
                    "Notes message is on its way (Counter.lost rings)"
                )
            pub.noted = before  # the fix: `Counter.lost` leaves it as it was

    def _effects(self) -> None:
        """Carry out the core's effects, in order; callers' threads may do a
        counter call between two of them (the shell runs them unlocked)."""
        effects = self.core.effects
        while effects:
            if (
                self.p_between
                and not self.quiescing
                and self.rng.random() < self.p_between
            ):
                busy = [s for s in self.strands if s.busy]
                if busy:
                    strand = self._pick(busy)
                    self._note(
                        f"    {strand!r} {strand.op} {strand.key!r}: {strand.at} "
                        f"(amid the effects of {self._event[0]})"
                    )
                    strand.resume()
                    self._after_strand(strand)
            self._do(effects.pop(0))

    def _snapshot(self) -> dict[str, Any]:
        core = self.core
        return {
            "waiters": {k: list(e.waiters) for k, e in core.keys.items() if e.waiters},
            "slots": list(core.waiters.slots),
            "joined": {c.cid: c.joined.rid for c in core.callers.values() if c.joined},
            "open": {
                r.rid
                for r in core.resources.values()
                if r.phase is Phase.OPEN and r.mapped
            },
        }

    def _deliver(self) -> bool:
        """One turn of the supervisor's loop: due timers first, else one message."""
        if self.stopped:
            return False
        core = self.core
        deadline = core.next_deadline()
        if deadline is not None and deadline <= self.now:
            timers = core.timers
            due = sorted(
                (when, f"{kind}({ident})")
                for when, handle, kind, ident in timers._heap
                if when <= self.now and handle not in timers._cancelled
            )
            self._note("advance: " + ", ".join(what for _, what in due))
            self._feed("advance", core.advance)
            self._check_deadlines()
            return True
        pub = self.pub
        if not self.inbox:
            if pub.noted == QUIET and not core.later:
                return False  # the supervisor sleeps until a message comes
            deadline = core.next_deadline()  # it waits POLL for a message
            wait = POLL if deadline is None else min(POLL, deadline - self.now)
            self.now += max(0.0, wait)
            self._note(f"poll ({len(pub.notes)} notes, {len(pub.hits)} hits)")
            self._feed("poll", self._poll_event)
            return True
        if pub.notes or pub.hits or core.later:
            # The supervisor reads the notes before each message: a caller's
            # notes precede its later messages (a checkout that queued
            # itself is read before its withdrawal, even one a poll put off).
            self._note("notes before a message")
            self._feed("notes", self._drain_event)
            return True
        match self.inbox.popleft():
            case ("req", req):
                self._read(req)
            case ("withdraw", req):
                self._note(f"withdraw #{req.n} cid={req.cid}")
                req.withdraw_read = True
                waiters = core.waiters
                if req.cid in core.callers or req.cid in waiters.gave_up:
                    self.counts["timeouts"] += 1
                elif req.cid in waiters.taken:  # a checkin skipped it, unread
                    self._seen("a give-up of a checkout a checkin skipped, unread")
                    self.counts["timeouts"] += 1
                self.pending_callers.pop(req.cid, None)
                self._feed("give_up", lambda now: core.give_up(now, req.cid))
                self.undelivered_cids.discard(req.cid)
                if req.cid in core.callers or req.cid in core.waiters.taken:
                    raise Violation(f"cid {req.cid} still waits after its give-up")
            case ("ready", rid, attempt, obj):
                res = core.resources.get(rid)
                accepted = (
                    res is not None
                    and res.phase is Phase.CREATING
                    and res.attempts == attempt
                )
                self._note(f"ready rid={rid}.{attempt}{'' if accepted else ' (stale)'}")
                if accepted:
                    self.counts["created"] += 1
                    self.opened.append(obj.key)
                self._feed("ready", lambda now: core.ready(now, rid, attempt, obj), rid)
            case ("failed", rid, attempt, err):
                self._note(f"failed rid={rid}.{attempt}")
                self._feed(
                    "failed", lambda now: core.failed(now, rid, attempt, err), rid
                )
            case ("closed", rid, attempt, err):
                self._note(f"closed rid={rid}.{attempt} raised={err is not None}")
                actor = self.shell_actors.get(rid)
                if actor is not None and actor.attempt == attempt:
                    del self.shell_actors[rid]
                self._feed(
                    "closed", lambda now: core.closed(now, rid, attempt, err), rid
                )
            case ("ping_result", rid, seq, err):
                self._note(f"ping_result rid={rid} seq={seq} ok={err is None}")
                self._feed(
                    "ping_result", lambda now: core.ping_result(now, rid, seq, err), rid
                )
            case ("granted", rid, held):
                fleet = self.fleet
                assert fleet is not None
                if held and rid in fleet.held:
                    fleet.held[rid] = "delivered"
                self._note(f"global granted rid={rid} held={held}")
                self._feed(
                    "global_granted", lambda now: core.global_granted(now, rid, held)
                )
            case ("unavailable", rid):
                self._note(f"global unavailable rid={rid}")
                err = ConnectionError("fleet capacity unreachable")
                self._feed(
                    "global_unavailable",
                    lambda now: core.global_unavailable(now, rid, err),
                )
            case ("lost", rid):
                assert self.fleet is not None
                self.fleet.lost_inflight.discard(rid)
                self._note(f"global lost rid={rid}")
                self._feed("global_lost", lambda now: core.global_lost(now, rid))
            case ("lost_lease", lease):
                self._note(f"lease lost: {_short(lease)}")
                self._feed("lost", lambda now: core.lost(now, lease), lease.rid)
            case ("resume",):
                self._note("resume")
                self._feed("resume", core.resume)
            case ("notes",):
                self.notes_msgs -= 1
                self._note(f"notes ({len(pub.notes)} left)")
                self._feed("notes", self._notes_event)
            case other:  # pragma: no cover - a bug of the simulator
                raise AssertionError(other)
        return True

    def _read(self, req: Req) -> None:
        """The shell reads a request: gives it a cid and feeds it to the core."""
        core = self.core
        self.next_cid += 1
        cid = req.cid = self.next_cid
        self.by_cid[cid] = req
        req.mark = len(self.opened)
        kind = req.kind
        gone = req.gone_at_read = req.state != "pending"
        detail = f" timeout={_f(req.timeout)}" if kind in _GRANTS else ""
        self._note(
            f"read #{req.n} {kind} cid={cid} key={req.key!r}{detail}"
            f"{' (gave up already)' if gone else ''}"
        )
        if kind in _GRANTS:
            self._read_acquire(req, gone)
        elif kind == "checkin":
            self._read_checkin(req)
        elif kind == "release":
            entry = core.keys.get(req.key)
            req.targets = tuple(r.rid for r in entry.resources) if entry else ()
            req.expect = bool(set(req.targets) & self._pre_open())
            refills = [
                i for i in core.waiters.slots if _is_refill(i) and i.key == req.key
            ]
            self.counts["releases"] += (
                sum(
                    1
                    for r in core.resources.values()
                    if r.key == req.key and r.phase in COUNTED
                )
                if refills
                else len(req.targets)
            )
            self._feed("release", lambda now: core.release(now, cid, req.key))
            entry = core.keys.get(req.key)
            left = (
                [r.rid for r in entry.resources if r.rid in req.targets]
                if entry
                else []
            )
            if left:
                raise Violation(f"release({req.key!r}) left {left} in the key map")
        elif kind == "release_all":
            req.targets = tuple(
                r.rid for r in core.resources.values() if r.phase in COUNTED
            )
            self.counts["releases"] += sum(
                1 for r in core.resources.values() if r.phase in COUNTED and r.mapped
            )
            self._feed("release_all", lambda now: core.release_all(now, cid))
        elif kind == "refresh":
            entry = core.keys.get(req.key)
            any_open = entry is not None and any(
                r.phase is Phase.OPEN for r in entry.resources
            )
            self.counts["refreshed"] += any_open and core.closing is None
            self._feed("refresh", lambda now: core.refresh(now, cid, req.key))
            if not any_open and (req.answers != 1 or req.got is not False):
                raise Violation(f"refresh of a key with nothing open gave {req.got!r}")
        elif kind == "prewarm":
            self._feed("prewarm", lambda now: core.prewarm(now, cid, req.arg))
        elif kind == "contains":
            self._feed("contains", lambda _now: core.contains(cid, req.key))
        elif kind == "stats":
            self._feed("stats", lambda _now: core.stats(cid))
        elif kind == "pop_stats":
            self.pop_total = core.snapshot()  # what the reply is checked against
            self._feed("pop_stats", lambda _now: core.pop_stats(cid))
        elif kind == "resize":
            before = {r.rid: r for r in core.resources.values() if r.mapped}
            self._feed("resize", lambda now: core.resize(now, cid, req.arg))
            req.targets = tuple(rid for rid, r in before.items() if not r.mapped)
            if core.closing is None:
                self._seen("resize: shrink" if req.targets else "resize")
                if any(
                    core.resources[rid].phase is Phase.RETIRING
                    for rid in req.targets
                    if rid in core.resources
                ):
                    self._seen("resize: a held resource retires")
                self.over = max(core.cap, core.used)
                service = [
                    r
                    for r in core.resources.values()
                    if r.mapped and r.phase in COUNTED
                ]
                if len(service) > core.cap:
                    raise Violation(
                        f"resize({req.arg}) left {len(service)} resources in service"
                    )
        elif kind == "list":
            self._feed("list", lambda _now: core.list_resources(cid))
        elif kind == "health":
            self._feed("health", core.health_check)
        elif kind == "close":
            self._feed("close", lambda now: core.close(now, cid))
        else:  # pragma: no cover - a bug of the simulator
            raise AssertionError(kind)

    def _pre_open(self) -> set[int]:
        core = self.core
        return {
            r.rid for r in core.resources.values() if r.phase is Phase.OPEN and r.mapped
        }

    def _read_acquire(self, req: Req, gone: bool) -> None:
        core, cid = self.core, req.cid
        self.counts["acquires"] += 1
        timeout = req.timeout if req.timeout is not None else self.opts.acquire_timeout
        req.deadline = self.now + timeout if timeout else INF
        if not gone:
            self.pending_callers[cid] = req
        hold = req.kind == "checkout"
        place = self._place_for(req.key, hold)
        self._feed(
            req.kind,
            lambda now: core.acquire(
                now, cid, req.key, req.timeout, {}, hold=hold, gone=gone
            ),
        )
        if cid in self._replied:  # answered at once: a hit
            self.counts["hits"] += 1
            entry = core.keys.get(req.key)
            still = entry.waiters if entry is not None else {}
            older = [c for c in self._pre["waiters"].get(req.key, ()) if c in still]
            if older:
                raise Violation(
                    f"FIFO: cid {cid} of {req.key!r} served at once while earlier "
                    f"waiters {older} still wait"
                )
        if gone and not req.answers:  # given up before it was read: a timeout
            self.counts["timeouts"] += 1
        caller = core.callers.get(cid)
        queued = caller is not None and caller.waiting
        refused = isinstance(req.got, AcquireTimeout | TooManyWaiters)
        if place and (queued or refused) and core.closing is None:
            raise Violation(
                f"cid {cid} {'queued' if queued else 'refused'} although {place}"
            )
        if req.kind == "acquire" and not self.shared:
            if req.answers != 1 or not isinstance(req.got, TypeError):
                raise Violation(f"acquire() of a lease pool gave {req.got!r}")
        elif isinstance(req.got, TypeError):
            raise Violation(f"{req.kind} of a pool that allows it: {req.got!r}")

    def _place_for(self, key: Hashable, hold: bool) -> str:
        """What a new request of `key` should get at once, if anything: a
        place on an open resource or on a creation in flight (SPEC 3, 8)."""
        entry = self.core.keys.get(key)
        if entry is None:
            return ""
        limit = self.opts.max_holders
        exclusive = hold and self.exclusive
        if exclusive and entry.waiters:
            return ""  # queued callers come first
        for res in entry.resources:
            if res.phase is Phase.OPEN:
                if exclusive:  # free only if in its idle list
                    assert res.home is not None
                    if res in res.home and not res.retired:
                        return f"resource {res.rid} is idle"
                    continue
                busy = res.holders + (1 if res.ping_seq and limit == 1 else 0)
                if not hold or limit is None or busy < limit:
                    return f"resource {res.rid} has room"
            else:  # in the key map: reserving or creating
                places = res.holders + sum(c.hold for c in res.joiners)
                if not hold or limit is None or places < limit:
                    return f"creation {res.rid} has a place"
        return ""

    def _read_checkin(self, req: Req) -> None:
        """A `Checkin` message (from an actor): the core gives the lease back."""
        core, cid = self.core, req.cid
        lease, broken = req.arg
        ours = lease.pool is self.pool_id
        was_out = not lease.checked_in
        self._feed("checkin", lambda now: core.checkin(now, cid, lease, broken))
        if not ours:
            if not isinstance(req.got, ValueError):
                raise Violation(f"checkin of another pool's lease gave {req.got!r}")
            return
        claimed = was_out and lease.checked_in
        if req.got is not claimed:
            raise Violation(
                f"checkin of {_short(lease)} gave {req.got!r}; its claim "
                f"{'succeeded' if claimed else 'failed'}"
            )

    # --- effects ------------------------------------------------------------------

    def _do(self, effect: fx.Effect) -> None:
        match effect:
            case fx.Log():
                pass
            case fx.Reply():
                self._on_reply(effect)
            case fx.Fail():
                self._on_fail(effect)
            case fx.Start():
                self._on_start(effect)
            case fx.Ping(rid, seq):
                self._note(f"  -> Ping rid={rid} seq={seq}")
                if self.exclusive:
                    using = self._using(rid)
                    if using:
                        raise Violation(
                            f"exclusive resource {rid} pinged while {using} has it"
                        )
                    res = self.core.resources[rid]
                    assert res.home is not None
                    if res in res.home:
                        raise Violation(
                            f"exclusive resource {rid} pinged while in its idle list"
                        )
                actor = self.shell_actors.get(rid)
                if actor is not None and not actor.dead:
                    self._tell(actor, ("ping", seq))
            case fx.Close(rid):
                self._on_close(rid)
            case fx.Abandon(rid):
                self._note(f"  -> Abandon rid={rid}")
                self.counts["abandoned"] += 1
                actor = self.shell_actors.get(rid)
                if actor is not None:
                    actor.abandoned = True
            case fx.ReserveSlot(rid):
                self._on_reserve(rid)
            case fx.CancelSlot(rid):
                self._on_slot_back(rid, cancel=True)
            case fx.ReturnSlot(rid):
                self._on_slot_back(rid, cancel=False)
            case fx.Resume():
                self.inbox.append(("resume",))
            case fx.Stopped():
                self._on_stopped()
            case _:  # pragma: no cover - a new effect the simulator ignores
                raise AssertionError(effect)

    def _answered(self, cid: int, what: str) -> Req:
        req = self.by_cid.get(cid)
        if req is None:
            raise Violation(f"{what} to unknown cid {cid}")
        req.answers += 1
        if req.answers > 1:
            raise Violation(f"cid {cid} ({req.kind}) answered twice ({what})")
        self.pending_callers.pop(cid, None)
        return req

    def _on_reply(self, effect: fx.Reply) -> None:
        req = self._answered(effect.cid, "Reply")
        value = req.got = effect.value
        kind = req.kind
        self._note(f"  -> Reply cid={effect.cid} ({kind}) {_short(value)}")
        self._check_view("a reply is sent")
        if kind in _GRANTS:
            self._on_grant(req, value)
            self._replied.add(effect.cid)
            if req in self._asks and effect.caller is None:  # at once: a hit
                self.counts["hits"] += 1
            if isinstance(value, Lease):  # the core counted it (`_hand`)
                self.expect[value.rid] = self.expect.get(value.rid, 0) + 1
                self._lease_out(value, f"cid {req.cid}")
        if req.state == "pending":
            req.state, req.value = "value", value
            if req.future is not None:
                req.future.settled()
            if kind == "checkout":
                if req.orphan:
                    self._drop(value, f"cid {req.cid} was interrupted before it waited")
                elif self.rng.random() < 4 * self.p_interrupt:
                    # An interrupt lands just after the caller's wait returns.
                    self._drop(value, f"cid {req.cid} interrupted as it got it")
                else:
                    self.held.append(Held(value, self.rng.random() < self.p_forget))
            elif kind == "acquire":
                self.acquired.add(value.rid)
        elif kind in _GRANTS:
            # The caller withdrew before the grant reached it: the shell hands
            # the grant back, in a step of its own (`core.undelivered` under
            # the counter's lock; its effects join this event's).
            req.undelivered = True
            self.undelivered_cids.add(effect.cid)
            if isinstance(value, Lease):
                self.handed_back.add(value.rid)
            self._note(f"  undelivered cid={effect.cid}")
            self._seen("grant undelivered")
            with self.lock:
                rang = self.pub.noted
                self.core.undelivered(self.now, effect)
                self._core_rang(rang)
        if kind == "contains":
            self._check_contains(req, value)
        if kind in ("release", "release_all", "resize"):
            self._check_release_reply(req, value)
        elif kind == "refresh":
            if not isinstance(value, bool):
                raise Violation(f"refresh gave {value!r}")
            if value and req.key not in self.opened[req.mark :]:
                raise Violation(f"refresh({req.key!r}) gave True; nothing new opened")
        elif kind == "prewarm":
            self._check_prewarm_reply(req, value)
        elif kind == "close" and not self.stopped:
            raise Violation("close() answered before the pool stopped")
        elif kind == "list":
            for key, obj in value:
                res = self.core.resources.get(obj.rid)
                if res is None or res.phase is not Phase.OPEN or res.key != key:
                    raise Violation(f"list_resources() shows {obj!r}, not open")
        elif kind == "stats" and value.open_resources > max(self.core.cap, self.over):
            raise Violation(f"stats.open_resources={value.open_resources} > the cap")
        elif kind == "pop_stats":
            self._check_pop_stats(self.pop_total, value)

    def _lease_out(self, lease: Lease[Any, Any], who: str) -> None:
        """A lease is out (granted, taken or handed on at the counter) until
        its checkin is noted."""
        rid = lease.rid
        self.holding[lease] = rid
        users = self.users.setdefault(rid, {})
        users[lease] = None
        limit = self.opts.max_holders
        if limit is not None and len(users) > limit:
            raise Violation(
                f"resource {rid} has {len(users)} users > max_holders={limit} "
                f"({who} got it)"
            )
        if self.exclusive:
            res = self.core.resources.get(rid)
            if res is not None and res.home is not None and res in res.home:
                raise Violation(
                    f"exclusive resource {rid} given to {who} while in its idle list"
                )

    def _using(self, rid: int) -> str:
        """Who uses resource `rid` now (leases out, their checkin not noted;
        blocks inside it, or on their way out with their id still counted),
        or ''."""
        users = [_short(lease) for lease in self.users.get(rid, ())]
        for block in self.blocks.values():
            place = block.place
            if place is None or place[0].rid != rid or block.state == "out":
                continue
            if block.state == "in" or place[1] in place[0].blocks:
                users.append(repr(block))
        return ", ".join(users)

    def _check_contains(self, req: Req, value: Any) -> None:
        """`contains(key)`: whether a resource of the key is in service or in
        creation -- by the resources table, and by the leases out."""
        key = req.key
        live = any(
            r.key == key and r.mapped and r.phase in _LIVE
            for r in self.core.resources.values()
        )
        held = any(
            (res := self.core.resources.get(rid)) is not None
            and res.key == key
            and res.mapped
            and res.phase is Phase.OPEN
            for rid, users in self.users.items()
            if users
        ) or any(
            b.place is not None
            and b.place[0].key == key
            and b.place[0].mapped
            and b.place[0].phase is Phase.OPEN
            for b in self.blocks_in
        )
        if value is not live or (held and not value):
            raise Violation(
                f"contains({key!r}) gave {value!r}; in service or creation: {live}, "
                f"held open: {held}"
            )

    def _on_grant(self, req: Req, value: Any) -> None:
        """A resource (acquire) or a lease (checkout) granted to `req`."""
        if req.withdraw_read:
            raise Violation(f"cid {req.cid} granted after its give-up reached the pool")
        wanted = Lease if req.kind == "checkout" else Res
        if not isinstance(value, wanted) or value.key != req.key:
            raise Violation(f"{req.kind}({req.key!r}) answered with {value!r}")
        if isinstance(value, Lease) and value.pool is not self.pool_id:
            raise Violation(f"checkout answered with another pool's {value!r}")
        rid = value.rid
        self.counts["checkouts"] += req.kind == "checkout"
        res = self.core.resources.get(rid)
        if res is None:
            raise Violation(f"cid {req.cid} granted resource {rid}, which is gone")
        joined = self._pre["joined"].get(req.cid)
        if joined is not None:
            if joined != rid:
                raise Violation(f"cid {req.cid} joined {joined} but got {rid}")
        elif rid in self._pre["open"] or self._event == ("ready", rid):
            self._grants.append((req.cid, rid))
        else:
            raise Violation(
                f"cid {req.cid} granted resource {rid} ({res.phase.value}), "
                "which was not open and in service"
            )
        if self.opts.max_holders == 1 and req.kind == "checkout" and res.ping_seq:
            raise Violation(f"exclusive resource {rid} handed out while pinged")
        if joined is None and res.retired:  # joiners are served, then it retires
            raise Violation(f"cid {req.cid} granted retired resource {rid}")

    def _on_fail(self, effect: fx.Fail) -> None:
        req = self._answered(effect.cid, "Fail")
        error = req.got = effect.error
        self._note(f"  -> Fail cid={effect.cid} ({req.kind}) {type(error).__name__}")
        if isinstance(error, TooManyWaiters):
            self.counts["rejected"] += 1
            limit = self.opts.max_waiting
            if limit is None or self.core.waiters.queued < limit:
                raise Violation(
                    f"TooManyWaiters with {self.core.waiters.queued} waiting"
                )
        elif isinstance(error, AcquireTimeout) and error.__cause__ is None:
            self.counts["timeouts"] += 1  # (not the fleet's: unreachable)
        if req.state == "pending":
            req.state, req.value = "error", error
            if req.future is not None:
                req.future.settled()

    def _check_release_reply(self, req: Req, value: Any) -> None:
        for rid in req.targets:
            res = self.core.resources.get(rid)
            if res is None or res.phase in (Phase.RETIRING, Phase.ABANDONED):
                continue
            # Closing is fine if it was retiring with holders when the core
            # answered and its drain ended since, or if a lease a caller had
            # withdrawn from was handed back after the answer.
            if res.phase is not Phase.CLOSING or (
                rid not in self.handed_back and rid not in self.retiring_since
            ):
                raise Violation(
                    f"{req.kind} answered while resource {rid} is {res.phase.value}"
                )
        if req.kind in ("release_all", "resize"):
            if value is not None:
                raise Violation(f"{req.kind}() gave {value!r}")
        elif not isinstance(value, bool) or (req.expect and not value):
            raise Violation(f"release({req.key!r}) of an open key gave {value!r}")

    def _check_pop_stats(self, total: Stats, value: Stats) -> None:
        """`pop_stats` counts since the last one; gauges are now's."""
        for name in COUNTERS:
            since = getattr(total, name) - self.popped.get(name, 0)
            if not math.isclose(getattr(value, name), since, abs_tol=1e-9):
                raise Violation(
                    f"pop_stats().{name}={getattr(value, name)}, {since} since the "
                    "last one"
                )
        for name in GAUGES:
            if getattr(value, name) != getattr(total, name):
                raise Violation(f"pop_stats().{name} is not the gauge now")
        self.popped = {name: getattr(total, name) for name in COUNTERS}

    def _check_prewarm_reply(self, req: Req, value: Any) -> None:
        keys = list(dict.fromkeys(req.arg))
        if not isinstance(value, dict) or list(value) != keys:
            raise Violation(f"prewarm({keys}) gave {value!r}")
        for key, outcome in value.items():
            if outcome not in ("created", "open", "not_created", "failed"):
                raise Violation(f"prewarm outcome {outcome!r}")
            if outcome == "created" and key not in self.opened[req.mark :]:
                raise Violation(f"prewarm says {key!r} was created; nothing opened")

    def _on_start(self, effect: fx.Start) -> None:
        rid, attempt, key = effect.rid, effect.attempt, effect.key
        self._note(f"  -> Start rid={rid}.{attempt} key={key!r}")
        old = self.shell_actors.get(rid)
        if old is not None and not old.dead and (old.in_factory or old.obj):
            raise Violation(f"Start of {rid}.{attempt} while try {old.attempt} runs")
        res = self.core.resources.get(rid)
        if res is None or res.key != key:
            raise Violation(f"Start of resource {rid} the core does not have")
        fleet = self.fleet
        if fleet is not None and not (
            fleet.held.get(rid) == "delivered"
            or rid in fleet.open_grants
            or rid in fleet.lost_inflight  # granted, then lost: evicted next
        ):
            raise Violation(f"Start of resource {rid} without a fleet-wide slot")
        actor = Actor(rid, attempt, key)
        self._tell(actor, ("start",))
        self.shell_actors[rid] = actor
        self.actors.append(actor)
        if attempt == 0 and fleet is None:
            self._created_keys.add(key)
            self._created_rids.add(rid)

    def _on_close(self, rid: int) -> None:
        self._note(f"  -> Close rid={rid}")
        closes = self.closes[rid] = self.closes.get(rid, 0) + 1
        if closes > 1:
            raise Violation(f"Close of resource {rid} twice")
        since = self.retiring_since.get(rid)
        timed_out = since is not None and self.now >= since + self.opts.drain_timeout
        self.close_ok[rid] = timed_out
        res = self.core.resources[rid]
        using = self._using(rid)
        if using and not timed_out:
            raise Violation(
                f"Close of resource {rid} while {using} uses it, before its "
                "drain timeout"
            )
        if self.exclusive and not timed_out:
            assert res.home is not None
            if res in res.home:
                raise Violation(
                    f"Close of exclusive resource {rid} still in its idle list "
                    "(never taken by the core)"
                )
        if res.reason == "reclaimed" and rid in self.acquired:
            raise Violation(
                f"resource {rid} reclaimed although a plain acquire() returned it"
            )
        actor = self.shell_actors.get(rid)
        if actor is not None and not actor.dead:
            self._tell(actor, ("stop",))

    def _moved(self, res: Resource, before: Phase, event: str) -> None:
        """A resource moved along its lifecycle (the core's `_move`)."""
        rid, after = res.rid, res.phase
        if after is Phase.STANDBY:
            # A refresh's replacement is ready: once it is swapped in (in
            # this event), nothing it replaces may be in service.
            self.swapped.extend(res.replaces)
            self._seen("refresh: standby swapped in")
        if after is Phase.OPEN and type(res.blocks) is dict:  # blocks may enter
            res.blocks = SimBlocks(self)
        if after is Phase.RETIRING:
            self.retiring_since.setdefault(rid, self.now)
        if before is Phase.OPEN and after is not Phase.OPEN:  # out of service
            why = self.retired_as[rid] = res.reason
            counter = _RETIRED_AS.get(why)
            if counter is not None:
                self.counts[counter] += 1
                self._seen(f"retired: {why}")
            if why in ("max_idle_time", "reclaimed"):
                using = self._using(rid)
                if using:
                    raise Violation(
                        f"resource {rid} taken by {why} while {using} holds it"
                    )
            if why == "reclaimed" and rid in self.acquired:
                raise Violation(
                    f"resource {rid} reclaimed although a plain acquire() returned it"
                )
        holders = res.holders or res.tokens or res.blocks or res in self.pub.used
        if before is Phase.RETIRING and event == "close" and holders:
            # Closed under its holders (or the last block's exit not read yet).
            self.counts["drain_timeouts"] += 1
            self._seen("drain timeout")

    def _on_reserve(self, rid: int) -> None:
        fleet = self.fleet
        if fleet is None:
            raise Violation("ReserveSlot without a fleet-wide capacity")
        if rid in fleet.pending or rid in fleet.held:
            raise Violation(f"ReserveSlot for resource {rid} twice")
        fleet.pending.append(rid)
        self._created_keys.add(self.core.resources[rid].key)
        self._created_rids.add(rid)

    def _on_slot_back(self, rid: int, *, cancel: bool) -> None:
        """CancelSlot (a reservation, or the slot granted meanwhile) or ReturnSlot."""
        fleet = self.fleet
        assert fleet is not None
        if not cancel and any(
            a.rid == rid and a.obj is not None and not a.abandoned for a in self.actors
        ):
            raise Violation(f"the fleet slot of {rid} returned while it exists")
        if cancel and rid in fleet.pending:
            fleet.pending.remove(rid)
        elif rid in fleet.held:
            del fleet.held[rid]
        else:
            fleet.strays += 1  # a stale grant given back: the driver ignores it

    def _on_stopped(self) -> None:
        self._note("  -> Stopped")
        if self.stopped:
            raise Violation("Stopped twice")
        if self.core.used:
            raise Violation(f"Stopped with {self.core.used} resources counted")
        self.stopped = True
        # The shell's mailbox closes: what is still in it is answered at once.
        for msg in self.inbox:
            if msg[0] == "req" and msg[1].state == "pending":
                msg[1].state, msg[1].value = "error", PoolClosedError("sim")
        self.inbox.clear()
        # Then every reply still pending fails (the shell's `take_grants`:
        # checkouts that queued themselves, read or not); withdrawals not
        # read are moot.
        self.pub.closed = "sim"
        for req in {
            id(r): r for r in (*self.pending_callers.values(), *self.direct)
        }.values():
            if req.state == "pending":
                req.state, req.value = "error", PoolClosedError("sim")
                req.answers += 1  # by the shell
        self.pending_callers.clear()

    # --- callers ------------------------------------------------------------

    def _timeout(self) -> float | None:
        rng = self.rng
        x = rng.random()
        if x < 0.1:
            return 0
        if x < 0.35:
            return None
        if x < 0.8:
            return rng.uniform(0.05, 4.0)
        return 1e10 if x < 0.9 else INF

    def _send(
        self, kind: str, key: Any = None, timeout: float | None = None, arg: Any = None
    ) -> Req:
        req = Req(len(self.reqs) + 1, kind, key, timeout, arg)
        self.reqs.append(req)
        if self.stopped:  # the mailbox is closed: answered at once
            req.state, req.value = "error", PoolClosedError("sim")
            self._note(f"send #{req.n} {kind}: the pool is closed")
        else:
            self.inbox.append(("req", req))
            self._note(f"send #{req.n} {kind} {key!r}")
        return req

    def _client(self) -> None:
        sizing = self.sizing_rng
        if sizing.random() < 0.03:
            if sizing.random() < 0.3:
                self._send("pop_stats")
            else:  # never below max_per_key: that is refused in the caller
                self._send("resize", arg=sizing.randint(self.opts.max_per_key, 5))
            return
        rng = self.rng
        key = rng.choice(self.keys)
        x = rng.random() * 100
        if self.calm and x < 79 and rng.random() < 0.7:
            x = 79 + rng.random() * 21  # seldom a release, refresh or request
        if x < 52:
            if self.shared:
                kind = "acquire" if rng.random() < 0.6 else "checkout"
            else:  # acquire() must fail with TypeError
                kind = "checkout" if rng.random() < 0.95 else "acquire"
            self._send(kind, key, self._timeout())
        elif x < 64:
            self._send("release", key)
        elif x < 66:
            self._send("release_all")
        elif x < 74:
            # A refresh meeting a creation in flight (the key's first, or a
            # standby) is a rare path: it is sought.
            making = [
                k
                for k, e in self.core.keys.items()
                if any(r.phase is not Phase.OPEN for r in e.resources)
            ]
            if making and rng.random() < 0.6:
                key = rng.choice(making)
                self._seen("refresh of a key in creation")
            self._send("refresh", key)
        elif x < 79:
            self._send("prewarm", arg=[rng.choice(self.keys) for _ in range(3)])
        elif x < 81:
            self._send("contains", key)
        elif x < 83:
            self._send("stats")
        elif x < 85:
            self._send("list")
        elif x < 93:
            self._send("health")
        elif x < 99 and self.returned:
            lease = rng.choice(self.returned)  # checked in before
            self._send("checkin", lease.key, arg=(lease, rng.random() < 0.3))
        else:
            foreign = Lease(key, None, pool=object(), rid=1, lid=1)
            self._send("checkin", key, arg=(foreign, False))

    def _checkin(self) -> bool:
        candidates = [h for h in self.held if not h.forget]
        if not candidates:
            return False
        held = self.rng.choice(candidates)
        self.held.remove(held)
        self.returned.append(held.lease)
        broken = self.rng.random() < self.p_broken
        self._send("checkin", held.lease.key, arg=(held.lease, broken))
        return True

    def _give_up(self) -> bool:
        # A caller gives up while it waits (its timeout, an interrupt in its
        # wait); an orphan's caller does not wait.
        pending = [
            r
            for r in self.reqs[-40:]
            if r.state == "pending" and r.kind != "close" and not r.orphan
        ]
        if not pending:
            return False
        req = self.rng.choice(pending)
        # Withdrawing wins only against a pending future; the shell learns of
        # it by message, after the request itself (one sender, FIFO).
        return self.withdraw(req, KeyboardInterrupt("gave up"))

    # --- callers' threads at the counter ------------------------------------

    def _strand_start(self, *, checkin: bool = False) -> bool:
        """An idle caller thread calls the facade: `acquire`, `checkout` (both
        ask the counter first, then the supervisor on a `MISS`; a checkout
        may queue itself at the counter) or `checkin` (always at the
        counter)."""
        idle = [s for s in self.strands if not s.busy and not self._blocked(s)]
        if not idle:
            return False
        rng = self.rng
        strand = rng.choice(idle)
        # Callers give back about as often as they take, more so when many
        # leases are out (a saturated pool serves nobody at the counter).
        out = len(self.held) / (2 * self.opts.max_open_resources)
        if checkin or rng.random() < 0.3 + 0.5 * min(1.0, out):
            if self.blocks_in and self.block_rng.random() < 0.5:
                return self._strand_leave(strand)
            return self._strand_checkin(strand)
        key = self._pick_key()
        strand.key, strand.timeout = key, self._timeout()
        strand.lease, strand.foreign, strand.claimed = None, False, False
        strand.block = None
        counter = self.counter
        fresh = [k for k, r in self.pub.view.items() if not r.handed_out]
        if self.shared and self.core.waiters.slots and fresh and rng.random() < 0.7:
            # An `acquire()` hit on a resource no plain acquire() has got yet,
            # while callers wait for a slot: it races a reclaim.
            key = strand.key = rng.choice(fresh)
            self._note(f"{strand!r} acquire {key!r} (a reclaim may race it)")
            self._seen("an acquire() of a fresh resource, callers wait for a slot")
            strand.start("acquire", lambda: self._acquire(strand, key))
        elif self.shared and rng.random() < 0.5:
            if self.p_block and self.block_rng.random() < self.p_block / 2:
                self._start_block(strand, key)
            else:
                self._note(f"{strand!r} acquire {key!r}")
                strand.start("acquire", lambda: self._acquire(strand, key))
        elif self.p_block and self.block_rng.random() < self.p_block:
            self._start_block(strand, key)
        else:
            self._note(f"{strand!r} checkout {key!r}")
            timeout = strand.timeout
            strand.start("checkout", lambda: self._checkout(strand, key, timeout))
        # An interrupt may land just after its counter call returns.
        strand.drop = rng.random() < 4 * self.p_interrupt
        del counter
        self._after_strand(strand)
        return True

    def _pick_key(self) -> Hashable:
        """The key a caller wants: mostly what is open (hot keys), often what
        the counter can serve; often a key with callers queued (FIFO between
        takes at the counter and queued callers), now and then any."""
        rng, pub = self.rng, self.pub
        keys = self.core.keys
        queued = sorted(
            {k for k, q in pub.queue.items() if q} | set(pub.waiting), key=str
        )
        if queued and rng.random() < 0.3:
            return rng.choice(queued)
        if self.exclusive:
            hot = [k for k, e in keys.items() if e.idle]
        else:
            hot = list(pub.view)
        if not hot or rng.random() < 0.3:
            hot = [k for k, e in keys.items() if e.resources]
        return rng.choice(hot if hot and rng.random() < 0.8 else self.keys)

    def _acquire(self, strand: Strand, key: Hashable) -> Any:
        """`Pool.acquire` as far as the counter goes: the resource, or `MISS`."""
        value = self.counter.hit(key)
        if strand.drop and value is not MISS:
            raise KeyboardInterrupt("after hit() returned")
        return value

    def _checkout(self, strand: Strand, key: Hashable, timeout: float | None) -> Any:
        """`Pool.checkout` as far as the counter goes: a lease, a future
        (queued itself), or `MISS` (it asks)."""
        counter = self.counter
        value = counter.take(key)
        if value is MISS:
            value = counter.enqueue(key, timeout, self.now)
        if strand.drop and value is not MISS:
            raise KeyboardInterrupt("after the counter returned")
        return value

    def _enter(
        self, strand: Strand, block: SimBlock, key: Hashable, timeout: float | None
    ) -> Any:
        """`LeaseBlock.__enter__` as far as the counter goes: the block path
        (undone at once if interrupted), else a checkout (`_checkout`)."""
        counter = self.counter
        try:
            value = counter.enter(key, block)
            if value is not MISS:
                if strand.drop:
                    raise KeyboardInterrupt("after enter() returned")
                return value
        except _Killed:
            raise
        except BaseException:
            counter.leave(block)
            raise
        return self._checkout(strand, key, timeout)

    def _start_block(self, strand: Strand, key: Hashable) -> None:
        """A caller enters `with pool.lease(key)` (`LeaseBlock.__enter__`)."""
        self._note(f"{strand!r} block {key!r}")
        timeout, block = strand.timeout, SimBlock(key)
        strand.block = block
        strand.start("block", lambda: self._enter(strand, block, key, timeout))

    def _leave(self, block: SimBlock, broken: bool) -> None:
        """`LeaseBlock.__exit__` on the block path: `leave`, made again if an
        interrupt lands in it."""
        counter = self.counter
        reason = "sim: broken" if broken else ""
        try:
            counter.leave(block, broken, reason)
        except _Killed:
            raise
        except BaseException:
            counter.leave(block, broken, reason)
            raise

    def _strand_leave(self, strand: Strand) -> bool:
        """A caller leaves one of the blocks it is inside (broken now and
        then); or its `__exit__` never runs: the block is dropped."""
        blocks = self.block_rng
        block = blocks.choice(self.blocks_in)
        self.blocks_in.remove(block)
        if blocks.random() < self.p_forget:
            self._drop_block(block, "its __exit__ never ran")
            return True
        broken = blocks.random() < self.p_broken
        strand.key, strand.block, strand.broken = block.key, block, broken
        strand.lease, strand.foreign, strand.claimed = None, False, False
        block.state = "leaving"
        self._note(f"{strand!r} leave {block!r} broken={broken}")
        strand.start("leave", lambda: self._leave(block, broken))
        self._after_strand(strand)
        return True

    def entered(self, strand: Strand, n: int) -> None:
        """A strand's step counted `n` blocks entered (`Counter.entered`)."""
        if strand.op != "block" or n != 1 or strand.counted:
            raise Violation(f"{strand!r} {strand.op} counted {n} more blocks entered")
        strand.counted = n
        for name in ("acquires", "hits", "checkouts"):
            self.counts[name] += n

    def _track(self, block: SimBlock) -> None:
        """After each step of a block's call: the id it was given, and where
        (a take at the counter: an open resource in service, nobody queued
        for its key)."""
        place = block.place
        if place is None or block.lid:
            return
        res, lid = place
        if lid in self.blocks:
            raise Violation(f"block id {lid} given twice")
        block.lid = lid
        self.blocks[lid] = block
        self._seen("block entered")
        if res.retired or res.phase is not Phase.OPEN or not res.mapped:
            state = "retired" if res.retired else res.phase.value
            raise Violation(f"a block entered {state} resource {res.rid}")
        if res.key != block.key:
            raise Violation(f"a block of {block.key!r} entered resource {res.rid}")
        self._check_fifo(res, block.key)

    def _block_done(
        self, strand: Strand, value: Any, error: BaseException | None
    ) -> bool:
        """A block's call returned (or raised): whether it is done with (else
        it fell back to a checkout, handled as one)."""
        block = strand.block
        assert block is not None
        strand.block = None
        interrupted = isinstance(error, KeyboardInterrupt)
        if error is not None and not interrupted:
            raise Violation(f"{strand!r} {strand.op} raised {error!r}") from error
        if block.place is not None and interrupted:  # its undo, or its exit,
            self._drop_block(block, "a second interrupt")  # was interrupted too
            return strand.op == "leave"
        if strand.op == "leave":
            if block.place is not None:
                raise Violation(f"leave of {block!r} left it inside")
            block.state = "out"
            self._seen("block left" + (" broken" if strand.broken else ""))
            return True
        if interrupted or not isinstance(value, Res):  # undone, or a lease instead
            if block.place is not None:
                raise Violation(f"{block!r} not taken, yet has a place")
            block.state = "out"
            if interrupted and block.lid:
                self._seen("block undone")
            return False
        place = block.place
        if place is None or place[0].obj is not value or strand.counted != 1:
            raise Violation(
                f"block of {block.key!r} got {value!r}: place {place}, "
                f"counted {strand.counted}"
            )
        block.state = "in"
        self.blocks_in.append(block)
        return True

    def _drop_block(self, block: SimBlock, why: str) -> None:
        """Nobody holds `block` any more, its place still set: it is collected
        at a later step (`LeaseBlock.__del__`)."""
        self._note(f"  {block!r} dropped ({why})")
        self._seen("block dropped")
        block.state = "dropped"
        self.dropped_blocks.append((block, self.step + self.rng.randint(1, 300)))

    @staticmethod
    def _blocked(strand: Strand) -> bool:
        """Whether the strand waits for the answer to its request."""
        asked = strand.asked
        if asked is not None and asked.state not in ("pending", "claimed"):
            strand.asked = asked = None
        return asked is not None

    def _strand_checkin(self, strand: Strand, *, first: bool = False) -> bool:
        rng = self.rng
        x = 0.0 if first else rng.random()
        candidates = [h for h in self.held if not h.forget]
        foreign = False
        if x < 0.9 and candidates:
            held = candidates[0] if first else rng.choice(candidates)
            self.held.remove(held)
            lease = held.lease
        elif x < 0.97 and self.returned:
            lease = rng.choice(self.returned)  # checked in already (or being)
        elif x >= 0.97:
            key = rng.choice(self.keys)
            lease = Lease(key, None, pool=object(), rid=1, lid=1)
            foreign = True
        else:
            return False
        broken = rng.random() < self.p_broken
        strand.key, strand.lease, strand.broken = lease.key, lease, broken
        strand.foreign, strand.claimed = foreign, False
        strand.was_out = not lease.checked_in
        if not foreign and lease not in self.returned:
            self.returned.append(lease)
        counter = self.counter
        if not foreign and not broken and rng.random() < 0.15:
            # An async caller cancelled just as it was granted: its future,
            # settled with the lease, goes back (`give_back`).
            self._note(f"{strand!r} give_back {_short(lease)}")
            self._seen("give_back")
            future = SimFuture(self, Req(0, "checkout", lease.key, state="value"))
            future.req.value = lease
            strand.start("give_back", lambda: counter.give_back(future))
        else:
            self._note(f"{strand!r} checkin {_short(lease)} broken={broken}")
            strand.start("checkin", lambda: counter.checkin(lease, broken))
        self._after_strand(strand)
        return True

    def _strand_step(self) -> bool:
        """A caller thread in a call does its next counter call."""
        busy = [s for s in self.strands if s.busy]
        if not busy:
            return False
        strand = self._pick(busy)
        self._note(f"{strand!r} {strand.op} {strand.key!r}: {strand.at}")
        self._resume(strand)
        return True

    def _resume(self, strand: Strand) -> None:
        """Let `strand` do its counter call; an interrupt may land in it: at
        the lock, inside (before or after a note, a registration, a claim),
        or just after its locked body."""
        rng = self.rng
        if self.p_interrupt and rng.random() < self.p_interrupt:
            strand.inject = rng.choice(("enter", "inside", "inside", "exit"))
            self._note(f"    interrupt {strand.inject}")
            self._seen(f"interrupt {strand.inject}")
            if strand.inject == "exit":
                self.wake_lost = True  # its wake (if any) may not be sent
        strand.resume()
        self._after_strand(strand)

    def _pick(self, strands: list[Strand]) -> Strand:
        """One of `strands`, by their speeds."""
        return self.rng.choices(strands, [s.speed for s in strands])[0]

    def land(self, where: str) -> None:
        """An interrupt armed for this step lands here (inside a counter call)."""
        if self.armed == where and self.running is not None:
            self.armed = ""
            if where == "claimed" and "claim-interrupted" in self.known:
                return  # the fix: a claimed hand-on always completes
            self._note(f"    interrupt lands {where}")
            self._seen(f"interrupt lands {where}")
            if where == "after" and "note-unrung" in self.known:
                self.wake_lost = True  # its ring may be skipped
            raise KeyboardInterrupt(f"inside, {where}")

    def _seen(self, what: str) -> None:
        self.seen[what] = self.seen.get(what, 0) + 1

    def _drop(self, lease: Lease[Any, Any], why: str) -> None:
        """Nobody holds `lease` any more: it is collected at a later step."""
        self._note(f"  {_short(lease)} dropped ({why})")
        self._seen("lease dropped")
        self.dropped.append((lease, self.step + self.rng.randint(1, 300)))

    def _collect(self, *, every: bool = False) -> bool:
        """The garbage collector finds a dropped lease (`Lease.__del__`): if
        still out, its `on_lost` tells the supervisor (`LeaseLost`)."""
        due = [d for d in self.dropped if every or d[1] <= self.step]
        blocks = [d for d in self.dropped_blocks if every or d[1] <= self.step]
        if not (due or blocks):
            return False
        if not due or (blocks and self.rng.random() < len(blocks) / (len(due) + 1)):
            self._collect_block(blocks[0] if every else self.rng.choice(blocks))
            return True
        item = due[0] if every else self.rng.choice(due)
        self.dropped.remove(item)
        lease = item[0]
        self.collected += 1
        self._note(f"collect {_short(lease)} (out={not lease.checked_in})")
        self._seen("lease collected" + (" while out" if not lease.checked_in else ""))
        if lease.checked_in:
            return True
        if lease.on_lost is None:
            if "hand-no-on-lost" not in self.known or lease.pool is not self.pool_id:
                self.unreported.append(lease)  # nobody will ever hear of it
                return True
            lease.on_lost = self._on_lost  # the fix: `_hand` sets it too
        self.collecting = True
        try:
            lease.on_lost(lease)
        finally:
            self.collecting = False
        return True

    def _collect_block(self, item: tuple[SimBlock, int]) -> None:
        """The garbage collector finds a dropped block with its place set
        (`LeaseBlock.__del__`): the counter tells its lease lost."""
        self.dropped_blocks.remove(item)
        block = item[0]
        self.collected += 1
        self._note(f"collect {block!r}")
        self._seen("block collected")
        block.state = "lost"
        self.collecting = True
        try:
            self.counter.dropped(block)
        finally:
            self.collecting = False

    def _on_lost(self, lease: Lease[Any, Any]) -> None:
        """`Counter.on_lost` (the shell's `LeaseLost` tell), when the simulated
        collector finds a lease still out; Python's own collection of the
        simulator's leaves is ignored. After the stop, a thread checks it in
        (`PoolRef.lost`): only a block's is left for it here (`_finish`)."""
        if self.collecting and not self.stopped:
            self.inbox.append(("lost_lease", lease))
        elif self.collecting and lease.lid in self.blocks:
            self.late_lost.append(lease)

    def _after_strand(self, strand: Strand) -> None:
        """A strand stopped again, or returned from its call."""
        if strand.block is not None:
            self._track(strand.block)
        if strand.busy:
            return
        error, op, key = strand.error, strand.op, strand.key
        if isinstance(error, Violation):
            raise error
        if strand.block is not None:
            if isinstance(error, KeyboardInterrupt):
                self._note(f"{strand!r} {op} {key!r} interrupted ({error})")
            if self._block_done(strand, strand.result, error):
                return
            op = "checkout"  # it checked a lease out instead
        interrupted = isinstance(error, KeyboardInterrupt)
        if interrupted:
            self._note(f"{strand!r} {op} {key!r} interrupted ({error})")
        if op in ("checkin", "give_back"):
            lease = strand.lease
            assert lease is not None
            if strand.foreign:
                if not isinstance(error, ValueError):
                    raise Violation(f"checkin of another pool's lease gave {error!r}")
                return
            if interrupted:
                if strand.was_out and not lease.checked_in:  # undone: still held
                    if self.rng.random() < 0.5:
                        self.held.append(Held(lease, False))
                    else:
                        self._drop(lease, "its checkin was interrupted")
                return
            if error is not None:
                raise Violation(f"{strand!r} {op} raised {error!r}") from error
            if op == "checkin" and strand.result is not strand.claimed:
                raise Violation(
                    f"checkin of {_short(lease)} returned {strand.result!r}; its "
                    f"checkin {'was' if strand.claimed else 'was not'} noted"
                )
            if strand.was_out and not lease.checked_in:
                raise Violation(f"{op} of {_short(lease)} left it out")
            return
        if interrupted:
            for lease in strand.outs:
                self._drop(lease, f"{strand!r} was interrupted")
            for req in strand.asks:
                if req.state == "pending":  # nobody waits for its answer
                    req.orphan = True
                    self._note(f"  #{req.n} cid={req.cid} orphaned")
                    self._seen("request orphaned")
            return
        if error is not None:
            raise Violation(f"{strand!r} {op} raised {error!r}") from error
        value = strand.result
        self._note(f"{strand!r} {op} {key!r} returns {_short(value)}")
        if isinstance(value, SimFuture):  # queued itself: it waits
            if strand.outs or value.req not in strand.asks:
                raise Violation(f"{strand!r} queued itself, unnoted or with a lease")
            strand.asked = value.req
            return
        if value is MISS:
            if strand.outs or strand.asks:
                raise Violation(f"{strand!r} got MISS, and its step left notes")
            # The facade asks, and the thread waits for the answer.
            strand.asked = self._send(op, key, strand.timeout)
            return
        if op == "acquire":
            res = self.core.resources.get(getattr(value, "rid", -1))
            if (
                not isinstance(value, Res)
                or value.key != key
                or res is None
                or res.phase is not Phase.OPEN
                or res.obj is not value
            ):
                raise Violation(f"acquire({key!r}) at the counter gave {value!r}")
            self.acquired.add(value.rid)
            if (
                self.core.waiters.slots and self.opts.reclaim_idle and not self.in_event
            ):  # (the bias of `_strand_start`)
                # A timer fires before the supervisor reads the hit's note:
                # a reclaim may look at the resource now (a rare race).
                deadline = self.core.next_deadline()
                if deadline is not None:
                    self.now = max(self.now, deadline)
                    self._seen("a timer rushed after a hit")
                    self._deliver()
            return
        if not isinstance(value, Lease) or strand.outs != [value]:
            raise Violation(f"checkout({key!r}) at the counter gave {value!r}")
        rid = value.rid
        if value.key != key or value.pool is not self.pool_id:
            raise Violation(f"checkout({key!r}) at the counter gave {value!r}")
        if rid in self.closes and not self.close_ok.get(rid):
            raise Violation(f"{strand!r} got resource {rid}, closed already")
        self.held.append(Held(value, self.rng.random() < self.p_forget))

    def withdraw(self, req: Req, error: BaseException) -> bool:
        """A caller gives up (`PoolFuture.withdraw`): it wins against a pending
        future only; the supervisor hears of it by message."""
        if req.state != "pending":
            return False
        req.state, req.value = "withdrawn", error
        self._note(f"give up #{req.n} {req.kind} cid={req.cid or '(unread)'}")
        if not self.stopped:
            self.inbox.append(("withdraw", req))
        if req.future is not None:
            req.future.settled()
        return True

    def _register(self) -> tuple[int, SimFuture]:
        """`Replies.register` in the shell: a request number and future for a
        checkout that queues itself."""
        self.land("before")
        self.next_cid += 1
        strand = self.running
        assert strand is not None
        req = Req(len(self.reqs) + 1, "checkout", strand.key, strand.timeout)
        req.cid = self.next_cid
        req.mark = len(self.opened)
        req.future = SimFuture(self, req)
        self.reqs.append(req)
        self.by_cid[req.cid] = req
        self.direct.append(req)
        self.unread.add(req.cid)
        return req.cid, req.future

    def _ask_read(self, note: tuple[Any, ...]) -> None:
        """The core reads a checkout that queued itself, as the shell would
        have read its message."""
        req = self.by_cid[note[2]]
        self.unread.discard(req.cid)
        self._note(f"  read ASK #{req.n} cid={req.cid} key={req.key!r}")
        self._seen("self-queued checkout read")
        self.counts["acquires"] += 1
        timeout = req.timeout if req.timeout is not None else self.opts.acquire_timeout
        req.deadline = note[3] + timeout if timeout else INF
        if not req.answers:
            self.pending_callers[req.cid] = req
        self._asks.append(req)

    def _claim_reply(self, cid: int) -> Callable[[Any], None] | None:
        """`Replies.claim` in the shell: a checkin claims caller `cid`'s
        future to hand its resource on; `None` if it gave up. Claiming a
        future claimed and not yet fulfilled gives its `fulfil` again (a
        checkin interrupted just after its claim finishes the hand-on)."""
        self.land("before")
        req = self.by_cid.get(cid)
        if req is None or req.kind != "checkout" or not self.exclusive:
            raise Violation(f"a checkin claimed cid {cid}, not a queued checkout")
        if req.state == "claimed" and not req.answers:
            return lambda lease: self._fulfil(req, lease)
        if req.state != "pending":
            if req.state not in ("withdrawn", "error"):  # error: the pool stopped
                raise Violation(f"a checkin claimed cid {cid}, {req.state}")
            return None
        reading = any(r.cid == cid for r in self._asks)  # its ASK note, now
        if cid not in self.core.callers and cid not in self.unread and not reading:
            raise Violation(f"a checkin claimed cid {cid}, which the core answered")
        req.state = "claimed"
        self.handing.add(cid)
        self.land("claimed")
        return lambda lease: self._fulfil(req, lease)

    def _fulfil(self, req: Req, lease: Any) -> None:
        """The checkin settles the future it claimed: the caller has `lease`."""
        self._answered(req.cid, "a checkin's hand-over")
        req.got = lease
        self._note(f"  -> handed on to cid={req.cid}: {_short(lease)}")
        if not isinstance(lease, Lease) or lease.key != req.key:
            raise Violation(f"checkout({req.key!r}) handed {lease!r}")
        if lease.rid in self.closes and not self.close_ok.get(lease.rid):
            raise Violation(f"cid {req.cid} handed resource {lease.rid}, closed")
        req.state, req.value = "value", lease
        self._lease_out(lease, f"cid {req.cid} (handed on)")
        if req.orphan:
            self._drop(lease, f"cid {req.cid} was interrupted before it waited")
        else:
            self.held.append(Held(lease, self.rng.random() < self.p_forget))
        if req.future is not None:
            req.future.settled()

    def _wake(self) -> None:
        """`PoolRef.wake`: tell the supervisor that notes wait."""
        if self.stopped:
            return  # the mailbox is closed: the tell is dropped quietly
        self.inbox.append(("notes",))
        self.notes_msgs += 1
        if self.notes_msgs > len(self.strands):
            raise Violation(
                f"{self.notes_msgs} Notes messages queued > {len(self.strands)} "
                "caller threads"
            )

    def _drain_event(self, now: float) -> None:
        """The supervisor reads the notes before a message (no wake-up)."""
        self._read_notes(now)

    def _notes_event(self, now: float) -> None:
        """The supervisor handles a `Notes` message: it polls from now on, and
        feeds the notes to the core."""
        self._read_notes(now, woken=True)

    def _poll_event(self, now: float) -> None:
        """The supervisor's mailbox stayed empty for `POLL` while it polls."""
        self._read_notes(now, poll=True)

    def _read_notes(self, now: float, **kw: bool) -> None:
        """The core reads the notes; a self-queued checkout's `ASK` it puts
        off (`PoolCore.later`) is read at the next read, whatever it is."""
        self.reads += 1
        self.core.read_notes(now, **kw)
        self._doorbell()
        if self.core.later:
            self._seen("a self-queued checkout's ASK put off to the next step")
        for cid, at in self.put_off.items():
            if at < self.reads:
                raise Violation(
                    f"the ASK of cid {cid}, put off at read {at}, is still "
                    f"unread after read {self.reads}"
                )

    def _doorbell(self) -> None:
        if self.pub.noted != WOKEN:
            self.wake_lost = False  # a wake an interrupt skipped is moot now

    def _counted(self, notes: Iterable[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
        """The drained notes, as the core reads them: a broken checkin counts
        if its resource is still in service when the core reads it."""
        for note in notes:
            if note[0] in (BROKEN, SPOILT) and note[1].phase in _IN_SERVICE:
                self.counts["broken"] += 1
            elif note[0] == GIVEN:
                self.handing.discard(note[4])
            elif note[0] == ASK:  # read now, or put off to the next read
                self.put_off.setdefault(note[2], self.reads)
            yield note

    # What the counter's notes tell the model (see `SimNotes`).

    def after_note(self, note: tuple[Any, ...]) -> None:
        """A note was appended: by a caller's counter call (`inside`), or by
        the core's own checkin (a `Checkin` message, a lost lease)."""
        strand = self.inside
        kind = note[0]
        counts = self.counts
        if kind == HIT:
            counts["acquires"] += 1
            counts["hits"] += 1
            return
        if kind == ASK:
            req = self.by_cid[note[2]]
            req.key, req.timeout = note[1], note[4]
            if strand is not None:
                strand.asks.append(req)
            return
        res: Resource = note[1]
        rid = res.rid
        if kind == SPOILT:  # a block left broken: its id goes out with it
            if strand is None or strand.block is None or note[2] != strand.block.lid:
                raise Violation(f"a SPOILT note of block {note[2]} by {strand!r}")
            return
        if kind in _CHECKINS and note[2].lid in self.blocks:
            # A dropped block's place, checked in as a lease of its id (`lost`,
            # or after the stop `checkin`): its id is out by now.
            block = self.blocks[note[2].lid]
            if block.state != "lost" or note[2].lid in res.blocks:
                raise Violation(f"{block!r} checked in as a lease, still counted")
            block.state = "out"
            return
        if kind == OUT:
            lease = note[3]
            counts["acquires"] += 1
            counts["hits"] += 1
            counts["checkouts"] += 1
            self.expect[rid] = self.expect.get(rid, 0) + 1
            self._check_take(res, lease)
            self._lease_out(lease, repr(strand))
            if strand is not None:
                strand.outs.append(lease)
        elif kind == GIVEN:  # one holder for another: `expect` stays
            counts["checkouts"] += 1
            self._seen("checkin handed on (GIVEN)")
            if note[4] not in self.handing:
                raise Violation(f"GIVEN note for cid {note[4]}, not claimed")
            self._claimed(note[2], strand)
        elif kind == BACK:
            raise Violation(f"a BACK note of resource {rid}: the counter has none")
        else:
            self.expect[rid] -= 1
            self._claimed(note[2], strand)

    def unnote(self, note: tuple[Any, ...]) -> None:
        """An interrupted counter call took its note back (`_unnote`)."""
        strand = self.inside
        kind = note[0]
        if kind == ASK:
            req = self.by_cid[note[2]]
            if strand is not None and req in strand.asks:
                strand.asks.remove(req)
            return
        if kind != OUT:
            raise Violation(f"a {kind} note taken back")
        lease = note[3]
        rid = lease.rid
        for name in ("acquires", "hits", "checkouts"):
            self.counts[name] -= 1
        self.expect[rid] -= 1
        self.holding.pop(lease, None)
        self.users.get(rid, {}).pop(lease, None)
        if strand is not None and lease in strand.outs:
            strand.outs.remove(lease)

    def _claimed(self, lease: Lease[Any, Any], strand: Strand | None) -> None:
        """The checkin of `lease` that counts was noted."""
        rid = self.holding.pop(lease, None)
        if rid is None:
            raise Violation(f"{_short(lease)} checked in, but nobody holds it")
        del self.users[rid][lease]
        if strand is not None and lease is strand.lease:
            strand.claimed = True

    def _check_take(self, res: Resource, lease: Lease[Any, Any]) -> None:
        """A take at the counter: an open resource in service, and nobody
        queued for its key (strict FIFO per key)."""
        rid, key = res.rid, lease.key
        if res.retired or res.phase is not Phase.OPEN or not res.mapped:
            state = "retired" if res.retired else res.phase.value
            raise Violation(f"a take at the counter got {state} resource {rid}")
        self._check_fifo(res, key)

    def _check_fifo(self, res: Resource, key: Hashable) -> None:
        """Nobody is queued for `key` (in the core, or self-queued) while a
        take at the counter gets `res`: strict FIFO per key."""
        rid = res.rid
        entry = self.core.keys.get(key)
        # A caller a checkin served already (its GIVEN note unread) waits no
        # more, though the core still lists it.
        queued = [
            cid
            for cid in (entry.waiters if entry is not None else ())
            if cid not in self.by_cid or self.by_cid[cid].state == "pending"
        ]
        queued += [
            r.cid
            for r in self.direct
            if r.key == key and r.cid in self.unread and r.state == "pending"
        ]
        if queued:
            raise Violation(
                f"FIFO: a take at the counter got resource {rid} of {key!r} "
                f"while callers {sorted(queued)} are queued for it"
            )

    # --- resource actors --------------------------------------------------------

    def _runnable_actors(self) -> list[Actor]:
        now = self.now
        return [a for a in self.actors if not a.dead and a.mailbox and a.due <= now]

    def _tell(self, actor: Actor, item: tuple[Any, ...]) -> None:
        actor.mailbox.append(item)
        if len(actor.mailbox) == 1:
            self._schedule(actor)

    def _schedule(self, actor: Actor) -> None:
        """When the item now at the head of `actor`'s mailbox will be done."""
        if not actor.mailbox:
            actor.due = INF
            return
        rng, o = self.rng, self.opts
        what = actor.mailbox[0][0]
        if what == "start":
            p_hang, limit = self.p_factory_hang, o.create_timeout or 3.0
        elif what == "ping":
            p_hang, limit = self.p_ping_hang, o.ping_timeout
        else:
            p_hang = self.p_close_hang if actor.obj is not None else 0.0
            limit = o.close_timeout
        x = rng.random()
        if x < p_hang:  # stuck in user code: forever, or well past its timeout
            forever = rng.random() < 0.5
            actor.due = INF if forever else self.now + limit * rng.uniform(1, 4)
            self._note(f"actor {actor.rid}.{actor.attempt} hangs in {what}")
        elif x < p_hang + 0.08:  # slow: about its timeout
            actor.due = self.now + limit * rng.uniform(0.5, 1.5)
        else:
            actor.due = self.now + rng.expovariate(50.0 / limit)

    def _actor_step(self) -> bool:
        runnable = self._runnable_actors()
        if not runnable:
            return False
        actor = self.rng.choice(runnable)
        self._run_item(actor, actor.mailbox.popleft())
        self._schedule(actor)
        if len(self.actors) > 64:  # forget actors that are over
            self.actors = [a for a in self.actors if not a.dead or a.obj is not None]
        return True

    def _report(self, *msg: Any) -> None:
        if not self.stopped:  # a stopped pool reads nothing
            self.inbox.append(msg)

    def _run_item(self, actor: Actor, item: tuple[Any, ...]) -> None:
        rng = self.rng
        rid, attempt = actor.rid, actor.attempt
        what = item[0]
        if what == "start":
            actor.in_factory = False
            if rng.random() < self.p_factory_fail:
                self._note(f"actor {rid}.{attempt} factory fails")
                self._report("failed", rid, attempt, RuntimeError("factory failed"))
                actor.mailbox.append(("stop",))  # the actor stops itself
            else:
                obj = actor.obj = Res(rid, attempt, actor.key)
                self.objs.append(obj)
                self._note(f"actor {rid}.{attempt} factory ok")
                self._report("ready", rid, attempt, obj)
        elif what == "ping":
            fail = actor.obj is not None and rng.random() < self.p_ping_fail
            self._note(f"actor {rid}.{attempt} ping {'fails' if fail else 'ok'}")
            error = RuntimeError("ping failed") if fail else None
            self._report("ping_result", rid, item[1], error)
        else:  # stop: close the resource, report, end
            error = None
            if actor.obj is not None:
                self._close_obj(actor)
                if rng.random() < self.p_close_raise:
                    error = RuntimeError("close raised")
            self._note(f"actor {rid}.{attempt} closed{' (raised)' if error else ''}")
            actor.dead = True
            actor.mailbox.clear()
            self._report("closed", rid, attempt, error)

    def _close_obj(self, actor: Actor) -> None:
        obj = actor.obj
        assert obj is not None
        actor.obj = None
        obj.closes += 1
        if obj.closes > 1:
            raise Violation(f"{obj!r} closed twice")

    def _lose_actor(self) -> bool:
        """An actor stops unasked (a crash, `stop_all()`): closes and reports."""
        if not self.lost_actors:
            return False
        now = self.now
        live = [
            a
            for a in self.actors
            if not a.dead and not a.in_factory and (not a.mailbox or a.due <= now)
        ]
        if not live:
            return False
        actor = self.rng.choice(live)
        self._note(f"actor {actor.rid}.{actor.attempt} stopped unasked")
        if actor.obj is not None:
            self._close_obj(actor)
        actor.dead = True
        actor.mailbox.clear()
        self._report("closed", actor.rid, actor.attempt, None)
        return True

    # --- the fleet --------------------------------------------------------------

    def _fleet_step(self) -> bool:
        fleet = self.fleet
        if fleet is None:
            return False
        rng = self.rng
        x = rng.random()
        if x < 0.08:
            room = fleet.limit - len(fleet.held) - fleet.others
            fleet.others = max(0, fleet.others + rng.choice([-1, 1 if room else 0]))
            self._note(f"fleet: other processes hold {fleet.others}")
            return True
        if x < 0.14 and fleet.held:
            rid = rng.choice(sorted(fleet.held))
            del fleet.held[rid]
            fleet.lost_inflight.add(rid)
            self._note(f"fleet: the slot of {rid} is lost")
            self._report("lost", rid)
            return True
        if not fleet.pending:
            return False
        rid = fleet.pending[0]
        if x < 0.18:
            self._note(f"fleet: unreachable for {rid}")
            self._report("unavailable", rid)
        elif x < 0.21:
            fleet.open_grants.add(rid)
            self._note(f"fleet: {rid} goes ahead without a slot (fail open)")
            self._report("granted", rid, False)
        elif len(fleet.held) + fleet.others < fleet.limit:
            fleet.held[rid] = "inflight"
            self._note(f"fleet: a slot for {rid}")
            self._report("granted", rid, True)
        else:
            return False
        fleet.pending.popleft()
        return True

    # --- invariants: what one event did -----------------------------------------

    def _after_event(self) -> None:
        """FIFO per key and for slots; grants to new requests stay in service."""
        core, pre = self.core, self._pre
        for key, order in pre["waiters"].items():
            entry = core.keys.get(key)
            still = entry.waiters if entry is not None else {}
            served = {
                cid
                for cid in order
                if cid not in still
                and (cid in self._replied or cid in core.callers)  # granted or joined
            }
            for i, cid in enumerate(order):
                later = [c for c in order[i + 1 :] if c in served]
                if cid in still and later:
                    # A checkin skips a caller that gave up (its withdrawal
                    # is on its way) and serves the next; or a
                    # checkin serves this one now, and the next another.
                    ahead = self.by_cid[cid].state == "withdrawn" or self._taken(cid)
                    if ahead and all(self._taken(c) for c in later):
                        continue
                    raise Violation(
                        f"FIFO: key {key!r} served {later} before earlier waiter {cid}"
                    )
        self._check_slot_order()
        for cid, rid in self._grants:
            if self.by_cid[cid].undelivered:
                continue  # handed back at once: it may be reclaimed since
            res = core.resources.get(rid)
            if res is None or res.phase is not Phase.OPEN or not res.mapped:
                state = "gone" if res is None else res.phase.value
                raise Violation(f"cid {cid} granted resource {rid}, now {state}")

    def _taken(self, cid: int) -> bool:
        """Whether a checkin took caller `cid`."""
        caller = self.core.callers.get(cid)
        taken = caller is not None and caller.taken
        return taken or cid in self.handing

    def _check_slot_order(self) -> None:
        """A slot went to a caller while an older one, still waiting for a slot,
        was passed over (a key with an older item earlier in line is excused:
        its creation may have been joined by a later caller of the key).

        With `max_per_key > 1`, keys with nothing open or being made come
        first (`Placement.next_slot`): the order holds within each of the two
        lines, and a key that has a resource gets a slot only while no key
        with nothing waits for one."""
        if not self._created_keys:
            return
        before, now_in = self._pre["slots"], self.core.waiters.slots
        if self.opts.max_per_key == 1:
            self._check_line(before, now_in)
            return
        bare = {i.key for i in before if self._bare(i.key)}
        first = [i for i in before if i.key in bare]
        second = [i for i in before if i.key not in bare]
        created = self._created_keys
        # A key with nothing that got a creation has one now: its callers
        # still in line wait as a key that has one (after the keys with none).
        self._check_line(first, now_in, skip=created)
        self._check_line(second, now_in)
        waits = [i for i in first if i in now_in and i.key not in created]
        got = [i for i in second if i not in now_in and i.key in created]
        if waits and got:
            raise Violation(
                f"slot order: a slot went to {got[0].key!r}, which has a resource,"
                f" while {waits[0].key!r}, which has none, waits for one"
            )

    def _bare(self, key: Hashable) -> bool:
        """Whether `key` had nothing open or being made when this step's
        slots were handed out: all it has now was created in the step."""
        entry = self.core.keys.get(key)
        if entry is None:
            return True
        return all(
            r.rid in self._created_rids
            for r in entry.resources
            if not any(old.mapped for old in r.replaces)
        )

    def _check_line(
        self,
        before: list[Any],
        now_in: dict[Any, Any],
        skip: Collection[Hashable] = (),
    ) -> None:
        oldest = next(
            (
                i
                for i in before
                if i in now_in and not _is_refill(i) and i.key not in skip
            ),
            None,
        )
        if oldest is None:
            return
        pos = before.index(oldest)
        excused = {i.key for i in before[: pos + 1]}
        for item in before[pos + 1 :]:
            if item not in now_in and item.key in self._created_keys - excused:
                raise Violation(
                    f"slot FIFO: a slot went to {item.key!r} while caller "
                    f"{oldest.cid} ({oldest.key!r}), older, still waits for one"
                )

    def _check_deadlines(self) -> None:
        for req in self.pending_callers.values():
            if req.state == "pending" and req.deadline <= self.now:
                raise Violation(
                    f"cid {req.cid} still waits at t={self.now - T0:.3f}, past its "
                    f"deadline {req.deadline - T0:.3f}"
                )

    # --- invariants: after every step -------------------------------------------

    def check(self) -> None:
        """Every invariant of the pool's state, after every step."""
        core = self.core
        if core.effects:
            raise Violation("effects left unprocessed")
        # A reclaim in the pump retires its victim after the dirty keys were
        # served, and events that do not pump (a refused request, a stale
        # report) leave them to the next that does; the victim's close brings
        # one. Nothing else leaves a key unserved.
        dirty = core._dirty
        if core.n["reclaimed"] != self._reclaimed_before:
            self._dirty_ok = True
        if not dirty:
            self._dirty_ok = False
        elif not self._dirty_ok:
            raise Violation(f"keys left unserved after an event: {list(dirty)}")
        for old in self.swapped:
            if old.mapped:
                raise Violation(
                    f"resource {old.rid} still in service after its refresh's "
                    "replacement was swapped in"
                )
        self.swapped.clear()
        counted = [r for r in core.resources.values() if r.phase in COUNTED]
        pending = self._pending()
        self._check_cap(counted)
        queued = self._check_keys(dirty, pending)
        self._check_callers()
        holders = self._check_leases(pending)
        self._check_blocks()
        self._check_stats(counted, queued, holders, pending)
        self._check_timers()
        self._check_published()
        self._check_notes()
        if self.fleet is not None:
            self._check_fleet()

    def _check_cap(self, counted: list[Any]) -> None:
        """The cap is strict, counting what exists by the model's own count."""
        core = self.core
        cap = core.cap
        if core.used != len(counted):
            raise Violation(f"core.used={core.used}, {len(counted)} counted")
        # Over a shrunk cap only while resources leave, never by a new one.
        self.over = cap if core.used <= cap else min(self.over, core.used)
        if core.used > max(cap, self.over):
            raise Violation(f"cap: {core.used} resources counted > {cap}")
        service = sum(1 for r in counted if r.mapped)
        if service > cap:
            raise Violation(f"cap: {service} resources in service > {cap}")
        cap = max(cap, self.over)
        existing = 0
        for actor in self.actors:
            if actor.dead or actor.abandoned:
                continue
            if actor.in_factory or actor.obj is not None:
                res = core.resources.get(actor.rid)
                if res is not None and res.left:
                    continue  # the pool closed: left to its holders, uncounted
                existing += 1
                if res is None or res.phase not in COUNTED:
                    state = "nothing" if res is None else res.phase.value
                    raise Violation(
                        f"resource {actor.rid}.{actor.attempt} exists; the core has "
                        f"it {state}"
                    )
        if existing > cap:
            raise Violation(f"cap: {existing} resources exist > {cap}")
        for res in core.resources.values():
            if res.phase is Phase.GONE:
                raise Violation(f"resource {res.rid} kept after its end")
            waiting = res.phase in (Phase.RESERVING, Phase.BACKOFF)
            actor = self.shell_actors.get(res.rid)
            if not waiting and (actor is None or actor.attempt != res.attempts):
                # ABANDONED included: it is forgotten when its actor ends.
                raise Violation(
                    f"resource {res.rid} is {res.phase.value} (try {res.attempts}) "
                    "with no actor of that try"
                )

    def _check_keys(self, dirty: Iterable[Hashable], pending: _Pending) -> int:
        """The key map holds what serves; single flight; waiters wait for a
        reason; returns how many wait."""
        core, opts = self.core, self.opts
        queued = 0
        for key, entry in core.keys.items():
            if not entry.resources and not entry.waiters:
                raise Violation(f"empty key entry {key!r} kept")
            for res in entry.resources:
                if res.key != key or not res.mapped or res.phase not in _LIVE:
                    raise Violation(f"the key map of {key!r} holds {res.rid}")
                if core.resources.get(res.rid) is not res:
                    raise Violation(f"the key map of {key!r} holds a dead {res.rid}")
            if sum(bool(r.replaces) for r in entry.resources) > 1:
                raise Violation(f"two refresh standbys for {key!r}")
            if _per_key(entry) > opts.max_per_key:
                shown = [
                    (r.rid, r.phase.value, bool(r.replaces)) for r in entry.resources
                ]
                raise Violation(
                    f"single flight: {key!r} has {shown} > max_per_key="
                    f"{opts.max_per_key}"
                )
            queued += len(entry.waiters)
            for cid, caller in entry.waiters.items():
                if core.callers.get(cid) is not caller or not caller.waiting:
                    raise Violation(f"waiter {cid} of {key!r} is not waiting")
                if caller.joined is not None:
                    raise Violation(f"waiter {cid} both waits and joined")
            if entry.waiters and key not in dirty:
                self._check_progress(key, entry, pending)
        for res in core.resources.values():
            if res.mapped and res not in core.keys.get(res.key, _NO_ENTRY).resources:
                raise Violation(f"resource {res.rid} mapped, not in the key map")
            if res.phase is Phase.OPEN and not res.mapped:
                raise Violation(f"resource {res.rid} open but out of the key map")
            if res.phase is Phase.STANDBY:
                raise Violation(f"resource {res.rid} left in standby, not swapped in")
            if res.replaces and (not res.mapped or res.phase not in _IN_CREATION):
                raise Violation(
                    f"resource {res.rid} ({res.phase.value}, mapped={res.mapped}) "
                    "still a refresh's standby"
                )
        if core.waiters.queued != queued:
            raise Violation(
                f"core.waiters.queued={core.waiters.queued}, {queued} waiters"
            )
        if opts.max_waiting is not None and queued > opts.max_waiting:
            raise Violation(f"{queued} waiting > max_waiting={opts.max_waiting}")
        for item in core.waiters.slots:
            if _is_refill(item):
                continue
            if core.callers.get(item.cid) is not item or not item.in_slots:
                raise Violation(f"the slot queue holds {item.cid}, who does not wait")
            if core.used < core.cap and core.closing is None:
                raise Violation(
                    f"caller {item.cid} ({item.key!r}) waits for a slot while "
                    f"{core.cap - core.used} are free"
                )
        return queued

    def _check_progress(
        self, key: Hashable, entry: KeyEntry, pending: _Pending
    ) -> None:
        """The oldest waiter of a key waits for a reason."""
        core, opts = self.core, self.opts
        limit = opts.max_holders
        head = next(iter(entry.waiters.values()))
        noted = self._busy_rids(pending)  # the core hears of them later
        for res in entry.resources:
            if self.exclusive and head.hold:
                assert res.home is not None
                if res.phase is Phase.OPEN and res.rid not in noted and res in res.home:
                    raise Violation(
                        f"caller {head.cid} waits for {key!r}; resource {res.rid} "
                        "is in its idle list"
                    )
                continue
            busy = res.holders + (1 if res.ping_seq and limit == 1 else 0)
            if res.phase is Phase.OPEN and (
                not head.hold or limit is None or busy < limit
            ):
                raise Violation(
                    f"caller {head.cid} waits for {key!r}; resource {res.rid} has "
                    "room for it"
                )
            # A creation with a place is not checked: a waiter stays queued
            # when a joiner gives up, and is served when the creation ends.
        room = _per_key(entry) < opts.max_per_key
        if room and core.used < core.cap and core.closing is None:
            raise Violation(
                f"caller {head.cid} waits for {key!r}, which has room, while a "
                "slot is free"
            )
        if room and not head.in_slots:
            raise Violation(f"caller {head.cid} of {key!r} has room, not in line")

    def _check_callers(self) -> None:
        """The core waits for exactly the callers the model says still wait."""
        core = self.core
        # Callers a checkin claimed: the core forgets them when it
        # reads the GIVEN note, the caller is answered when it is fulfilled.
        handing = self.handing | {
            cid for cid, req in self.pending_callers.items() if req.state == "claimed"
        }
        # A self-queued checkout a checkin took before the core read its
        # `ASK` waits in `taken` for its `GIVEN` note or its withdrawal.
        known = core.callers.keys() | core.waiters.taken.keys()
        if known - handing != self.pending_callers.keys() - handing:
            extra = sorted(known - self.pending_callers.keys() - handing)
            lost = sorted(self.pending_callers.keys() - known - handing)
            raise Violation(
                f"callers: the core keeps {extra} (answered or gone), lost {lost}"
            )
        for cid, caller in core.callers.items():
            res = caller.joined
            if res is not None:
                if core.resources.get(res.rid) is not res or caller not in res.joiners:
                    raise Violation(f"caller {cid} joined {res.rid}, unlisted there")
                if res.phase not in (Phase.RESERVING, Phase.CREATING, Phase.BACKOFF):
                    raise Violation(f"caller {cid} joined {res.rid} ({res.phase})")
            elif not (caller.waiting or caller.taken):
                raise Violation(f"caller {cid} neither waits nor joined")
        for res in core.resources.values():
            for caller in res.joiners:
                if core.callers.get(caller.cid) is not caller:
                    raise Violation(
                        f"resource {res.rid} keeps gone joiner {caller.cid}"
                    )
        gave_up = core.waiters.gave_up.keys()
        if not gave_up <= self.undelivered_cids:
            raise Violation(f"give-up records kept: {sorted(gave_up)}")

    def _pending(self) -> _Pending:
        """What the notes not yet drained say."""
        pending = _Pending()
        for note in self.pub.notes:
            kind = note[0]
            if kind == HIT:
                pending.hits += 1
                continue
            if kind == ASK:
                continue
            rid = note[1].rid
            pending.rids.add(rid)
            if kind == OUT:
                pending.outs += 1
                pending.out[rid] = pending.out.get(rid, 0) + 1
            elif kind in _CHECKINS and note[2].lid not in self.blocks:
                pending.back[rid] = pending.back.get(rid, 0) + 1
            elif kind == GIVEN:  # a checkin and a checkout in one
                pending.givens += 1
        pending.hits += len(self.pub.hits)
        return pending

    def _check_leases(self, pending: _Pending) -> int:
        """Holders: the core counts every lease out, less the notes not yet
        drained; once they are, exactly the leases callers hold. Returns the
        core's count."""
        core = self.core
        # Every counter call is atomic: between two steps nothing is half
        # done, so once the notes are drained the books must agree exactly.
        quiet = not (pending.rids or pending.hits)
        idle_time = self.opts.max_idle_time
        total = 0
        for res in core.resources.values():
            rid = res.rid
            want = self.expect.get(rid, 0) - pending.out.get(rid, 0)
            want += pending.back.get(rid, 0)
            if res.holders != want:
                raise Violation(
                    f"resource {rid}: the core counts {res.holders} holders, "
                    f"{want} by what callers did and the notes it has read"
                )
            total += res.holders
            users = self.users.get(rid, ())
            if quiet and res.holders != len(users):
                raise Violation(
                    f"resource {rid}: the core counts {res.holders} holders once "
                    f"every note is drained; {len(users)} hold it"
                )
            if res.phase is Phase.RETIRING:
                self.retiring_since.setdefault(rid, self.now)
                awaited = (
                    self.expect.get(rid, 0) > 0
                    or rid in pending.rids
                    or bool(res.tokens or res.blocks)
                    or res in self.pub.used  # a block left: its exit not read yet
                )
                if not awaited:
                    raise Violation(f"resource {rid} retiring, waiting for nobody")
            if not quiet or res.phase is not Phase.OPEN or not res.mapped:
                continue
            if res.ping_seq:
                continue
            if self.exclusive:
                assert res.home is not None
                idle = res in res.home
                if idle == bool(users):
                    state = "idle and held" if idle else "neither idle nor held"
                    raise Violation(f"exclusive resource {rid} is {state}")
            if (
                idle_time is not None
                and not (res.holders or res.blocks or res in self.pub.used)
                and "idle" not in res.timers
                and core.closing is None
            ):
                raise Violation(f"idle resource {rid} has no max_idle_time timer")
        return total

    def _check_blocks(self) -> None:
        """The block path's invariant: a resource counts a block's id only
        while the block's place is there, once, and never a block that left;
        a block inside a resource (its `enter` returned it) is counted there
        until the resource is gone."""
        counted: set[int] = set()
        for res in self.core.resources.values():
            if res.blocks and res.phase not in (*_IN_SERVICE, Phase.CLOSING, *ENDED):
                raise Violation(f"resource {res.rid} ({res.phase.value}) has blocks")
            for lid in res.blocks:
                block = self.blocks.get(lid)
                if block is None or block.place != (res, lid):
                    raise Violation(
                        f"resource {res.rid} counts block {lid}, whose place is "
                        f"{None if block is None else block.place}"
                    )
                if block.state == "out" or lid in counted:
                    raise Violation(f"resource {res.rid} counts {block!r}")
                counted.add(lid)
        for block in self.blocks_in:
            if block.place is None:
                raise Violation(f"{block!r} is inside a resource, with no place")
            res, lid = block.place
            if self.core.resources.get(res.rid) is res and lid not in res.blocks:
                raise Violation(f"{block!r} inside resource {res.rid}, not counted")

    def _check_published(self) -> None:
        """Once an event is over, what callers read is the core's state."""
        core, pub = self.core, self.pub
        if pub.full != (core.inventory.used >= core.cap):
            raise Violation(
                f"published full={pub.full}, {core.inventory.used} of {core.cap} "
                "slots taken"
            )
        # Exclusive: a caller queued in the core is in its key's queue
        # instead, whose first a checkin serves (the key is not marked).
        waiting = {k for k, e in core.keys.items() if e.waiters and not self.exclusive}
        if set(pub.waiting) != waiting:
            raise Violation(
                f"published waiting={sorted(set(pub.waiting))}, keys with callers "
                f"queued {sorted(waiting)}"
            )
        if self.shared:
            view: dict[Hashable, Resource] = {}
            for key, entry in core.keys.items():
                first = next(
                    (r for r in entry.resources if r.phase is Phase.OPEN), None
                )
                if first is not None:
                    view[key] = first
            shown = dict(pub.view)
            if shown.keys() != view.keys() or any(
                shown[k] is not view[k] for k in view
            ):
                raise Violation(
                    f"view shows {_rids(shown)}; the key map has {_rids(view)} open"
                )
        elif pub.view:
            raise Violation(f"view kept for a pool of leases: {_rids(pub.view)}")
        if self.exclusive:
            lists = dict(pub.idle)
            if lists.keys() != core.keys.keys() or any(
                lists[k] is not e.idle for k, e in core.keys.items()
            ):
                raise Violation(
                    f"published idle lists for {sorted(lists)}, keys "
                    f"{sorted(core.keys)}"
                )

    def _check_view(self, when: str) -> None:
        """`view` shows only resources in service (at each reply)."""
        for res in self.pub.view.values():
            if res.phase is not Phase.OPEN or not res.mapped or res.retired:
                state = "retired" if res.retired else res.phase.value
                raise Violation(f"view shows resource {res.rid} ({state}) when {when}")

    def _check_notes(self) -> None:
        """Every note is drained (counter invariant 3): the supervisor polls,
        or a `Notes` message is on its way; for an urgent note, a message."""
        if self.stopped:
            return  # the mailbox is closed: notes left are moot
        pub = self.pub
        noted = pub.noted
        # A wake is sent in the caller's step that rang: none is half sent,
        # unless an interrupt landed between the lock and the wake (the
        # supervisor still polls then: `noted` is not QUIET).
        sending = self.notes_msgs > 0 or self.wake_lost
        kinds = [n[0] for n in pub.notes]
        unread = kinds or pub.hits or pub.used or pub.entered
        if unread and not sending and noted == QUIET:
            raise Violation(
                f"notes {kinds} stranded: the supervisor does not poll and no "
                f"Notes message is on its way (noted={noted})"
            )
        urgent = [k for k in kinds if k in _URGENT]
        if urgent and not sending:
            raise Violation(f"urgent notes {urgent} wait for a poll (noted={noted})")
        if noted == WOKEN and not sending:
            raise Violation("noted is WOKEN, and no Notes message is on its way")

    def _busy_rids(self, pending: _Pending) -> set[int]:
        """Resources a note not yet drained is about."""
        return set(pending.rids)

    def _check_stats(
        self, counted: list[Any], queued: int, holders: int, pending: _Pending
    ) -> None:
        core = self.core
        stats = core.snapshot()
        inside = sum(len(r.blocks) for r in core.resources.values())
        expect = {
            "open_resources": len(counted),
            "wait_count": queued,
            "holders": holders + inside,
            **self.counts,
        }
        # What callers did at the counter counts once its note is drained
        # (a block's entry once the core reads `entered`).
        entered = self.pub.entered
        expect["acquires"] -= pending.hits + pending.outs + entered
        expect["hits"] -= pending.hits + pending.outs + entered
        expect["checkouts"] -= pending.outs + pending.givens + entered
        if not (pending.rids or pending.hits):  # the leases out, by the model
            expect["holders"] = inside + sum(
                len(self.users.get(rid, ())) for rid in core.resources
            )
        for name, value in expect.items():
            if getattr(stats, name) != value:
                raise Violation(f"stats.{name}={getattr(stats, name)}, not {value}")
        # Waits: never negative, none longer than the run, none longer than
        # the longest.
        waited = stats.wait_duration
        if waited < -1e-9 or waited > stats.waits * stats.max_wait + 1e-6:
            raise Violation(
                f"stats.wait_duration={waited} for {stats.waits} waits of at "
                f"most {stats.max_wait}"
            )
        if stats.max_wait > self.now - T0 + 1e-9:
            raise Violation(f"stats.max_wait={stats.max_wait} > the run so far")
        reclaiming = sum(1 for r in counted if r.reason == "reclaimed")
        if core.placement.reclaiming != reclaiming:
            raise Violation(f"reclaiming {core.placement.reclaiming}, not {reclaiming}")

    def _check_timers(self) -> None:
        """Timers are bounded by what exists and waits."""
        core = self.core
        timers = core.timers
        heap = timers._heap
        cancelled = timers._cancelled
        if not cancelled <= {entry[1] for entry in heap}:
            raise Violation("timers: cancelled handles not in the heap")
        live = len(timers)
        bound = 6 * len(core.resources) + len(core.callers) + 2
        bound += len(core.sizing.blocked)  # warm keys waiting after failures
        if core.sizing.blocked:
            self._seen("a warm key backs off")
        if live > bound:
            kinds = sorted(e[2] for e in heap if e[1] not in cancelled)
            raise Violation(f"timers: {live} live > {bound}: {kinds}")
        if len(heap) > 2 * live + 66:
            raise Violation(f"a timer heap of {len(heap)} for {live} live timers")
        armed = {entry[1] for entry in heap} - cancelled
        if (
            self.opts.health_check_interval is not None
            and core.closing is None
            and core.health.timer not in armed
        ):
            raise Violation("the health timer is not armed")
        for res in core.resources.values():
            if res.phase is Phase.RETIRING and res.timers.get("drain") not in armed:
                if res.reason == "resized" and core.closing is None:
                    continue  # closed at its last checkin, never under it
                raise Violation(f"retiring resource {res.rid} has no drain timer")

    def _check_fleet(self) -> None:
        core, fleet = self.core, self.fleet
        assert fleet is not None
        if len(fleet.held) + fleet.others > fleet.limit:  # pragma: no cover
            raise AssertionError("the simulated fleet is over its limit")
        core_held = {r.rid for r in core.resources.values() if r.global_held}
        phantom = core_held - fleet.held.keys() - fleet.lost_inflight
        if phantom:
            raise Violation(f"the core counts fleet slots {sorted(phantom)} it lacks")
        delivered = {rid for rid, st in fleet.held.items() if st == "delivered"}
        if delivered - core_held:
            raise Violation(f"fleet slots {sorted(delivered - core_held)} forgotten")
        reserving = {
            r.rid for r in core.resources.values() if r.phase is Phase.RESERVING
        }
        if set(fleet.pending) - reserving:
            stale = sorted(set(fleet.pending) - reserving)
            raise Violation(f"fleet reservations {stale} nobody waits for")

    def final_check(self) -> None:
        """After `Stopped`: everyone answered once; nothing left open or kept."""
        core = self.core
        if not self.stopped:
            raise Violation("the pool never stopped")
        busy = [s for s in self.strands if s.busy]
        if busy:
            raise Violation(f"{busy} still in a call after the pool stopped")
        for req in self.reqs:
            if req.cid == 0:  # never read: the closed mailbox answered it
                if req.state == "pending":
                    raise Violation(f"request #{req.n} ({req.kind}) never answered")
            elif req.kind == "health":
                continue  # a told message: no answer
            elif req.state == "withdrawn" or req.gone_at_read:
                if req.answers > 1:
                    raise Violation(f"cid {req.cid} answered {req.answers} times")
            elif req.answers != 1 or req.state == "pending":
                raise Violation(
                    f"cid {req.cid} ({req.kind}) answered {req.answers} times"
                )
        for res in core.resources.values():
            if res.phase is not Phase.ABANDONED:
                raise Violation(f"after Stopped, {res.rid} is {res.phase.value}")
        if core.callers or core.keys or core.waiters.slots or core.waiters.queued:
            raise Violation(
                f"after Stopped: callers {list(core.callers)}, keys "
                f"{list(core.keys)}, {len(core.waiters.slots)} in the slot queue"
            )
        hung = set()  # closed after the stop, hung in close(): nobody waits
        for actor in self.actors:
            res = core.resources.get(actor.rid)
            if res is not None and res.left_closed and actor.due == INF:
                hung.add(id(actor.obj))
            elif not (actor.dead or actor.abandoned):
                raise Violation(f"actor {actor.rid}.{actor.attempt} outlived the pool")
        for obj in self.objs:
            if (
                obj.closes == 0
                and id(obj) not in hung
                and not any(a.abandoned for a in self.actors if a.obj is obj)
            ):
                raise Violation(f"{obj!r} was never closed")
        if self.fleet is not None and self.fleet.pending:
            raise Violation(f"fleet reservations left: {list(self.fleet.pending)}")


_NO_ENTRY = KeyEntry(None)


@dataclass(eq=False, slots=True)
class _Pending:
    """The notes not yet drained, counted."""

    hits: int = 0
    outs: int = 0
    givens: int = 0  # GIVEN notes: checkouts the core has not counted yet
    out: dict[int, int] = field(default_factory=dict)  # rid -> OUT notes
    back: dict[int, int] = field(default_factory=dict)  # rid -> checkin notes
    rids: set[int] = field(default_factory=set)  # resources notes are about


def _rids(view: dict[Hashable, Resource]) -> dict[Hashable, int]:
    return {key: res.rid for key, res in view.items()}


def _per_key(entry: KeyEntry) -> int:
    """Resources of a key toward `max_per_key`: a refresh's standby is not one
    more while a resource it replaces is still in the key map."""
    return sum(1 for r in entry.resources if not any(old.mapped for old in r.replaces))


def _is_refill(item: Any) -> bool:
    return not hasattr(item, "cid")


def _short(value: Any) -> str:
    if value is MISS:
        return "MISS"
    if isinstance(value, Lease):
        return f"lease {value.lid} of resource {value.rid}"
    if isinstance(value, Res):
        return f"resource {value.rid}"
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."


def _f(x: float | None) -> str:
    if x is None:
        return "None"
    if x == INF:
        return "inf"
    return f"{x:.0e}" if x >= 1e9 else f"{x:.3g}"


# --- running many seeds ----------------------------------------------------------


def run_seed(
    seed: int,
    steps: int = DEFAULT_STEPS,
    core_cls: type[PoolCore] = PoolCore,
    known: Iterable[str] = KNOWN_BUGS,
) -> SimResult:
    """Simulate one seed (`known`: the library bugs to excuse)."""
    return Sim(seed, core_cls, known).run(steps)


def run_seeds(
    seeds: Iterable[int],
    steps: int = DEFAULT_STEPS,
    core_cls: type[PoolCore] = PoolCore,
    *,
    stop_at_first: bool = False,
    known: Iterable[str] = KNOWN_BUGS,
) -> list[SimResult]:
    """Simulate several seeds in this process, in order."""
    results = []
    for seed in seeds:
        results.append(run_seed(seed, steps, core_cls, known))
        if stop_at_first and results[-1].violation:
            break
    return results


def _run_chunk(args: tuple[list[int], int, tuple[str, ...]]) -> list[SimResult]:
    seeds, steps, known = args
    return run_seeds(seeds, steps, known=known)


def report(result: SimResult, steps: int, out: Any = None) -> None:
    """Print one failing seed: where, what broke, how it got there."""
    out = sys.stdout if out is None else out
    print(
        f"VIOLATION seed={result.seed} step={result.steps}: {result.violation}",
        file=out,
    )
    print(f"  options: {Sim(result.seed).describe()}", file=out)
    replay = f"python tests/simulation.py --seed {result.seed}"
    if steps != DEFAULT_STEPS:
        replay += f" --steps {steps}"
    print(f"  replay: {replay}", file=out)
    for line in result.trace:
        print(line, file=out)


def main(argv: list[str] | None = None) -> int:
    """The command line; see the module docstring."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="per seed")
    parser.add_argument("--first", type=int, default=0, help="the first seed")
    parser.add_argument("--seed", type=int, default=None, help="replay one seed")
    parser.add_argument(
        "--coverage", action="store_true", help="count the rare paths taken"
    )
    parser.add_argument(
        "--strict", action="store_true", help="excuse no known library bug"
    )
    parser.add_argument(
        "--jobs", type=int, default=min(os.cpu_count() or 1, 4), help="processes"
    )
    args = parser.parse_args(argv)
    if args.seed is None and os.environ.get("SEED"):
        args.seed = int(os.environ["SEED"])
    if args.seed is not None:
        seeds = [args.seed]
    else:
        seeds = list(range(args.first, args.first + args.seeds))
    known = () if args.strict else tuple(KNOWN_BUGS)
    started = time.monotonic()
    if args.jobs > 1 and len(seeds) > 1:
        import multiprocessing  # noqa: PLC0415

        n = args.jobs * 8
        chunks = [(seeds[i::n], args.steps, known) for i in range(n)]
        with multiprocessing.Pool(args.jobs) as pool:
            parts = pool.map(_run_chunk, chunks)
        results = sorted((r for part in parts for r in part), key=lambda r: r.seed)
    else:
        results = run_seeds(seeds, args.steps, known=known)
    total = sum(r.steps for r in results)
    failures = [r for r in results if r.violation]
    if args.coverage:
        seen: dict[str, int] = {}
        for result in results:
            for what, n in result.seen.items():
                seen[what] = seen.get(what, 0) + n
        for what in sorted(seen):
            print(f"  {seen[what]:8d}  {what}", file=sys.stderr)
    for result in failures:
        report(result, args.steps)
    took = time.monotonic() - started
    print(f"({took:.1f} s, {total / max(took, 1e-9):,.0f} steps/s)", file=sys.stderr)
    print(f"{total} steps, {len(results)} seeds, {len(failures)} violations")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
