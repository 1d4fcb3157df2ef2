"""The pool's whole state machine: `(now, event) -> effects`, nothing else.

This module is the pool. It owns the key map, every resource's lifecycle
(see [_lifecycle][pooler_actors._lifecycle]), the cap, the wait queues,
leases, deadlines, health sweeps, lifecycle policies and fleet-wide slots.
It imports no pykka, threading, structlog or time and does no I/O: the shell
passes the time in with every event, passes randomness in at construction,
and carries out the [effects][pooler_actors._effects] the core appends to
`effects`. Callers are numbers (`cid`), resources too (`rid`); the core never
sees a future, a thread or an actor.

Reading guide: every public method is one event. Each ends in `_pump`, which
serves waiting callers of keys whose situation changed, hands free slots to
the slot queue (oldest first), reclaims idle resources when callers still
wait, and finishes a shutdown once nothing counts toward the cap. A resource
leaves service only through `_retire` and leaves the pool only through
`_move(..., GONE)`.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from collections.abc import Callable, Collection, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pooler_actors._counter import (
    ASK,
    BACK,
    BROKEN,
    GIVEN,
    HANDOVER,
    HIT,
    IN,
    OUT,
    POLLING,
    QUIET,
    WOKEN,
)
from pooler_actors._counter import Counter as Published
from pooler_actors._effects import (
    Abandon,
    CancelSlot,
    Close,
    Effect,
    Fail,
    Log,
    Ping,
    Reply,
    ReserveSlot,
    Resume,
    ReturnSlot,
    Start,
    Stopped,
)
from pooler_actors._lifecycle import COUNTED, Phase, advance
from pooler_actors._timers import Timers
from pooler_actors.errors import (
    AcquireTimeout,
    FactoryError,
    PoolClosedError,
    TooManyWaiters,
)
from pooler_actors.lease import Lease
from pooler_actors.options import PoolOptions
from pooler_actors.stats import COUNTERS, Stats

__all__ = [
    "ASK",
    "BACK",
    "BROKEN",
    "GIVEN",
    "HANDOVER",
    "HIT",
    "IN",
    "NO_KEY",
    "OUT",
    "POLLING",
    "QUIET",
    "WOKEN",
    "Caller",
    "KeyEntry",
    "PoolCore",
    "Published",
    "Resource",
]

NO_KEY: Any = object()
"""The `key` of a log effect about no key in particular."""

_INF = math.inf
_PING_CHUNK = 64  # pings told per turn of a sweep (see `_ping_some`)
# A fleet slot free anywhere is granted in one round trip to the engine; a
# reservation still waiting after this long means the fleet is at its limit,
# and what must not wait for long stops waiting (see `_on_reserve_wait`).
_FLEET_WAIT = 1.0
_ENDED = (Phase.GONE, Phase.ABANDONED)


@dataclass(eq=False, slots=True)
class Caller:
    """A request (acquire or checkout) not answered at once."""

    cid: int
    key: Hashable
    hold: bool  # a checkout: granted a lease, which takes a holder place
    start: float
    deadline: float  # `inf`: none
    timeout: float | None
    context: dict[str, Any]
    queued: bool = False  # waited (counted in `waits` and `wait_duration`)
    waiting: bool = False  # in its key's FIFO now (counted in `wait_count`)
    in_slots: bool = False  # in the slot queue now
    joined: Resource | None = None  # the creation it waits for
    timer: int | None = None
    handoff: bool = False  # its cid is in `Published.queue`: a checkin may serve it
    taken: bool = False  # a checkin on the hit path took it (rule 9)
    answered: float = -1.0  # when a grant was sent


@dataclass(eq=False, slots=True)
class Resource:
    """One resource the pool knows of, from reservation to its end."""

    rid: int
    key: Hashable
    phase: Phase
    context: dict[str, Any]
    started: float
    obj: Any = None
    opened: bool = False  # the factory returned it (once)
    mapped: bool = True  # in the key map: new requests may get it
    standby: bool = False  # a refresh's replacement, not yet swapped in
    replaces: list[Resource] = field(default_factory=list)
    holders: int = 0
    retired: bool = False  # out of service for good (callers re-check it)
    tokens: list[Any] = field(default_factory=list)  # shared: hit-path leases
    leases: set[Lease[Any, Any]] = field(default_factory=set)  # out, as known
    home: list[Resource] | None = None  # exclusive: its key's idle list
    joiners: list[Caller] = field(default_factory=list)
    ops: list[_Op] = field(default_factory=list)
    last_used: float = 0.0
    used_seq: int = 0  # orders uses noted at one `now` (least recently used)
    handed_out: bool = False  # a plain acquire() got it: never reclaimed
    reason: str = ""  # why it was retired
    ping_seq: int = 0  # the sweep whose ping is outstanding, 0 if none
    attempts: int = 0  # factory retries so far
    backoff: bool = False  # waiting to retry the factory: no actor runs
    global_held: bool = False
    slot_lost: bool = False  # its fleet-wide slot was lost: no factory try again
    timers: dict[str, int] = field(default_factory=dict)


@dataclass(eq=False, slots=True)
class KeyEntry:
    """A key's resources in service (creation order) and its waiting callers."""

    key: Hashable
    resources: list[Resource] = field(default_factory=list)
    waiters: dict[int, Caller] = field(default_factory=dict)  # FIFO by cid
    idle: list[Resource] = field(default_factory=list)  # exclusive: free to take
    queue: deque[int] = field(default_factory=deque)  # exclusive: `Published.queue`


@dataclass(eq=False, slots=True)
class _Op:
    """A request answered once the resources it touched reach a goal.

    The one kind of pending operation: Release, ReleaseAll and Close wait for
    resources to end (or retire with holders), Prewarm and Refresh for
    creations to open or fail.
    """

    kind: str  # "release" | "prewarm" | "refresh"
    cid: int
    waiting: set[int] = field(default_factory=set)
    opened: bool = False
    results: dict[Hashable, str] = field(default_factory=dict)


@dataclass(eq=False, slots=True)
class _Refill:
    """A refresh at the cap: create `key` anew with the next free slot."""

    key: Hashable
    op: _Op


@dataclass(eq=False, slots=True)
class _Sweep:
    """One health check in progress."""

    seq: int
    started: float
    outstanding: set[int]
    unsent: deque[int]
    pinged: int
    evicted: int = 0
    timer: int | None = None  # its ping timeout, cancelled when it ends


