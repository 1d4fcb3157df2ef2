"""Deterministic simulation of the pool's pure core (SPEC 7).

One seeded `random.Random` and a fake clock drive a
[PoolCore][pooler_actors._core.PoolCore] the way the supervisor shell does:
callers put requests into a FIFO mailbox and may give up at any moment;
resource actors are simulated mailboxes that run the factory, pings and
closes in order, with random durations, failures and hangs, or stop unasked;
a fleet-wide capacity grants, refuses and loses slots; timers fire when the
clock reaches the core's next deadline. After every step the simulator checks
the invariants of SPEC 3, 6, 7 and 8 against its own model of what exists and
who waits, and the core's books against each other.

    python tests/simulation.py [--seeds N] [--steps M] [--seed S] [--jobs J]
                               [--first F]

prints, per failing seed, the seed, the step, what broke and a short trace,
and as its last line `N steps, M seeds, V violations`. `--seed S` (or
`SEED=S` in the environment) replays one seed exactly: everything random
comes from the seed, nothing from the real clock or hash order.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pooler_actors._core as core_module
from pooler_actors import _effects as fx
from pooler_actors._core import KeyEntry, PoolCore
from pooler_actors._lifecycle import COUNTED, Phase
from pooler_actors.errors import AcquireTimeout, PoolClosedError, TooManyWaiters
from pooler_actors.lease import Lease
from pooler_actors.options import PoolOptions

__all__ = ["Sim", "SimResult", "Violation", "main", "run_seed", "run_seeds"]

DEFAULT_SEEDS = 700  # x DEFAULT_STEPS: about 1.27 million steps in all
DEFAULT_STEPS = 2000
INF = math.inf
T0 = 1000.0  # the fake clock's start (traces show time since)
TRACE_LEN = 30
FINISH_STEPS = 20_000  # bound on the steps from close() to Stopped
_LIVE = (Phase.RESERVING, Phase.CREATING, Phase.OPEN)  # may be in the key map
_GRANTS = ("acquire", "checkout")


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
    state: str = "pending"  # pending | value | error | withdrawn (the future)
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


@dataclass(eq=False, slots=True)
class Held:
    """A lease a caller holds."""

    lease: Lease[Any, Any]
    forget: bool  # a holder that never checks in


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


class Sim:
    """One seed's simulation; see the module docstring."""

    def __init__(self, seed: int, core_cls: type[PoolCore] = PoolCore) -> None:
        self.seed = seed
        rng = self.rng = random.Random(seed)
        self.now = T0
        self.opts = opts = self._options(rng)
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
        bad = rng.random() < 0.8
        self.p_factory_fail = rng.uniform(0, 0.3) if bad else 0.0
        self.p_factory_hang = rng.uniform(0, 0.06) if bad else 0.0
        self.p_ping_fail = rng.uniform(0, 0.3) if bad else 0.0
        self.p_ping_hang = rng.uniform(0, 0.05) if bad else 0.0
        self.p_close_raise = rng.uniform(0, 0.3) if bad else 0.0
        self.p_close_hang = rng.uniform(0, 0.05) if bad else 0.0
        self.lost_actors = rng.random() < 0.6
        self.p_forget = rng.choice([0.0, 0.05, 0.2])
        self.p_broken = rng.uniform(0, 0.3)
        self.close_early = rng.random() < 0.3
        self.tempo = rng.choice([0.02, 0.1, 0.5])  # callers' mean think time
        self.p_late = rng.choice([0.0, 0.03, 0.2])  # the clock overtakes due work
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
        # The model.
        self.held: list[Held] = []
        self.returned: deque[Lease[Any, Any]] = deque(maxlen=8)
        self.leases_out: dict[int, int] = {}  # lid -> rid, leases callers hold
        self.rid_leases: dict[int, set[int]] = {}
        self.pending_callers: dict[int, Req] = {}  # read, unanswered, not withdrawn
        self.undelivered_cids: set[int] = set()
        self.objs: list[Res] = []
        self.closes: dict[int, int] = {}  # Close effects per resource
        self.retiring_since: dict[int, float] = {}
        self.handed_back: set[int] = set()  # rids of leases handed back undelivered
        self.opened: list[Hashable] = []  # the key of each Ready accepted, in order
        self.counts = dict.fromkeys(
            ("created", "acquires", "checkouts", "rejected", "abandoned", "broken"), 0
        )
        # Per step and per event.
        self.step = 0
        self.trace: deque[tuple[int, float, str]] = deque(maxlen=TRACE_LEN)
        self._pre: dict[str, Any] = {}
        self._event = ("", 0)  # (name, rid) of the event being fed
        self._grants: list[tuple[int, int]] = []  # (cid, rid) to new requests
        self._replied: set[int] = set()
        self._created_keys: set[Hashable] = set()
        self._checkin_lid = -1  # the lease a checkin event gives back
        self._reclaimed_before = 0
        self._dirty_ok = False  # a reclaim left dirty keys, not yet served

    @staticmethod
    def _options(rng: random.Random) -> PoolOptions:
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
            max_lifetime=maybe(1.0, 20.0),
            max_idle_time=maybe(0.5, 10.0),
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
            f"global={self.fleet is not None} keys={len(self.keys)}"
        )

    # --- running -------------------------------------------------------------

    def run(self, steps: int) -> SimResult:
        """Run `steps` random steps, then close the pool and run it to its end."""
        chunk = core_module._PING_CHUNK
        core_module._PING_CHUNK = self.ping_chunk
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
            return SimResult(self.seed, self.step, str(violation), self._trace())
        finally:
            core_module._PING_CHUNK = chunk
        return SimResult(self.seed, self.step)

    def _random_step(self) -> None:
        x = self.rng.random() * 100
        if x < 18:
            self._client()
        elif not (
            (x < 26 and self._checkin())
            or (26 <= x < 28 and self._give_up())
            or (28 <= x < 32 and self._fleet_step())
            or (32 <= x < 32.4 and self._lose_actor())
        ):
            self._progress()

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
        """Close the pool, run it until `Stopped`, let the actors finish, check."""
        if not self.stopped:
            self._send("close")
        for _ in range(FINISH_STEPS):
            if self.stopped:
                break
            self.step += 1
            x = self.rng.random()
            if not (
                (x < 0.05 and self._checkin())
                or (0.05 <= x < 0.07 and self._give_up())
                or (0.07 <= x < 0.12 and self._fleet_step())
            ):
                self._progress_or_jump()
            self.check()
        else:
            phases = [(r.rid, r.phase.value) for r in self.core.resources.values()]
            raise Violation(
                f"the pool did not stop within {FINISH_STEPS} steps of close() "
                f"(used={self.core.used}, resources={phases})"
            )
        for _ in range(FINISH_STEPS):  # actors with a finite hang end too
            self.step += 1
            if not self._actor_step():
                due = self._next_due()
                if due == INF:
                    break
                self.now = max(self.now, due)
        self.final_check()

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
        if rng.random() < 0.1:
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
        """One core event and its effects, as the supervisor's `_step` does."""
        core = self.core
        self._event = (name, rid)
        self._pre = self._snapshot()
        self._reclaimed_before = core.n["reclaimed"]
        self._checkin_lid = -1
        self._grants = []
        self._replied = set()
        self._created_keys = set()
        try:
            event(self.now)
            effects = core.effects
            while effects:
                self._do(effects.pop(0))
        except Violation:
            raise
        except Exception as error:  # a bug of the core: the real shell crashes
            raise Violation(f"core raised {error!r} in {name}") from error
        self._after_event()

    def _snapshot(self) -> dict[str, Any]:
        core = self.core
        return {
            "waiters": {k: list(e.waiters) for k, e in core.keys.items() if e.waiters},
            "slots": list(core.slots),
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
        if not self.inbox:
            return False
        match self.inbox.popleft():
            case ("req", req):
                self._read(req)
            case ("withdraw", req):
                self._note(f"withdraw #{req.n} cid={req.cid}")
                req.withdraw_read = True
                self.pending_callers.pop(req.cid, None)
                self._feed("give_up", lambda now: core.give_up(now, req.cid))
                self.undelivered_cids.discard(req.cid)
                if req.cid in core.callers:
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
            case ("resume",):
                self._note("resume")
                self._feed("resume", core.resume)
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
            self._feed("release_all", lambda now: core.release_all(now, cid))
        elif kind == "refresh":
            entry = core.keys.get(req.key)
            any_open = entry is not None and any(
                r.phase is Phase.OPEN for r in entry.resources
            )
            self._feed("refresh", lambda now: core.refresh(now, cid, req.key))
            if not any_open and (req.answers != 1 or req.got is not False):
                raise Violation(f"refresh of a key with nothing open gave {req.got!r}")
        elif kind == "prewarm":
            self._feed("prewarm", lambda now: core.prewarm(now, cid, req.arg))
        elif kind == "contains":
            self._feed("contains", lambda _now: core.contains(cid, req.key))
        elif kind == "stats":
            self._feed("stats", lambda _now: core.stats(cid))
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
        for res in entry.resources:
            if res.phase is Phase.OPEN:
                busy = res.holders + (1 if res.ping_seq and limit == 1 else 0)
                if not hold or limit is None or busy < limit:
                    return f"resource {res.rid} has room"
            else:  # in the key map: reserving or creating
                places = res.holders + sum(c.hold for c in res.joiners)
                if not hold or limit is None or places < limit:
                    return f"creation {res.rid} has a place"
        return ""

    def _read_checkin(self, req: Req) -> None:
        core, cid = self.core, req.cid
        lease, broken = req.arg
        ours = lease.pool is self.pool_id
        req.expect = ours and lease.lid in self.leases_out

        def checkin(now: float) -> None:
            self._checkin_lid = lease.lid
            core.checkin(now, cid, lease, broken)

        self._feed("checkin", checkin)
        if not ours and not isinstance(req.got, ValueError):
            raise Violation(f"checkin of another pool's lease gave {req.got!r}")
        if ours and req.got is not req.expect:
            raise Violation(
                f"checkin of lease {lease.lid} gave {req.got!r}, not {req.expect!r}"
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
                if self.opts.max_holders == 1 and self.rid_leases.get(rid):
                    raise Violation(f"exclusive resource {rid} pinged while held")
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
        if kind in _GRANTS:
            self._on_grant(req, value)
            self._replied.add(effect.cid)
        if req.state == "pending":
            req.state, req.value = "value", value
            if kind == "checkout":
                self._hold(value)
        elif kind in _GRANTS:
            # The caller withdrew before the grant reached it: the shell hands
            # the grant back.
            req.undelivered = True
            self.undelivered_cids.add(effect.cid)
            if isinstance(value, Lease):
                self.handed_back.add(value.rid)
            self.core.undelivered(self.now, effect)
        if kind == "checkin" and value is True:
            lease, broken = req.arg
            rid = self.leases_out.pop(lease.lid)
            self.rid_leases[rid].discard(lease.lid)
            self.counts["broken"] += broken
        elif kind in ("release", "release_all"):
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
        elif kind == "stats" and value.open_resources > self.opts.max_open_resources:
            raise Violation(f"stats.open_resources={value.open_resources} > the cap")

    def _hold(self, lease: Lease[Any, Any]) -> None:
        """A caller received a lease."""
        self.leases_out[lease.lid] = lease.rid
        lids = self.rid_leases.setdefault(lease.rid, set())
        lids.add(lease.lid)
        self.held.append(Held(lease, self.rng.random() < self.p_forget))
        limit = self.opts.max_holders
        if limit is not None and len(lids) > limit:
            raise Violation(
                f"resource {lease.rid} has {len(lids)} holders > max_holders={limit}"
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

    def _on_fail(self, effect: fx.Fail) -> None:
        req = self._answered(effect.cid, "Fail")
        error = req.got = effect.error
        self._note(f"  -> Fail cid={effect.cid} ({req.kind}) {type(error).__name__}")
        if isinstance(error, TooManyWaiters):
            self.counts["rejected"] += 1
            limit = self.opts.max_waiting
            if limit is None or self.core.queued < limit:
                raise Violation(f"TooManyWaiters with {self.core.queued} waiting")
        if req.state == "pending":
            req.state, req.value = "error", error

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
        if req.kind == "release_all":
            if value is not None:
                raise Violation(f"release_all() gave {value!r}")
        elif not isinstance(value, bool) or (req.expect and not value):
            raise Violation(f"release({req.key!r}) of an open key gave {value!r}")

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

    def _on_close(self, rid: int) -> None:
        self._note(f"  -> Close rid={rid}")
        closes = self.closes[rid] = self.closes.get(rid, 0) + 1
        if closes > 1:
            raise Violation(f"Close of resource {rid} twice")
        holders = len(self.rid_leases.get(rid, set()) - {self._checkin_lid})
        if holders:
            since = self.retiring_since.get(rid)
            if since is None or self.now < since + self.opts.drain_timeout:
                raise Violation(
                    f"Close of resource {rid} with {holders} holders, before its "
                    "drain timeout"
                )
        actor = self.shell_actors.get(rid)
        if actor is not None and not actor.dead:
            self._tell(actor, ("stop",))

    def _on_reserve(self, rid: int) -> None:
        fleet = self.fleet
        if fleet is None:
            raise Violation("ReserveSlot without a fleet-wide capacity")
        if rid in fleet.pending or rid in fleet.held:
            raise Violation(f"ReserveSlot for resource {rid} twice")
        fleet.pending.append(rid)
        self._created_keys.add(self.core.resources[rid].key)

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
        rng = self.rng
        key = rng.choice(self.keys)
        x = rng.random() * 100
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
        pending = [
            r for r in self.reqs[-40:] if r.state == "pending" and r.kind != "close"
        ]
        if not pending:
            return False
        req = self.rng.choice(pending)
        # Withdrawing wins only against a pending future; the shell learns of
        # it by message, after the request itself (one sender, FIFO).
        req.state = "withdrawn"
        self._note(f"give up #{req.n} {req.kind} cid={req.cid or '(unread)'}")
        if not self.stopped:
            self.inbox.append(("withdraw", req))
        return True

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

    def _check_slot_order(self) -> None:
        """A slot went to a caller while an older one, still waiting for a slot,
        was passed over (a key with an older item earlier in line is excused:
        its creation may have been joined by a later caller of the key)."""
        if not self._created_keys:
            return
        before, now_in = self._pre["slots"], self.core.slots
        oldest = next((i for i in before if i in now_in and not _is_refill(i)), None)
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
        counted = [r for r in core.resources.values() if r.phase in COUNTED]
        self._check_cap(counted)
        queued = self._check_keys(dirty)
        self._check_callers()
        holders = self._check_holders()
        self._check_stats(counted, queued, holders)
        self._check_timers()
        if self.fleet is not None:
            self._check_fleet()

    def _check_cap(self, counted: list[Any]) -> None:
        """The cap is strict, counting what exists by the model's own count."""
        core = self.core
        cap = core.cap
        if core.used != len(counted):
            raise Violation(f"core.used={core.used}, {len(counted)} counted")
        if core.used > cap:
            raise Violation(f"cap: {core.used} resources counted > {cap}")
        existing = 0
        for actor in self.actors:
            if actor.dead or actor.abandoned:
                continue
            if actor.in_factory or actor.obj is not None:
                existing += 1
                res = core.resources.get(actor.rid)
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
            waiting = res.phase is Phase.RESERVING or (
                res.phase is Phase.CREATING and res.backoff
            )
            actor = self.shell_actors.get(res.rid)
            if not waiting and (actor is None or actor.attempt != res.attempts):
                # ABANDONED included: it is forgotten when its actor ends.
                raise Violation(
                    f"resource {res.rid} is {res.phase.value} (try {res.attempts}) "
                    "with no actor of that try"
                )

    def _check_keys(self, dirty: Iterable[Hashable]) -> int:
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
            if sum(r.standby for r in entry.resources) > 1:
                raise Violation(f"two refresh standbys for {key!r}")
            if _per_key(entry) > opts.max_per_key:
                shown = [(r.rid, r.phase.value, r.standby) for r in entry.resources]
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
                self._check_progress(key, entry)
        for res in core.resources.values():
            if res.mapped and res not in core.keys.get(res.key, _NO_ENTRY).resources:
                raise Violation(f"resource {res.rid} mapped, not in the key map")
            if res.phase is Phase.OPEN and not res.mapped:
                raise Violation(f"resource {res.rid} open but out of the key map")
        if core.queued != queued:
            raise Violation(f"core.queued={core.queued}, {queued} waiters")
        if opts.max_waiting is not None and queued > opts.max_waiting:
            raise Violation(f"{queued} waiting > max_waiting={opts.max_waiting}")
        for item in core.slots:
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

    def _check_progress(self, key: Hashable, entry: KeyEntry) -> None:
        """The oldest waiter of a key waits for a reason."""
        core, opts = self.core, self.opts
        limit = opts.max_holders
        head = next(iter(entry.waiters.values()))
        for res in entry.resources:
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
        if core.callers.keys() != self.pending_callers.keys():
            extra = sorted(core.callers.keys() - self.pending_callers.keys())
            lost = sorted(self.pending_callers.keys() - core.callers.keys())
            raise Violation(
                f"callers: the core keeps {extra} (answered or gone), lost {lost}"
            )
        for cid, caller in core.callers.items():
            res = caller.joined
            if res is not None:
                if core.resources.get(res.rid) is not res or caller not in res.joiners:
                    raise Violation(f"caller {cid} joined {res.rid}, unlisted there")
                if res.phase not in (Phase.RESERVING, Phase.CREATING):
                    raise Violation(f"caller {cid} joined {res.rid} ({res.phase})")
            elif not caller.waiting:
                raise Violation(f"caller {cid} neither waits nor joined")
        for res in core.resources.values():
            for caller in res.joiners:
                if core.callers.get(caller.cid) is not caller:
                    raise Violation(
                        f"resource {res.rid} keeps gone joiner {caller.cid}"
                    )
        gave_up = core._gave_up.keys()
        if not gave_up <= self.undelivered_cids:
            raise Violation(f"give-up records kept: {sorted(gave_up)}")

    def _check_holders(self) -> int:
        """Leases: the core's and the holders' agree; returns how many are out."""
        core = self.core
        for rid in [r for r in self.rid_leases if r not in core.resources]:
            for lid in self.rid_leases.pop(rid):
                del self.leases_out[lid]  # its resource ended: the lease is void
        if core.leases.keys() != self.leases_out.keys():
            raise Violation(
                f"leases: the core has {sorted(core.leases)}, holders "
                f"{sorted(self.leases_out)}"
            )
        total = 0
        for res in core.resources.values():
            lids = self.rid_leases.get(res.rid, set())
            if res.holders != len(lids) or res.leases != lids:
                raise Violation(
                    f"resource {res.rid}: the core counts {res.holders} holders, "
                    f"{len(lids)} hold it"
                )
            total += res.holders
            if res.phase is Phase.RETIRING:
                self.retiring_since.setdefault(res.rid, self.now)
                if not res.holders:
                    raise Violation(f"resource {res.rid} retiring with no holder")
        return total

    def _check_stats(self, counted: list[Any], queued: int, holders: int) -> None:
        core = self.core
        stats = core.snapshot()
        expect = {
            "open_resources": len(counted),
            "wait_count": queued,
            "holders": holders,
            **self.counts,
        }
        for name, value in expect.items():
            if getattr(stats, name) != value:
                raise Violation(f"stats.{name}={getattr(stats, name)}, not {value}")
        reclaiming = sum(1 for r in counted if r.reason == "reclaimed")
        if core._reclaiming != reclaiming:
            raise Violation(f"reclaiming {core._reclaiming}, not {reclaiming}")

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
        if live > bound:
            kinds = sorted(e[2] for e in heap if e[1] not in cancelled)
            raise Violation(f"timers: {live} live > {bound}: {kinds}")
        if len(heap) > 2 * live + 66:
            raise Violation(f"a timer heap of {len(heap)} for {live} live timers")

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
        if core.callers or core.keys or core.slots or core.queued:
            raise Violation(
                f"after Stopped: callers {list(core.callers)}, keys "
                f"{list(core.keys)}, {len(core.slots)} in the slot queue"
            )
        for actor in self.actors:
            if not (actor.dead or actor.abandoned):
                raise Violation(f"actor {actor.rid}.{actor.attempt} outlived the pool")
        for obj in self.objs:
            if obj.closes == 0 and not any(
                a.abandoned for a in self.actors if a.obj is obj
            ):
                raise Violation(f"{obj!r} was never closed")
        if self.fleet is not None and self.fleet.pending:
            raise Violation(f"fleet reservations left: {list(self.fleet.pending)}")


_NO_ENTRY = KeyEntry(None)


def _per_key(entry: KeyEntry) -> int:
    """Resources of a key toward `max_per_key`: a refresh's standby is not one
    more while a resource it replaces is still in the key map."""
    return sum(
        1
        for r in entry.resources
        if not (r.standby and any(old.mapped for old in r.replaces))
    )


def _is_refill(item: Any) -> bool:
    return not hasattr(item, "cid")


def _short(value: Any) -> str:
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
    seed: int, steps: int = DEFAULT_STEPS, core_cls: type[PoolCore] = PoolCore
) -> SimResult:
    """Simulate one seed."""
    return Sim(seed, core_cls).run(steps)


def run_seeds(
    seeds: Iterable[int],
    steps: int = DEFAULT_STEPS,
    core_cls: type[PoolCore] = PoolCore,
    *,
    stop_at_first: bool = False,
) -> list[SimResult]:
    """Simulate several seeds in this process, in order."""
    results = []
    for seed in seeds:
        results.append(run_seed(seed, steps, core_cls))
        if stop_at_first and results[-1].violation:
            break
    return results


def _run_chunk(args: tuple[list[int], int]) -> list[SimResult]:
    seeds, steps = args
    return run_seeds(seeds, steps)


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
        "--jobs", type=int, default=min(os.cpu_count() or 1, 4), help="processes"
    )
    args = parser.parse_args(argv)
    if args.seed is None and os.environ.get("SEED"):
        args.seed = int(os.environ["SEED"])
    if args.seed is not None:
        seeds = [args.seed]
    else:
        seeds = list(range(args.first, args.first + args.seeds))
    started = time.monotonic()
    if args.jobs > 1 and len(seeds) > 1:
        import multiprocessing  # noqa: PLC0415

        n = args.jobs * 8
        chunks = [(seeds[i::n], args.steps) for i in range(n)]
        with multiprocessing.Pool(args.jobs) as pool:
            parts = pool.map(_run_chunk, chunks)
        results = sorted((r for part in parts for r in part), key=lambda r: r.seed)
    else:
        results = run_seeds(seeds, args.steps)
    total = sum(r.steps for r in results)
    failures = [r for r in results if r.violation]
    for result in failures:
        report(result, args.steps)
    took = time.monotonic() - started
    print(f"({took:.1f} s, {total / max(took, 1e-9):,.0f} steps/s)", file=sys.stderr)
    print(f"{total} steps, {len(results)} seeds, {len(failures)} violations")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