class PoolCore:
    """The keyed pool as a pure state machine; see the module docstring.

    Args:
        options: the pool's options.
        pool_id: the identity stamped on leases, to refuse another pool's.
        rand: a source of uniform floats in `[0, 1)` (jitter).
    """

    def __init__(
        self, options: PoolOptions, *, pool_id: object, rand: Callable[[], float]
    ) -> None:
        self.options = options
        self.name = options.name
        self.cap = options.max_open_resources
        self.pool_id = pool_id
        self._rand = rand
        self._exclusive = options.max_holders == 1
        self._global = options.global_capacity is not None
        #: What the shell must do next, in order; it drains the list.
        self.effects: list[Effect] = []
        #: Whether debug events are wanted (set by the shell; skips building them).
        self.debug = True
        self.keys: dict[Hashable, KeyEntry] = {}
        self.resources: dict[int, Resource] = {}  # every resource not GONE
        self.used = 0  # resources in COUNTED phases: what the cap counts
        self.callers: dict[int, Caller] = {}  # requests not answered yet
        self.slots: dict[Caller | _Refill, Caller | _Refill] = {}  # FIFO for a slot
        self.queued = 0  # callers in some key's FIFO
        #: The state callers' threads may read and take from (the hit path).
        self._shared = options.shared
        self.published = Published(
            pool_id, exclusive=self._exclusive, shared=self._shared
        )
        self.published.direct = self._exclusive and options.max_waiting is None
        self.published.single = options.max_per_key == 1
        self.timers = Timers()
        self.n: dict[str, int] = dict.fromkeys(
            (c for c in COUNTERS if c != "wait_duration"), 0
        )
        self.wait_duration = 0.0
        self.max_wait = 0.0
        self.closing: str | None = None  # the reason, once close began
        self.stopped = False
        self._close_cids: list[int] = []
        self._gave_up: dict[int, Caller] = {}  # granted, then found withdrawn
        self._early: set[int] = set()  # served by a checkin before its ASK note
        self._sweep: _Sweep | None = None
        self._health: int | None = None
        self._dirty: dict[Hashable, None] = {}
        self._reclaiming = 0
        self._seq = 0
        self._timer_handlers: dict[str, Callable[[float, int], None]] = {
            "deadline": self._on_deadline,
            "create": self._on_create_timeout,
            "retry": self._on_retry,
            "close": self._on_close_timeout,
            "drain": self._on_drain_timeout,
            "lifetime": self._on_lifetime,
            "idle": self._on_idle,
            "health": self._on_health_timer,
            "ping": self._on_ping_timeout,
            "reserve": self._on_reserve_wait,
        }

    # --- events: the caller's requests ------------------------------------

    def start(self, now: float) -> None:
        """The pool starts: arm the health check."""
        interval = self.options.health_check_interval
        if interval is not None:
            self._health = self.timers.add(now + interval, "health", 0)
        self._log(
            "info",
            "pool.started",
            max_open_resources=self.cap,
            health_check_interval=interval,
        )

    def acquire(
        self,
        now: float,
        cid: int,
        key: Hashable,
        timeout: float | None,
        context: dict[str, Any],
        *,
        hold: bool = False,
        gone: bool = False,
        since: float | None = None,
    ) -> None:
        """`Acquire` (`hold=False`) or `Checkout` (`hold=True`) of `key`.

        `gone` says the caller gave up before the request was read: it is
        counted, and gets no creation and no place in a queue. `since`: when
        the caller asked, if before `now` (its `timeout` counts from then).
        """
        n = self.n
        n["acquires"] += 1
        if not hold and not self.options.shared:
            self.effects.append(Fail(cid, _acquire_needs_lease(self.options)))
            return
        if self.closing is not None:
            self.effects.append(Fail(cid, PoolClosedError(self.name)))
            return
        entry = self.keys.get(key)
        # Callers queued for the key come first (FIFO per key): a checkin note
        # not read yet may have put a resource back in the idle list they wait
        # for (exclusive), and it is theirs once the note is read.
        if entry is not None and not entry.waiters:
            res = self._best_open(now, entry, hold)
            if res is not None:  # answered at once
                n["hits"] += 1
                if self.debug:
                    self._log("debug", "pool.acquire.hit", key, context)
                self.effects.append(Reply(cid, self._hand(now, res, key, hold)))
                return
        if gone:
            n["timeouts"] += 1
            return
        if timeout is None:
            timeout = self.options.acquire_timeout
        # timeout=0 never waits for a slot, but a creation it starts or joins
        # is awaited.
        start = now if since is None else since
        deadline = start + timeout if timeout else _INF
        caller = Caller(cid, key, hold, start, deadline, timeout, context)
        if entry is not None:
            res = self._joinable(entry, hold)
            if res is not None:
                n["joins"] += 1
                self._add_caller(caller)
                self._join(caller, res)
                self._log("debug", "pool.acquire.joined", key, context)
                return
        room = entry is None or self._count(entry) < self.options.max_per_key
        if room and self.used < self.cap and self.closing is None:
            self._add_caller(caller)
            res = self._create(now, key, context)
            self._join(caller, res)
            self._pump(now)
            return
        if timeout == 0:
            n["timeouts"] += 1
            self._log(
                "warning", "pool.acquire.timeout", key, context, timeout=0, wait_s=0.0
            )
            self.effects.append(Fail(cid, AcquireTimeout(key, 0)))
            return
        limit = self.options.max_waiting
        if limit is not None and self.queued >= limit:
            n["rejected"] += 1
            self._log(
                "warning", "pool.acquire.rejected", key, context, max_waiting=limit
            )
            self.effects.append(Fail(cid, TooManyWaiters(key, limit)))
            return
        n["waits"] += 1
        caller.queued = True
        self._add_caller(caller)
        self._enqueue(self._entry(key), caller, slot=room)
        if self.debug:
            self._log("debug", "pool.acquire.queued", key, context, waiting=self.queued)
        self._pump(now)

    def checkin(
        self, now: float, cid: int, lease: Lease[Any, Any], broken: bool
    ) -> None:
        """`Checkin`: give a lease back; `False` if it was already given back."""
        if lease.pool is not self.pool_id:
            self.effects.append(
                Fail(
                    cid, ValueError(f"{lease!r} was not granted by pool {self.name!r}")
                )
            )
            return
        self.effects.append(Reply(cid, self._give_back(now, lease, broken)))
        self._pump(now)

    def release(self, now: float, cid: int, key: Hashable) -> None:
        """`Release`: retire `key`'s resources; reply once each is closed or
        retired with holders: whether one was open."""
        entry = self.keys.get(key)
        targets = list(entry.resources) if entry is not None else []
        if self._cancel_refills(key):
            # A refresh at the cap was waiting for its old resource to close:
            # it is cancelled, and this release waits for that close too.
            targets = [
                r
                for r in self.resources.values()
                if r.key == key and r.phase in COUNTED
            ]
        if targets:
            self.n["releases"] += len(targets)
            self._log("info", "pool.release", key)
        for res in targets:
            self._retire(now, res, "released")
        self._watch(_Op("release", cid), targets)
        self._pump(now)

    def release_all(self, now: float, cid: int) -> None:
        """`ReleaseAll`: retire every resource; reply once none that existed
        when it arrived exists any more (or, if held, each is retiring)."""
        self._cancel_refills(None)
        targets = [r for r in self.resources.values() if r.phase in COUNTED]
        count = sum(1 for r in targets if r.mapped)
        self.n["releases"] += count
        for res in targets:
            self._retire(now, res, "released")
        self._log("info", "pool.release_all", released=count)
        self._watch(_Op("release_all", cid), targets)
        self._pump(now)

    def contains(self, cid: int, key: Hashable) -> None:
        """`Contains`: whether `key` has a resource in service or in creation."""
        entry = self.keys.get(key)
        self.effects.append(Reply(cid, entry is not None and bool(entry.resources)))

    def list_resources(self, cid: int) -> None:
        """`ListResources`: `(key, resource)` of open resources, creation order."""
        pairs = [
            (r.key, r.obj)
            for r in sorted(self.resources.values(), key=lambda r: r.rid)
            if r.phase is Phase.OPEN and r.mapped
        ]
        self.effects.append(Reply(cid, pairs))

    def stats(self, cid: int) -> None:
        """`GetStats`: a snapshot."""
        self.effects.append(Reply(cid, self.snapshot()))

    def snapshot(self) -> Stats:
        """The pool's stats now."""
        phases = dict.fromkeys(Phase, 0)
        holders = global_held = 0
        for res in self.resources.values():
            phases[res.phase] += 1
            holders += res.holders
            global_held += res.global_held
        return Stats(
            max_open_resources=self.cap,
            open_resources=self.used,
            wait_count=self.queued,
            wait_duration=self.wait_duration,
            creating=phases[Phase.CREATING],
            open=phases[Phase.OPEN],
            retiring=phases[Phase.RETIRING],
            closing=phases[Phase.CLOSING],
            holders=holders,
            max_wait=self.max_wait,
            global_held=global_held,
            global_waiting=phases[Phase.RESERVING],
            **self.n,
        )

    def prewarm(self, now: float, cid: int, keys: Iterable[Hashable]) -> None:
        """`Prewarm`: create resources for `keys` as far as the cap allows."""
        if self.closing is not None:
            self.effects.append(Fail(cid, PoolClosedError(self.name)))
            return
        op = _Op("prewarm", cid)
        created = []
        for key in keys:
            if key in op.results:
                continue
            entry = self.keys.get(key)
            if entry is not None and entry.resources:
                op.results[key] = "open"
            elif self.used < self.cap:
                created.append(self._create(now, key, {}))
                op.results[key] = "creating"
            else:
                op.results[key] = "not_created"
        self._watch(op, created)
        self._pump(now)

    def refresh(self, now: float, cid: int, key: Hashable) -> None:
        """`Refresh`: replace `key`'s open resources with a fresh one.

        Below the cap the old ones serve until the new one is open; at the
        cap they retire first and the next free slot goes to the new one.
        Under a fleet-wide cap the new one first reserves a fleet slot; if
        none comes within `_FLEET_WAIT`, the old ones retire then.
        """
        entry = self.keys.get(key)
        olds = [r for r in entry.resources if r.phase is Phase.OPEN] if entry else []
        if not olds:
            self.effects.append(Reply(cid, False))
            return
        if self.closing is not None:
            self.effects.append(Fail(cid, PoolClosedError(self.name)))
            return
        self.n["refreshed"] += 1
        self._log("info", "pool.refresh", key)
        op = _Op("refresh", cid)
        assert entry is not None
        standby = next((r for r in entry.resources if r.standby), None)
        if standby is not None:  # a refresh of this key is under way: share it
            self._watch(op, [standby])
        elif self.used < self.cap:
            new = self._create(now, key, {})
            new.standby = True
            new.replaces = olds
            self._watch(op, [new])
        else:
            for res in olds:
                self._retire(now, res, "refreshed")
            refill = _Refill(key, op)
            self.slots = {refill: refill, **self.slots}  # first in line
        self._pump(now)

    def give_up(self, now: float, cid: int) -> None:
        """The caller gave up (its own timeout, an interrupt, a cancel)."""
        caller = self.callers.pop(cid, None)
        if caller is None:
            caller = self._gave_up.pop(cid, None)
            if caller is None:
                return  # answered already: the reply won the race
        self.n["timeouts"] += 1
        waited = self._drop(now, caller)
        self._log(
            "warning",
            "pool.acquire.withdrawn",
            caller.key,
            caller.context,
            wait_s=waited,
        )
        self._pump(now)

    def undelivered(self, now: float, reply: Reply) -> None:
        """A grant found its caller gone (it withdrew just before).

        A lease nobody received goes back at once; the caller's wait is taken
        back and counted when its withdrawal arrives (`give_up`), as for any
        caller that gave up.
        """
        value = reply.value
        if isinstance(value, Lease) and value.pool is self.pool_id:
            self._give_back(now, value, broken=False)
        caller = reply.caller
        if caller is None:  # answered at once: the withdrawal finds nothing
            caller = Caller(reply.cid, NO_KEY, False, now, _INF, None, {})
        elif caller.queued:
            self.wait_duration -= caller.answered - caller.start
        self._gave_up[reply.cid] = caller
        self._pump(now)

    def close(self, now: float, cid: int, reason: str = "closed") -> None:
        """Close the pool: fail waiters, retire every resource (holders drain),
        and reply `None` (with a `Stopped` effect) once none counts any more."""
        if self.stopped:
            self.effects.append(Reply(cid, None))
            return
        self._close_cids.append(cid)
        if self.closing is not None:
            return
        self.closing = reason
        self._log("debug", "pool.closing", reason=reason)
        self.timers.cancel(self._health)
        if self._sweep is not None:
            self.timers.cancel(self._sweep.timer)
            self._sweep = None
        error = PoolClosedError(self.name)
        for caller in list(self.callers.values()):
            if not self._take_waiter(caller):
                continue  # served by a checkin: its GIVEN note is on its way
            del self.callers[caller.cid]
            self._drop(now, caller)
            self.effects.append(Fail(caller.cid, error))
        self._cancel_refills(None)
        for res in list(self.resources.values()):
            if res.phase is Phase.CREATING and not res.backoff:
                # Its factory may never return: give it close_timeout.
                self.timers.cancel(res.timers.get("create"))
                self._timer(res, "create", now + self.options.close_timeout)
            self._retire(now, res, "pool_closed")
        self._pump(now)

    # --- events: what resource actors report ------------------------------

    def ready(self, now: float, rid: int, attempt: int, obj: Any) -> None:
        """The factory of `rid` (its try number `attempt`) returned `obj`."""
        res = self.resources.get(rid)
        if res is None or res.phase is not Phase.CREATING or res.attempts != attempt:
            return  # stale: abandoned meanwhile (its actor closes `obj` itself)
        self.timers.cancel(res.timers.pop("create", None))
        res.obj = obj
        res.opened = True
        res.last_used = now
        self._move(now, res, "ready")
        self.n["created"] += 1
        self._log(
            "info",
            "pool.acquire.created",
            res.key,
            res.context,
            created_s=now - res.started,
        )
        joiners, res.joiners = res.joiners, []
        for caller in joiners:
            self._answer(now, caller, self._hand(now, res, caller.key, caller.hold))
        if res.standby and res.mapped:  # a refresh's replacement: swap it in
            for old in res.replaces:
                if old.mapped:
                    self._retire(now, old, "refreshed")
        res.standby = False
        res.replaces = []
        self._notify(res, "opened")
        if not res.mapped:  # released while it was being created
            # Never published: unless a joiner holds it, the core has it.
            owned = not res.holders
            self._retire(now, res, res.reason or "released", owned=owned)
        else:
            lifetime = self.options.max_lifetime
            if lifetime is not None:
                jittered = lifetime * (1.0 - 0.05 * self._rand())
                self._timer(res, "lifetime", now + jittered)
            if self._exclusive and not res.holders:
                assert res.home is not None
                res.home.append(res)
            self._publish_view(self.keys[res.key])
            self._arm_idle(res)
            self._dirty[res.key] = None
        self._pump(now)

    def failed(self, now: float, rid: int, attempt: int, error: BaseException) -> None:
        """The factory of `rid` (try `attempt`) raised or returned a non-`Reusable`."""
        res = self.resources.get(rid)
        if (
            res is None
            or res.phase is not Phase.CREATING
            or res.backoff
            or res.attempts != attempt
        ):
            return
        self.timers.cancel(res.timers.pop("create", None))
        delay = self._retry_delay(now, res)
        if delay is not None:
            res.attempts += 1
            res.backoff = True
            self.n["create_retries"] += 1
            self._log(
                "warning",
                "pool.factory.retry",
                res.key,
                res.context,
                attempt=res.attempts,
                delay_s=delay,
                error=repr(error),
            )
            self._timer(res, "retry", now + delay)
            return
        self._fail_creation(now, res, error, "pool: factory error")
        self._pump(now)

    def closed(
        self, now: float, rid: int, attempt: int, error: BaseException | None
    ) -> None:
        """The actor of `rid` (try `attempt`) ended, its resource closed if it
        had one (`error` if `close()` raised); unasked, it is a lost resource."""
        res = self.resources.get(rid)
        if res is None or res.attempts != attempt or res.backoff:
            return  # a failed try's actor ending, or a resource long gone
        if error is not None:
            self.n["close_errors"] += 1
            self._log("error", "pool.close.failed", res.key, error=repr(error))
        if res.phase in (Phase.CREATING, Phase.OPEN, Phase.RETIRING):
            self._unmap(res)
            self._fail_joiners(now, res, PoolClosedError(self.name))
            res.reason = res.reason or "lost"
            self._log("warning", "pool.resource.lost", res.key)
        self._log("debug", "pool.resource.closed", res.key, reason=res.reason)
        self._move(now, res, "closed")
        self._pump(now)

    def ping_result(
        self, now: float, rid: int, seq: int, error: BaseException | None
    ) -> None:
        """The `ping()` of sweep `seq` on `rid` returned (or raised `error`)."""
        res = self.resources.get(rid)
        if res is None or res.ping_seq != seq:
            return  # stale
        res.ping_seq = 0
        if error is not None and res.phase is Phase.OPEN:
            self._evict(now, res, "ping_failed", repr(error))
        elif res.phase is Phase.OPEN and res.mapped:
            if self._exclusive:  # the core had it for the ping: idle again
                assert res.home is not None
                res.home.append(res)
                # Its idle timer may have fired during the ping, unable to
                # claim it (see `_on_idle`): armed again unless still armed.
                self._arm_idle(res)
            self._dirty[res.key] = None
        self._sweep_done(now, rid)
        self._pump(now)

    def health_check(self, now: float) -> None:
        """Start a health check now (unless one is still running)."""
        if self.closing is not None or self._sweep is not None:
            return
        self.n["health_checks"] += 1
        targets = [r.rid for r in self.resources.values() if self._pingable(r)]
        self._log("debug", "pool.health.started", pinged=len(targets))
        if not targets:
            self._log("debug", "pool.health.finished", pinged=0, evicted=0, took_s=0.0)
            return
        self._seq += 1
        sweep = _Sweep(self._seq, now, set(targets), deque(targets), len(targets))
        sweep.timer = self.timers.add(
            now + self.options.ping_timeout, "ping", sweep.seq
        )
        self._sweep = sweep
        self._ping_some(now)

    def resume(self, now: float) -> None:
        """Go on with work left for later (the rest of a sweep's pings)."""
        if self._sweep is not None:
            self._ping_some(now)
        self._pump(now)

    # --- events: the fleet-wide capacity ------------------------------------

    def global_granted(self, now: float, rid: int, held: bool) -> None:
        """A fleet-wide slot for `rid` (`held=False`: granted without one)."""
        res = self.resources.get(rid)
        if res is None or res.phase is not Phase.RESERVING:
            if held:
                self.effects.append(ReturnSlot(rid))  # nobody wants it any more
            return
        res.global_held = held
        self.timers.cancel(res.timers.pop("reserve", None))
        self._move(now, res, "granted")
        self._log("debug", "pool.global.granted", res.key, res.context, held=held)
        self._start(now, res)

    def global_unavailable(self, now: float, rid: int, error: BaseException) -> None:
        """The capacity engine cannot be reached: fail `rid`'s creation closed."""
        res = self.resources.get(rid)
        if res is None or res.phase is not Phase.RESERVING:
            return
        self._log("warning", "pool.global.unavailable", res.key, error=repr(error))
        for caller in self._take_joiners(res):
            timeout = AcquireTimeout(caller.key, caller.timeout)
            timeout.__cause__ = error
            self._answer_error(now, caller, timeout)
        self._unmap(res)
        self._move(now, res, "cancelled")
        self._pump(now)

    def global_lost(self, now: float, rid: int) -> None:
        """`rid`'s fleet-wide lease was lost: evict it (retire, if held)."""
        res = self.resources.get(rid)
        if res is None or not res.global_held:
            return
        res.global_held = False
        res.slot_lost = True
        if res.phase in (Phase.CREATING, Phase.OPEN):
            self.n["global_lost"] += 1
            self._log("warning", "pool.global.lost", res.key)
            if res.backoff:  # between two factory tries: the next needs a slot
                error = RuntimeError("its fleet-wide slot was lost")
                self._fail_creation(now, res, error, "pool: factory error")
            else:
                self._retire(now, res, "global_lease_lost")
        self._pump(now)

    # --- time -------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When `advance` must next be called, or `None`."""
        return self.timers.next_deadline()

    def advance(self, now: float) -> None:
        """Fire every timer due at `now`."""
        timers = self.timers
        while (due := timers.pop_due(now)) is not None:
            _handle, kind, ident = due
            self._timer_handlers[kind](now, ident)
        self._pump(now)

    def _on_deadline(self, now: float, cid: int) -> None:
        caller = self.callers.get(cid)
        if caller is None or not self._take_waiter(caller):
            return  # answered, or served by a checkin (a GIVEN note is coming)
        del self.callers[cid]
        caller.timer = None
        self.n["timeouts"] += 1
        waited = self._drop(now, caller)
        self._log(
            "warning",
            "pool.acquire.timeout",
            caller.key,
            caller.context,
            timeout=caller.timeout,
            wait_s=waited,
        )
        self.effects.append(Fail(cid, AcquireTimeout(caller.key, caller.timeout)))

    def _on_create_timeout(self, now: float, rid: int) -> None:
        res = self._timer_fired(rid, "create")
        if res is None or res.phase is not Phase.CREATING:
            return
        limit: dict[str, Any]
        if self.closing is not None:
            limit = {"close_timeout": self.options.close_timeout}
        else:
            limit = {"create_timeout": self.options.create_timeout}
        (seconds,) = limit.values()
        error = TimeoutError(f"factory did not return within {seconds} s")
        self._fail_creation(now, res, error, "pool: factory timed out", hung=limit)

    def _on_reserve_wait(self, now: float, rid: int) -> None:
        res = self._timer_fired(rid, "reserve")
        if res is None or res.phase is not Phase.RESERVING:
            return
        if res.standby:
            # A refresh's replacement gets no fleet slot: the old resources
            # may be what fills the fleet, and would wait for it forever.
            # They retire now; the replacement keeps its place in the fleet's
            # queue and takes the slot they give back (or an earlier one).
            res.standby = False
            olds, res.replaces = res.replaces, []
            for old in olds:
                if old.mapped:
                    self._retire(now, old, "refreshed")
        # A prewarm creates what the caps allow now; it does not queue.
        for op in [op for op in res.ops if op.kind == "prewarm"]:
            res.ops.remove(op)
            op.results[res.key] = "not_created"
            op.waiting.discard(res.rid)
            if not op.waiting:
                self._finish_op(op, op.opened)
        # `timeout=0` never waits for a slot, a fleet slot included.
        for caller in [c for c in res.joiners if c.timeout == 0]:
            self._on_deadline(now, caller.cid)
        self._withdraw_if_unwanted(now, res)

    def _on_retry(self, now: float, rid: int) -> None:
        res = self._timer_fired(rid, "retry")
        if res is None or res.phase is not Phase.CREATING:
            return
        res.backoff = False
        if self.closing is not None or not (res.mapped or res.joiners or res.ops):
            self._unmap(res)
            self._move(now, res, "failed")  # nobody wants it any more
            return
        self._start(now, res)

    def _on_close_timeout(self, now: float, rid: int) -> None:
        res = self._timer_fired(rid, "close")
        if res is None or res.phase is not Phase.CLOSING:
            return
        self._abandon(
            res, "close did not return", close_timeout=self.options.close_timeout
        )
        self._move(now, res, "timed_out")

    def _on_drain_timeout(self, now: float, rid: int) -> None:
        res = self._timer_fired(rid, "drain")
        if res is None or res.phase is not Phase.RETIRING:
            return
        self.n["drain_timeouts"] += 1
        self._log(
            "warning",
            "pool.resource.drain_timeout",
            res.key,
            holders=res.holders,
            drain_timeout=self.options.drain_timeout,
        )
        # Closed under its holders; they count until they check in (a no-op
        # now) or the resource is gone.
        self._close(now, res)

    def _on_lifetime(self, now: float, rid: int) -> None:
        res = self._timer_fired(rid, "lifetime")
        if res is None or res.phase is not Phase.OPEN or not res.mapped:
            return
        self.n["lifetime_expired"] += 1
        self._log("info", "pool.resource.expired", res.key, reason="max_lifetime")
        self._retire(now, res, "max_lifetime")

    def _on_idle(self, now: float, rid: int) -> None:
        res = self._timer_fired(rid, "idle")
        if res is None or res.phase is not Phase.OPEN or not res.mapped:
            return
        if res.holders or res.tokens:
            return  # the last checkin arms it again
        idle = self.options.max_idle_time
        assert idle is not None
        if now < res.last_used + idle:
            self._arm_idle(res)  # used meanwhile: look again later
            return
        if self._exclusive and not self._claim(res):
            return  # a caller has it: its checkin note arms the timer again
        self.n["idle_expired"] += 1
        self._log("info", "pool.resource.expired", res.key, reason="max_idle_time")
        self._retire(now, res, "max_idle_time", owned=True)

    def _on_health_timer(self, now: float, _ident: int) -> None:
        interval = self.options.health_check_interval
        assert interval is not None
        self._health = self.timers.add(now + interval, "health", 0)
        self.health_check(now)

    def _on_ping_timeout(self, now: float, seq: int) -> None:
        sweep = self._sweep
        if sweep is None or sweep.seq != seq:
            return
        for rid in list(sweep.outstanding):
            res = self.resources.get(rid)
            # Only a ping that was sent and not answered counts against it.
            if res is not None and res.ping_seq == seq:
                res.ping_seq = 0
                if res.phase is Phase.OPEN:
                    timeout = self.options.ping_timeout
                    self._evict(now, res, "ping_timeout", f"no answer in {timeout} s")
        sweep.outstanding.clear()
        sweep.unsent.clear()
        self._sweep_done(now, None)

    # --- placement ----------------------------------------------------------

    def _best_open(self, now: float, entry: KeyEntry, hold: bool) -> Resource | None:
        """The open resource of `entry` with a free holder place, fewest holders.

        Exclusive: an idle one, taken from the idle list the way callers take
        them (`pop`), so the core and the hit path never both get one.
        """
        if hold and self._exclusive:
            idle = entry.idle
            while idle:
                try:
                    res = idle.pop()
                except IndexError:  # a caller took the last one after `while`
                    return None
                if not res.retired:
                    return res
                self._own_retired(now, res)  # published before it retired
            return None
        limit = self.options.max_holders
        best = None
        for res in entry.resources:
            if res.phase is not Phase.OPEN:
                continue
            if not hold or limit is None:
                return res
            if res.holders < limit and (best is None or res.holders < best.holders):
                best = res
        return best

    def _joinable(self, entry: KeyEntry, hold: bool) -> Resource | None:
        """A creation of `entry` in flight that has a place for one more."""
        for res in entry.resources:
            if res.phase in (Phase.RESERVING, Phase.CREATING) and self._has_room(
                res, hold
            ):
                return res
        return None

    def _has_room(self, res: Resource, hold: bool) -> bool:
        limit = self.options.max_holders
        if not hold or limit is None:
            return True
        return res.holders + sum(1 for c in res.joiners if c.hold) < limit

    def _count(self, entry: KeyEntry) -> int:
        """Resources `entry` has toward `max_per_key`.

        A refresh's standby is not one more while a resource it replaces still
        serves; once those left (evicted, expired, lost) it is the key's
        resource like any other, or a second factory call would run for it.
        """
        return sum(
            1
            for r in entry.resources
            if not (r.standby and any(old.mapped for old in r.replaces))
        )

    def _hand(self, now: float, res: Resource, key: Hashable, hold: bool) -> Any:
        """What a granted request gets: a lease, or the resource itself."""
        res.last_used = now
        if not hold:
            res.handed_out = True
            return res.obj
        self._seq += 1
        res.holders += 1
        self.n["checkouts"] += 1
        lease = Lease(
            key, res.obj, pool=self.pool_id, rid=res.rid, lid=self._seq, handle=res
        )
        res.leases.add(lease)
        return lease

    def _give_back(self, now: float, lease: Lease[Any, Any], broken: bool) -> bool:
        """Check `lease` in as a `Checkin` message does; `False` if it was
        checked in already. It goes the way a checkin at the counter goes."""
        if not self.published.lost(lease, broken):
            return False
        self.notes(now, *self._drain_notes())
        return True

    def lost(self, now: float, lease: Lease[Any, Any]) -> None:
        """A lease was collected while still out: its holder dropped it (an
        interrupt, a forgotten checkin). Exclusive: its resource retires, as
        a broken checkin would (its state is unknown); shared: the holder
        place frees."""
        if lease.checked_in:
            return
        self._log("warning", "pool.lease.lost", lease.key, lease=lease.lid)
        self._give_back(now, lease, self._exclusive)

    def _drain_notes(self) -> tuple[list[tuple[Any, ...]], list[Hashable]]:
        """The notes and hits left so far (the doorbell stays as it is)."""
        return self.published.drain()

    def _back_in_service(self, res: Resource) -> None:
        """A holder place of `res` freed: publish it if idle, serve waiters."""
        if self._exclusive:
            assert res.home is not None
            res.home.append(res)
        if not res.holders:
            self._arm_idle(res)
        self._dirty[res.key] = None

    def _drained(self, now: float, res: Resource, *, owned: bool) -> None:
        """A holder of retiring `res` is gone: close it once nobody holds it."""
        if self._exclusive:
            if not (owned or self._claim(res)):
                return  # taken by a caller who will hand it back (BACK)
        elif res.holders > 0 or res.tokens:
            return
        self._log("info", "pool.resource.drained", res.key, reason=res.reason)
        self._close(now, res)

    def _claim(self, res: Resource) -> bool:
        """Take idle exclusive `res` out of its idle list; `False` if a caller
        has it (the caller's note tells the core when it is back)."""
        try:
            assert res.home is not None
            res.home.remove(res)
        except ValueError:
            return False
        return True

    def _hide(self, res: Resource) -> bool:
        """Shared: take `res` out of `view` before reclaiming it; `False` (and
        published again) if a plain `acquire()` got it meanwhile.

        A hit's note may not be read yet: a caller's first hit on a resource
        marks `handed_out`, then reads `view` again (see `_fastpath.hit`); the
        core sets `retired`, takes it out of `view`, then reads `handed_out`.
        One of them sees the other: the caller asks instead, or the core keeps
        it. A later hit that finds `handed_out` set re-checks `retired`: the
        caller that set it may have backed off after the core looked.
        """
        res.retired = True
        self.published.view.pop(res.key, None)
        if res.handed_out:
            res.retired = False  # kept: never out of service
            self._publish_view(self.keys[res.key])
            return False
        return True

    def _own_retired(self, now: float, res: Resource) -> None:
        """The core got retired `res` from an idle list: nobody else can now."""
        if res.phase is Phase.RETIRING:
            self._drained(now, res, owned=True)

    def notes(
        self,
        now: float,
        notes: Iterable[tuple[Any, ...]],
        hits: Collection[Hashable] = (),
    ) -> None:
        """What callers did on the hit path (or at checkin) since the last notes.

        `(HIT, key, context)`: an `acquire()` got `key`'s open resource.
        `(OUT, res, context, lease)`: a checkout took `res` (exclusive: from
        its idle list; shared: with a token in `res.tokens`).
        `(IN, res, lease)`: a lease of `res` was checked in (exclusive: `res`
        is back in its idle list; shared: its token is gone).
        `(HANDOVER, res, lease)`: an exclusive lease was checked in, and `res`
        left to the core (callers wait for it, or it retired).
        `(BROKEN, res, lease)`: a lease was checked in as broken (exclusive:
        `res` left to the core).
        `(BACK, res)`: a checkout found `res` retired and left it unused.
        `(GIVEN, res, lease, given, cid)`: `lease` was checked in, and `res`
        handed on to queued caller `cid` as `given` (rule 9).
        `(ASK, key, cid, since, timeout, context, queue)`: a checkout of `key`
        queued itself in `queue` as `cid` (rule 10).
        `hits`: keys of `acquire()` hits noted without a context.
        """
        n = self.n
        n["acquires"] += len(hits)
        n["hits"] += len(hits)
        hit_keys = dict.fromkeys(hits)  # a key's last_used is set once
        for note in notes:
            kind = note[0]
            if kind == HIT:
                key = note[1]
                n["acquires"] += 1
                n["hits"] += 1
                hit_keys[key] = None
                if self.debug:
                    self._log("debug", "pool.acquire.hit", key, note[2])
                continue
            if kind == ASK:
                self._asked(now, note)
                continue
            res = note[1]
            if kind == OUT:
                n["acquires"] += 1
                n["hits"] += 1
                n["checkouts"] += 1
                res.leases.add(note[3])
                res.holders += 1
                res.last_used = now
                if self.debug:
                    self._log("debug", "pool.acquire.hit", res.key, note[2])
                if res.phase is Phase.RETIRING and not self._exclusive:
                    self._drained(now, res, owned=False)  # a checkin came first
            elif kind == BACK:
                if res.phase is Phase.RETIRING:
                    self._drained(now, res, owned=self._exclusive)
            elif kind == GIVEN:
                self._given(now, res, *note[2:])
            else:  # a checkin: IN, HANDOVER or BROKEN
                if note[2] not in res.leases:
                    continue  # voided by a drain timeout: it counts no more
                res.leases.discard(note[2])
                res.holders -= 1
                res.last_used = now
                self._seq += 1
                res.used_seq = self._seq
                # Exclusive: the core has `res` unless it went back to its list.
                owned = self._exclusive and kind != IN
                if res.phase not in (Phase.OPEN, Phase.RETIRING):
                    if kind == IN:
                        self._claim(res)  # closed under it by drain_timeout
                elif kind == BROKEN:
                    n["broken"] += 1
                    self._log("warning", "pool.lease.broken", res.key)
                    if res.phase is Phase.OPEN:
                        self._retire(now, res, "broken", owned=owned)
                    else:
                        self._drained(now, res, owned=owned)
                elif res.phase is Phase.RETIRING:
                    self._drained(now, res, owned=owned)
                elif owned:
                    self._back_in_service(res)
                else:
                    if not res.holders:
                        self._arm_idle(res)
                    self._dirty[res.key] = None
        for key in hit_keys:
            entry = self.keys.get(key)
            for res in entry.resources if entry is not None else ():
                if res.phase is Phase.OPEN:
                    res.last_used = now
                    res.handed_out = True
                    break
        self._pump(now)

    def _given(
        self, now: float, res: Resource, lease: Lease[Any, Any], given: Any, cid: int
    ) -> None:
        """A checkin handed `res` straight to queued caller `cid` (rule 9):
        one holder for another, and the caller answered."""
        self.n["checkouts"] += 1
        res.last_used = now
        if lease in res.leases:  # else voided by a drain timeout: so is `given`
            res.leases.discard(lease)
            res.leases.add(given)
        caller = self.callers.pop(cid, None)
        if caller is None:  # it queued itself, and its ASK note comes next
            self._early.add(cid)
            return
        caller.handoff = False  # the checkin took its number already
        self._served(now, caller)

    def _asked(self, now: float, note: tuple[Any, ...]) -> None:
        """A checkout that queued itself on the hit path (rule 10): the core
        takes its number back and reads it as a `Checkout` asked at `since`;
        if a checkin took the number first, its caller is served there (a
        `GIVEN` note follows) or gave up (its withdrawal follows)."""
        _, key, cid, since, timeout, context, queue = note
        taken = cid not in queue  # (most are, under load: no exception then)
        if not taken:
            try:
                queue.remove(cid)
            except ValueError:  # a checkin took it just now
                taken = True
        if taken:
            self.n["acquires"] += 1
            self.n["waits"] += 1
            caller = Caller(cid, key, True, since, _INF, timeout, context, queued=True)
            caller.taken = True
            if cid in self._early:  # its GIVEN note came first: it is served
                self._early.discard(cid)
                self._waited(now, caller)
            else:
                self.callers[cid] = caller
            return
        # Notes read before it may have freed room for callers queued before
        # it: they are served first, as between two messages.
        self._pump(now)
        self.acquire(now, cid, key, timeout, context, hold=True, since=since)

    def _take_waiter(self, caller: Caller) -> bool:
        """Take queued `caller` out of the hit path's reach before the core
        serves, joins or fails it (rule 9); `False` if a checkin took it
        first: it leaves the queue, and its `GIVEN` note (or its withdrawal)
        is on its way."""
        if caller.taken:
            return False
        if not caller.handoff:
            return True
        caller.handoff = False
        try:
            self.keys[caller.key].queue.remove(caller.cid)
        except ValueError:
            caller.taken = True
            self._unqueue(caller)
            return False
        return True

    def _join(self, caller: Caller, res: Resource) -> None:
        caller.joined = res
        res.joiners.append(caller)

    def _enqueue(self, entry: KeyEntry, caller: Caller, *, slot: bool) -> None:
        caller.waiting = True
        self.queued += 1
        entry.waiters[caller.cid] = caller
        if self._exclusive and caller.hold:
            caller.handoff = True
            entry.queue.append(caller.cid)
        self.published.waiting.add(entry.key)
        if slot:
            caller.in_slots = True
            self.slots[caller] = caller

    def _unqueue(self, caller: Caller) -> None:
        if caller.in_slots:
            caller.in_slots = False
            del self.slots[caller]
        if caller.handoff:  # it gave up: a checkin that took it finds it so
            caller.handoff = False
            with contextlib.suppress(ValueError):
                self.keys[caller.key].queue.remove(caller.cid)
        if caller.waiting:
            caller.waiting = False
            self.queued -= 1
            entry = self.keys[caller.key]
            del entry.waiters[caller.cid]
            if not entry.waiters:
                self.published.waiting.discard(entry.key)
            self._forget_if_empty(entry)

    def _add_caller(self, caller: Caller) -> None:
        self.callers[caller.cid] = caller
        caller.timer = self.timers.add(caller.deadline, "deadline", caller.cid)

    def _drop(self, now: float, caller: Caller) -> float:
        """Take a caller that gave up or failed out of every queue; its wait."""
        self.timers.cancel(caller.timer)
        self._unqueue(caller)
        res = caller.joined
        if res is not None:
            res.joiners.remove(caller)
            caller.joined = None
            self._withdraw_if_unwanted(now, res)
        return self._waited(now, caller)

    def _withdraw_if_unwanted(self, now: float, res: Resource) -> None:
        """Withdraw a reservation nobody waits for any more."""
        if res.phase is not Phase.RESERVING or res.joiners:
            return
        entry = self.keys.get(res.key) if res.mapped else None
        if entry is not None and entry.waiters and self.closing is None:
            # Callers of the key wait behind it (no holder place was left for
            # them): the reservation keeps its place in the fleet's queue for
            # them, and the pump joins them to it.
            self._dirty[res.key] = None
        elif not res.mapped or not (res.ops or res.standby):
            # Out of the key map, a prewarm or refresh waiting on it would
            # only see it closed.
            self.effects.append(CancelSlot(res.rid))
            self._unmap(res)
            self._move(now, res, "cancelled")

    def _waited(self, now: float, caller: Caller) -> float:
        waited = now - caller.start
        if caller.queued:
            self.wait_duration += waited
            self.max_wait = max(self.max_wait, waited)
        return waited

    def _answer(self, now: float, caller: Caller, value: Any) -> None:
        del self.callers[caller.cid]
        self._served(now, caller)
        self.effects.append(Reply(caller.cid, value, caller))

    def _served(self, now: float, caller: Caller) -> None:
        """`caller` has what it asked for: out of its queues, timer cancelled,
        its wait counted (by the core's reply, or a checkin's hand-on)."""
        self.timers.cancel(caller.timer)
        self._unqueue(caller)
        caller.joined = None
        caller.answered = now
        waited = self._waited(now, caller)
        if caller.queued and self.debug:  # a hot path: no keywords built for nothing
            self._log(
                "debug",
                "pool.acquire.granted",
                caller.key,
                caller.context,
                wait_s=waited,
            )

    def _answer_error(self, now: float, caller: Caller, error: BaseException) -> None:
        del self.callers[caller.cid]
        self.timers.cancel(caller.timer)
        self._unqueue(caller)
        caller.joined = None
        self._waited(now, caller)
        self.effects.append(Fail(caller.cid, error))

    def _take_joiners(self, res: Resource) -> list[Caller]:
        joiners, res.joiners = res.joiners, []
        return joiners

    def _fail_joiners(self, now: float, res: Resource, error: BaseException) -> None:
        for caller in self._take_joiners(res):
            self._answer_error(now, caller, error)

    # --- the pump: after every event --------------------------------------

    def _pump(self, now: float) -> None:
        """Serve callers whose key changed, hand out free slots, reclaim."""
        while self._dirty:
            key = next(iter(self._dirty))
            del self._dirty[key]
            entry = self.keys.get(key)
            if entry is not None and entry.waiters:
                self._serve_key(now, entry)
        self._wake(now)
        self.published.starved = bool(self.slots)
        if self.slots and self.used >= self.cap and self.options.reclaim_idle:
            self._reclaim(now)
        if self.closing is not None and not self.used and not self.stopped:
            self.stopped = True
            # Callers left were taken by checkins (rule 9): served, or gone;
            # their notes and withdrawals are not read any more.
            for caller in self.callers.values():
                self.timers.cancel(caller.timer)
            self.callers.clear()
            self._log("info", "pool.closed", reason=self.closing)
            self.effects.append(Stopped(self.closing))
            for cid in self._close_cids:
                self.effects.append(Reply(cid, None))
            self._close_cids.clear()

    def _serve_key(self, now: float, entry: KeyEntry) -> None:
        """Grant `entry`'s waiters, FIFO, what its resources have room for."""
        serving = True
        room = self._count(entry) < self.options.max_per_key
        spare = None  # taken from the idle list for a caller a checkin served
        for caller in list(entry.waiters.values()):
            if serving:
                res = spare or self._best_open(now, entry, caller.hold)
                if res is not None:
                    spare = None
                    if not self._take_waiter(caller):
                        spare = res  # for the next one
                        continue
                    self._answer(
                        now, caller, self._hand(now, res, caller.key, caller.hold)
                    )
                    continue
                res = self._joinable(entry, caller.hold)
                if res is not None:
                    if self._take_waiter(caller):
                        self._unqueue(caller)
                        self._join(caller, res)
                    continue
                serving = False  # FIFO per key: nobody jumps this caller
            if room and not caller.in_slots:
                caller.in_slots = True
                self.slots[caller] = caller
            elif not room and caller.in_slots:
                caller.in_slots = False
                del self.slots[caller]
        if spare is not None:  # nobody left to take it
            self._back_in_service(spare)

    def _wake(self, now: float) -> None:
        """Hand free slots to the slot queue, oldest first."""
        slots = self.slots
        while slots and self.used < self.cap and self.closing is None:
            item: Caller | _Refill = next(iter(slots.values()))
            del slots[item]
            entry = self.keys.get(item.key)
            full = entry is not None and self._count(entry) >= self.options.max_per_key
            if isinstance(item, _Refill):
                if full:  # opened anew meanwhile: nothing to refill
                    self._finish_op(item.op, True)
                    continue
                res = self._create(now, item.key, {})
                self._watch(item.op, [res])
                continue
            item.in_slots = False
            if not full:
                self._create(now, item.key, item.context)
                entry = self.keys[item.key]
                if item.waiting and self._count(entry) < self.options.max_per_key:
                    # An older waiter of its key joined the creation its slot
                    # started (FIFO per key): it keeps its place, first in line.
                    item.in_slots = True
                    slots = self.slots = {item: item, **slots}

    def _reclaim(self, now: float) -> None:
        """Close least recently used idle resources for callers waiting for a slot."""
        wanted = self._slots_wanted()
        taken: set[int] = set()  # exclusive ones a caller has (notes pending)
        while self._reclaiming < wanted:
            victim = None
            for res in self.resources.values():
                if (
                    res.phase is Phase.OPEN
                    and res.mapped
                    and not res.holders
                    and not res.tokens
                    and not res.handed_out
                    and not res.ping_seq
                    and res.rid not in taken
                    and (
                        victim is None
                        or (res.last_used, res.used_seq)
                        < (victim.last_used, victim.used_seq)
                    )
                ):
                    victim = res
            if victim is None:
                return
            if self._exclusive and not self._claim(victim):
                taken.add(victim.rid)
                continue
            if self._shared and not self._hide(victim):
                taken.add(victim.rid)
                continue
            self.n["reclaimed"] += 1
            self._reclaiming += 1
            self._log("info", "pool.resource.reclaimed", victim.key, waiting=wanted)
            self._retire(now, victim, "reclaimed", owned=True)

    def _slots_wanted(self) -> int:
        """How many creations the callers waiting for a slot need.

        Callers of one key share a creation as far as `max_holders` allows
        (any number when shared), and a key gets at most `max_per_key`: two
        callers of one new key must not reclaim two idle resources for one
        creation.
        """
        callers: dict[Hashable, int] = {}
        for item in self.slots:
            if isinstance(item, Caller):
                callers[item.key] = callers.get(item.key, 0) + 1
        limit = self.options.max_holders
        wanted = 0
        for key, n in callers.items():
            entry = self.keys.get(key)
            room = self.options.max_per_key - (self._count(entry) if entry else 0)
            wanted += max(0, min(room, 1 if limit is None else -(-n // limit)))
        return wanted

    # --- a resource's life ----------------------------------------------------

    def _entry(self, key: Hashable) -> KeyEntry:
        entry = self.keys.get(key)
        if entry is None:
            entry = self.keys[key] = KeyEntry(key)
            if self._exclusive:
                self.published.idle[key] = entry.idle
                self.published.queue[key] = entry.queue
        return entry

    def _forget_if_empty(self, entry: KeyEntry) -> None:
        if not entry.resources and not entry.waiters:
            self.keys.pop(entry.key, None)
            self.published.idle.pop(entry.key, None)
            self.published.queue.pop(entry.key, None)

    def _create(self, now: float, key: Hashable, context: dict[str, Any]) -> Resource:
        """A new resource for `key`: it takes a slot at once."""
        self._seq += 1
        phase = Phase.RESERVING if self._global else Phase.CREATING
        res = Resource(self._seq, key, phase, context, now, last_used=now)
        self.resources[res.rid] = res
        self.used += 1
        entry = self._entry(key)
        entry.resources.append(res)
        res.home = entry.idle
        # Callers already waiting for this key join it, FIFO, as far as it has
        # places: the factory runs once however many ask (single flight).
        for caller in list(entry.waiters.values()):
            if not self._has_room(res, caller.hold):
                break
            if self._take_waiter(caller):
                self._unqueue(caller)
                self._join(caller, res)
        if self._global:
            self._log("debug", "pool.global.waiting", key, context)
            self._timer(res, "reserve", now + _FLEET_WAIT)
            self.effects.append(ReserveSlot(res.rid))
        else:
            self._start(now, res)
        return res

    def _start(self, now: float, res: Resource) -> None:
        timeout = self.options.create_timeout
        if self.closing is not None:
            timeout = self.options.close_timeout
        if timeout is not None:
            self._timer(res, "create", now + timeout)
        self._log("debug", "pool.resource.creating", res.key, res.context)
        self.effects.append(Start(res.rid, res.key, res.attempts))

    def _retry_delay(self, now: float, res: Resource) -> float | None:
        """The jittered backoff before the next try of `res`'s factory, or
        `None`: no retry (none left, nobody wants it, or the next try would
        come after the deadline of every caller waiting for it)."""
        if res.attempts >= self.options.create_retries or self.closing is not None:
            return None
        if res.slot_lost:  # a factory never runs without its fleet-wide slot
            return None
        if not (res.mapped or res.joiners or res.ops):
            return None
        delay = self.options.create_backoff * 2**res.attempts * (0.5 + self._rand())
        latest = max((c.deadline for c in res.joiners), default=_INF)
        # The jittered delay, not its minimum: a retry that lands after the
        # deadline would turn the factory's error into an AcquireTimeout.
        return delay if now + delay < latest else None

    def _fail_creation(
        self,
        now: float,
        res: Resource,
        error: BaseException,
        message: str,
        *,
        hung: dict[str, Any] | None = None,
    ) -> None:
        """The creation of `res` failed for good: its callers get `FactoryError`."""
        self.n["factory_errors"] += 1
        self._log(
            "warning", "pool.factory.failed", res.key, res.context, error=repr(error)
        )
        for caller in self._take_joiners(res):
            failure = FactoryError(caller.key, message)
            failure.__cause__ = error
            self._answer_error(now, caller, failure)
        self._unmap(res)
        if hung is not None:
            # Its actor is stuck in the factory: stop it (it closes what the
            # factory may still return) and write it off.
            self.effects.append(Close(res.rid))
            self._abandon(res, "factory did not return", **hung)
            self._move(now, res, "timed_out")
        else:
            self._move(now, res, "failed")

    def _abandon(self, res: Resource, reason: str, **fields: Any) -> None:
        self.n["abandoned"] += 1
        self._log(
            "error",
            "pool.resource.abandoned",
            res.key,
            reason=reason,
            rid=res.rid,
            **fields,
        )
        self.effects.append(Abandon(res.rid))

    def _unmap(self, res: Resource) -> None:
        """Take `res` out of the key map: new requests no longer get it."""
        res.retired = True  # before any claim: callers re-check it (see _fastpath)
        if not res.mapped:
            return
        res.mapped = False
        entry = self.keys[res.key]
        entry.resources.remove(res)
        self._dirty[res.key] = None
        self._publish_view(entry)
        self._forget_if_empty(entry)

    def _publish_view(self, entry: KeyEntry) -> None:
        """Shared mode: show `acquire()` callers the key's open resource."""
        if not self._shared:
            return
        for res in entry.resources:
            if res.phase is Phase.OPEN:
                self.published.view[entry.key] = res
                return
        self.published.view.pop(entry.key, None)

    def _retire(
        self, now: float, res: Resource, reason: str, *, owned: bool = False
    ) -> None:
        """Take `res` out of service: the one way a resource leaves it.

        Out of the key map at once; a creation in flight still serves the
        callers that joined it and retires when it opens; an open resource
        waits for its holders (`RETIRING`) or closes now. `owned`: the core
        has exclusive `res` in hand (not in its idle list, not held).
        """
        self._unmap(res)
        if not res.reason:
            res.reason = reason
        if res.phase is Phase.RESERVING and not res.joiners:
            self.effects.append(CancelSlot(res.rid))
            self._move(now, res, "cancelled")
        elif res.phase is Phase.CREATING and res.backoff and not res.joiners:
            self._move(now, res, "failed")
        elif res.phase is Phase.OPEN:
            for kind in ("lifetime", "idle"):
                self.timers.cancel(res.timers.pop(kind, None))
            if self._exclusive:
                # Free only if the core has it: in hand, being pinged (the
                # actor closes after the ping), or taken from its idle list.
                free = owned or bool(res.ping_seq) or self._claim(res)
            else:  # `retired` is set (by _unmap) before `tokens` is read
                free = not res.holders and not res.tokens
            if free:
                self._close(now, res)
                return
            self._move(now, res, "drain")
            self._timer(res, "drain", now + self.options.drain_timeout)
            self._log(
                "info",
                "pool.resource.retired",
                res.key,
                reason=res.reason,
                holders=res.holders,
            )
            self._notify(res, "retired")

    def _close(self, now: float, res: Resource) -> None:
        self.timers.cancel(res.timers.pop("drain", None))
        self._move(now, res, "close")
        self._timer(res, "close", now + self.options.close_timeout)
        self.effects.append(Close(res.rid))

    def _evict(self, now: float, res: Resource, reason: str, error: str) -> None:
        """Retire `res` after a failed or unanswered ping (exclusive: the core
        had it in hand for the ping)."""
        self.n["health_evictions"] += 1
        if self._sweep is not None:
            self._sweep.evicted += 1
        self._log("warning", "pool.health.evicted", res.key, reason=reason, error=error)
        self._retire(now, res, reason, owned=self._exclusive)

    def _move(self, now: float, res: Resource, event: str) -> None:
        """Move `res` along the lifecycle table; account for what it frees."""
        before = res.phase
        after = res.phase = advance(before, event)
        if before in COUNTED and after not in COUNTED:
            self.used -= 1
            if res.reason == "reclaimed":
                self._reclaiming -= 1
        if after in _ENDED:
            if self._sweep is not None:
                self._sweep_done(now, res.rid)
            self._notify(res, "ended")
        if after is Phase.GONE:
            assert not res.mapped, "a resource leaves the key map before it ends"
            # The one exit: nothing of the pool refers to it any more.
            del self.resources[res.rid]
            for kind in list(res.timers):
                self.timers.cancel(res.timers.pop(kind))
            res.holders = 0
            res.leases.clear()
            res.replaces = []
            if res.global_held:
                res.global_held = False
                self.effects.append(ReturnSlot(res.rid))

    def _timer(self, res: Resource, kind: str, when: float) -> None:
        handle = self.timers.add(when, kind, res.rid)
        if handle is not None:
            res.timers[kind] = handle

    def _timer_fired(self, rid: int, kind: str) -> Resource | None:
        res = self.resources.get(rid)
        if res is not None:
            res.timers.pop(kind, None)
        return res

    def _arm_idle(self, res: Resource) -> None:
        idle = self.options.max_idle_time
        if idle is not None and "idle" not in res.timers:
            self._timer(res, "idle", res.last_used + idle)

    # --- pending operations -------------------------------------------------

    def _watch(self, op: _Op, resources: list[Resource]) -> None:
        """Make `op` wait for `resources` to reach its goal; answer it if none."""
        for res in resources:
            if self._reached(op, res):
                continue
            op.waiting.add(res.rid)
            res.ops.append(op)
        if not op.waiting:
            self._finish_op(op, op.opened)

    def _reached(self, op: _Op, res: Resource) -> bool:
        if op.kind in ("release", "release_all"):
            op.opened |= res.opened
            return res.phase in (Phase.RETIRING, *_ENDED)
        return False  # prewarm and refresh wait for a creation to end

    def _notify(self, res: Resource, what: str) -> None:
        """`res` opened, retired or ended: move the operations waiting on it."""
        for op in list(res.ops):
            done = False
            if op.kind in ("release", "release_all"):
                op.opened |= res.opened
                done = what in ("retired", "ended")
            elif what in ("opened", "ended"):
                done = True
                if op.kind == "prewarm":
                    ok = what == "opened" or res.opened
                    op.results[res.key] = "created" if ok else "failed"
                    if ok:
                        self.n["prewarmed"] += 1
                else:  # refresh: in place only if still in the key map
                    op.opened = what == "opened" and res.mapped
            if done:
                res.ops.remove(op)
                op.waiting.discard(res.rid)
                if not op.waiting:
                    self._finish_op(op, op.opened)

    def _finish_op(self, op: _Op, value: bool) -> None:
        if op.kind == "prewarm":
            self._log("info", "pool.prewarm.finished", results=_printable(op.results))
            self.effects.append(Reply(op.cid, dict(op.results)))
        elif op.kind == "release_all":
            self.effects.append(Reply(op.cid, None))
        else:
            self.effects.append(Reply(op.cid, value))

    def _cancel_refills(self, key: Hashable | None) -> bool:
        """Drop refreshes waiting for a slot (of `key`, or all); any dropped?"""
        refills = [
            i
            for i in self.slots
            if isinstance(i, _Refill) and (key is None or i.key == key)
        ]
        for refill in refills:
            del self.slots[refill]
            self._finish_op(refill.op, False)
        return bool(refills)

    # --- health -------------------------------------------------------------

    def _pingable(self, res: Resource) -> bool:
        # An exclusive resource is pinged only while nobody holds it: the ping
        # would run beside the holder's own use.
        return (
            res.phase is Phase.OPEN
            and res.mapped
            and not res.ping_seq
            and not (self._exclusive and res.holders)
        )

    def _ping_some(self, now: float) -> None:
        """Tell the next chunk of the sweep's pings; the rest after a `Resume`.

        A sweep of many resources goes out in chunks, each after the messages
        that queued meanwhile: a caller waits for one chunk, not for them all.
        """
        sweep = self._sweep
        assert sweep is not None
        for _ in range(min(_PING_CHUNK, len(sweep.unsent))):
            rid = sweep.unsent.popleft()
            res = self.resources.get(rid)
            # Exclusive: pinged only if the core can take it from its idle
            # list, so no holder uses it during the ping.
            if (
                res is not None
                and self._pingable(res)
                and (not self._exclusive or self._claim(res))
            ):
                res.ping_seq = sweep.seq
                self.effects.append(Ping(rid, sweep.seq))
            else:
                sweep.outstanding.discard(rid)
        if sweep.unsent:
            self.effects.append(Resume())
        else:
            self._sweep_done(now, None)

    def _sweep_done(self, now: float | None, rid: int | None) -> None:
        sweep = self._sweep
        if sweep is None:
            return
        if rid is not None:
            sweep.outstanding.discard(rid)
        if sweep.outstanding or sweep.unsent:
            return
        self._sweep = None
        self.timers.cancel(sweep.timer)
        # Routine checks stay at debug; one that evicted something is news.
        level = "info" if sweep.evicted else "debug"
        fields: dict[str, Any] = {"pinged": sweep.pinged, "evicted": sweep.evicted}
        if now is not None:
            fields["took_s"] = now - sweep.started
        self._log(level, "pool.health.finished", **fields)

    # --- events out -----------------------------------------------------------

    def _log(
        self,
        level: str,
        event: str,
        key: Any = NO_KEY,
        context: dict[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        if level == "debug" and not self.debug:
            return
        self.effects.append(Log(level, event, key, context, fields))


def _acquire_needs_lease(options: PoolOptions) -> TypeError:
    return TypeError(
        "acquire() hands out a shared resource and needs max_holders=None and "
        f"max_per_key=1 (this pool has max_holders={options.max_holders}, "
        f"max_per_key={options.max_per_key}); use lease() or checkout()"
    )


def _printable(results: dict[Hashable, str]) -> dict[str, str]:
    """Per-key results with string keys, so any renderer (JSON too) can log them."""
    return {key if isinstance(key, str) else repr(key): v for key, v in results.items()}
