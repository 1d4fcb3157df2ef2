"""The inventory: every resource's record, the key map, and each resource's
way through the lifecycle table to its one exit.

Part of the pure core (see [_core][pooler_actors._core]). It owns
`resources` (every resource not `GONE`, by `rid`), `keys` (each key's
resources in service, its FIFO of waiting callers and, exclusive, its idle
list and queue of numbers), and `used`, what the cap counts. A resource
leaves service (the key map) only through `unmap`: by
[retire][pooler_actors._inventory.Inventory.retire] while it lives on (it
closes now, or drains), which is how a refresh's replaced resources leave
at its standby's [swap][pooler_actors._inventory.Inventory.swap]; or, when
its life ends at once (a creation failed or withdrawn, its actor stopped
unasked), right before `move` takes it to `GONE` (`ABANDONED`: a factory
that hangs). It leaves the pool only through `move(..., "closed" |
"failed" | "cancelled")` to `GONE`, which cancels its timers, gives its
fleet slot back and forgets it. The per-resource timers that end a life
are here too: `lifetime`, `idle`, `drain` and `close`. Whether a resource
is free is one test, `held` (leases, tokens, and the counter's blocks);
what blocks on the counter's block path left behind is read here too
(`blocks_left`, `spoilt`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pooler_actors._effects import Abandon, CancelSlot, Close, Reply, ReturnSlot
from pooler_actors._lifecycle import COUNTED, Phase, advance
from pooler_actors._part import Part
from pooler_actors.errors import PoolClosedError
from pooler_actors.stats import Stats

if TYPE_CHECKING:
    from pooler_actors._core import PoolCore
    from pooler_actors._ops import Op
    from pooler_actors._waiters import Caller

__all__ = ["ENDED", "Inventory", "KeyEntry", "Resource", "held"]

#: The phases a resource has left the pool's service for good in.
ENDED = (Phase.GONE, Phase.ABANDONED)


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
    #: A refresh's replacement (a standby, in creation until it is swapped
    #: in): the resources it replaces. Empty for any other resource, and
    #: once the refresh is over (swapped in, given up, or it left the map).
    replaces: list[Resource] = field(default_factory=list)
    holders: int = 0
    retired: bool = False  # out of service for good (callers re-check it)
    left: bool = False  # the pool closed with it held: closed at its checkin
    left_closed: bool = False  # ... and its last holder checked in: closing
    #: Shared: ids of leases taken at the counter whose notes are not read
    #: yet (ids, not leases: a dropped lease must be collectable).
    tokens: list[int] = field(default_factory=list)
    #: Shared: ids of the blocks inside it now (`with pool.lease(key)` on the
    #: counter's block path, `_counter_blocks`): the counter's state, as
    #: `tokens` is; cleared at its end. A dict (values unused): an id goes in
    #: and out with no call under the lock (see `Counter.hit`).
    blocks: dict[int, None] = field(default_factory=dict)
    #: The ids of its leases out, as known, with when each was checked out
    #: (ids, not leases: a lease nobody holds any more must be collectable,
    #: to be found lost).
    leases: dict[int, float] = field(default_factory=dict)
    home: list[Resource] | None = None  # exclusive: its key's idle list
    joiners: list[Caller] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    last_used: float = 0.0
    used_seq: int = 0  # orders uses noted at one `now` (least recently used)
    handed_out: bool = False  # a plain acquire() got it: never reclaimed
    reason: str = ""  # why it was retired
    ping_seq: int = 0  # the sweep whose ping is outstanding, 0 if none
    attempts: int = 0  # factory retries so far
    global_held: bool = False
    slot_lost: bool = False  # its fleet-wide slot was lost: no factory try again
    timers: dict[str, int] = field(default_factory=dict)


def held(res: Resource) -> bool:
    """Whether `res` has a holder: a lease the core counts, one taken at the
    counter and not noted yet (`tokens`), or a block inside it (`blocks`).
    The one test of a free resource, wherever the core decides one."""
    return bool(res.holders or res.tokens or res.blocks)


@dataclass(eq=False, slots=True)
class KeyEntry:
    """A key's resources in service (creation order) and its waiting callers."""

    key: Hashable
    resources: list[Resource] = field(default_factory=list)
    waiters: dict[int, Caller] = field(default_factory=dict)  # FIFO by cid
    idle: list[Resource] = field(default_factory=list)  # exclusive: free to take
    queue: deque[int] = field(default_factory=deque)  # exclusive: `Published.queue`


class Inventory(Part):
    """The resources and the key map; see the module docstring."""

    def __init__(self, core: PoolCore) -> None:
        super().__init__(core)
        self.keys: dict[Hashable, KeyEntry] = {}
        self.resources: dict[int, Resource] = {}  # every resource not GONE
        self.used = 0  # resources in COUNTED phases: what the cap counts

    def handlers(self) -> dict[str, Callable[[float, int], None]]:
        """The kinds of core timer this part handles, and how."""
        return {
            "close": self.on_close_timeout,
            "drain": self.on_drain_timeout,
            "lifetime": self.on_lifetime,
            "idle": self.on_idle,
        }

    def entry(self, key: Hashable) -> KeyEntry:
        entry = self.keys.get(key)
        if entry is None:
            entry = self.keys[key] = KeyEntry(key)
            if self.exclusive:
                self.core.published.known(key, entry.idle, entry.queue)
        return entry

    def forget_if_empty(self, entry: KeyEntry) -> None:
        if not entry.resources and not entry.waiters:
            self.keys.pop(entry.key, None)
            self.core.published.unknown(entry.key)

    def unmap(self, res: Resource) -> None:
        """Take `res` out of the key map (out of service, the one way):
        new requests no longer get it, and if it is a refresh's standby,
        that refresh is given up (it replaces nothing)."""
        res.retired = True  # callers take it no more (see _counter)
        if not res.mapped:
            return
        res.mapped = False
        res.replaces = []
        entry = self.keys[res.key]
        entry.resources.remove(res)
        self.core.changed(res.key)
        self.publish_view(entry)
        self.forget_if_empty(entry)

    def publish_view(self, entry: KeyEntry) -> None:
        """Shared mode: show `acquire()` callers the key's open resource."""
        if not self.shared:
            return
        for res in entry.resources:
            if res.phase is Phase.OPEN:
                self.core.published.show(entry.key, res)
                return
        self.core.published.show(entry.key, None)

    def retire(
        self, now: float, res: Resource, reason: str, *, owned: bool = False
    ) -> None:
        """Take `res` out of service: the one way a resource that lives on
        leaves it.

        Out of the key map at once; a creation in flight still serves the
        callers that joined it and retires when it opens; an open resource
        waits for its holders (`RETIRING`) or closes now. `owned`: the core
        has exclusive `res` in hand (not in its idle list, not held).
        """
        self.unmap(res)
        if not res.reason:
            res.reason = reason
        if res.phase is Phase.RESERVING and not res.joiners:
            self.effects.append(CancelSlot(res.rid))
            self.move(now, res, "cancelled")
        elif res.phase is Phase.BACKOFF and not res.joiners:
            self.move(now, res, "failed")
        elif res.phase is Phase.OPEN:
            for kind in ("lifetime", "idle"):
                self.timers.cancel(res.timers.pop(kind, None))
            if self.exclusive:
                # Free only if the core has it: in hand, being pinged (the
                # actor closes after the ping), or taken from its idle list.
                free = owned or bool(res.ping_seq) or self.core.claim(res)
            else:  # `retired` is set (by `unmap`): no caller takes a place now
                free = not held(res)
            if free:
                self.close(now, res)
                return
            self.move(now, res, "drain")
            self.timer(res, "drain", now + self.options.drain_timeout)
            self.core.log(
                "info",
                "pool.resource.retired",
                res.key,
                reason=res.reason,
                holders=res.holders + len(res.blocks),
            )
            self.core.ops.notify(res, "retired")

    def swap(self, now: float, res: Resource) -> None:
        """Swap ready standby `res` in (`STANDBY --swap--> OPEN`): the
        resources it replaces leave service."""
        self.move(now, res, "swap")
        self.retire_replaced(now, res)

    def retire_replaced(self, now: float, res: Resource) -> None:
        """Retire what refresh replacement `res` replaces (those still in
        the key map); it replaces nothing any more."""
        olds, res.replaces = res.replaces, []
        for old in olds:
            if old.mapped:
                self.retire(now, old, "refreshed")

    def close(self, now: float, res: Resource) -> None:
        self.timers.cancel(res.timers.pop("drain", None))
        self.move(now, res, "close")
        self.timer(res, "close", now + self.options.close_timeout)
        self.effects.append(Close(res.rid))

    def move(self, now: float, res: Resource, event: str) -> None:
        """Move `res` along the lifecycle table; account for what it frees."""
        before = res.phase
        after = res.phase = advance(before, event)
        if before in COUNTED and after not in COUNTED:
            self.used -= 1
            if res.reason == "reclaimed":
                self.core.placement.reclaiming -= 1
        if after in ENDED:
            if self.core.health.sweep is not None:
                self.core.health.sweep_done(now, res.rid)
            self.core.ops.notify(res, "ended")
        if after is Phase.GONE:
            assert not res.mapped, "a resource leaves the key map before it ends"
            # The one exit: nothing of the pool refers to it any more.
            del self.resources[res.rid]
            for kind in list(res.timers):
                self.timers.cancel(res.timers.pop(kind))
            res.holders = 0
            res.leases.clear()
            res.blocks.clear()  # (a block leaving later finds nothing to do)
            if res.global_held:
                res.global_held = False
                self.effects.append(ReturnSlot(res.rid))

    def timer(self, res: Resource, kind: str, when: float) -> None:
        handle = self.timers.add(when, kind, res.rid)
        if handle is not None:
            res.timers[kind] = handle

    def timer_fired(self, rid: int, kind: str) -> Resource | None:
        res = self.resources.get(rid)
        if res is not None:
            res.timers.pop(kind, None)
        return res

    def arm_idle(self, res: Resource) -> None:
        idle = self.options.max_idle_time
        if idle is not None and "idle" not in res.timers:
            self.timer(res, "idle", res.last_used + idle)

    def abandon(self, res: Resource, reason: str, **fields: Any) -> None:
        self.n["abandoned"] += 1
        self.core.log(
            "error",
            "pool.resource.abandoned",
            res.key,
            reason=reason,
            rid=res.rid,
            **fields,
        )
        self.effects.append(Abandon(res.rid))

    def closed(
        self, now: float, rid: int, attempt: int, error: BaseException | None
    ) -> None:
        """The actor of `rid` (try `attempt`) ended, its resource closed if it
        had one (`error` if `close()` raised); unasked, it is a lost resource."""
        res = self.resources.get(rid)
        if res is None or res.attempts != attempt or res.phase is Phase.BACKOFF:
            return  # a failed try's actor ending, or a resource long gone
        if error is not None:
            self.n["close_errors"] += 1
            self.core.log("error", "pool.close.failed", res.key, error=repr(error))
        if res.phase in (Phase.CREATING, Phase.OPEN, Phase.RETIRING):
            self.unmap(res)
            self.core.waiters.fail_joiners(now, res, PoolClosedError(self.core.name))
            res.reason = res.reason or "lost"
            self.core.log("warning", "pool.resource.lost", res.key)
        if self.core.debug:  # a hot path: no keywords built for nothing
            self.core.log("debug", "pool.resource.closed", res.key, reason=res.reason)
        self.move(now, res, "closed")
        self.core.pump(now)

    def leave(self, now: float, res: Resource) -> None:
        """The pool closes and its wait for holders is over: retiring `res`
        is left to its holders (no longer counted, so the pool can stop), and
        closed when the last of them checks in (`left_in`), never under one."""
        self.timers.cancel(res.timers.pop("drain", None))
        for lid in (*res.leases, *res.tokens, *res.blocks):
            self.core.log("warning", "pool.close.lease_out", res.key, lease=lid)
        res.left = True
        self.move(now, res, "left")

    def left_in(self, now: float, res: Resource) -> None:
        """A holder of left `res` checked in: close it once none is left."""
        if not (res.left_closed or held(res)):
            res.left_closed = True
            self.core.log("info", "pool.resource.drained", res.key, reason=res.reason)
            self.effects.append(Close(res.rid))

    def blocks_left(self, now: float, used: Iterable[Resource]) -> None:
        """Blocks left these shared resources since the core last read the
        counter (`Counter.leave`, its `used`): for each, what an `IN` note
        does, with no lease to count -- used now; idle (its timer armed) once
        nobody holds it, its key's callers served; closed once free if
        retiring, or left by the close."""
        for res in used:
            res.last_used = now
            res.used_seq = self.core.next_seq()
            if res.phase is Phase.OPEN:
                if not held(res):
                    self.arm_idle(res)
                self.core.changed(res.key)
            elif res.phase is Phase.RETIRING:
                self.core.drained(now, res, owned=False)
            elif res.left:
                self.left_in(now, res)

    def spoilt(self, now: float, note: tuple[Any, ...]) -> None:
        """`(SPOILT, res, lid, reason)`: block `lid` left shared `res` broken
        (`Counter.leave`; its use comes in `used`): counted and logged, and
        `res` retired, as a broken checkin's resource is."""
        _, res, lid, reason = note
        if res.phase not in (Phase.OPEN, Phase.RETIRING):
            return  # out of service already: closed under it, or left
        self.n["broken"] += 1
        self.core.log("warning", "pool.lease.broken", res.key, lease=lid, reason=reason)
        if res.phase is Phase.OPEN:
            self.retire(now, res, "broken")

    def on_close_timeout(self, now: float, rid: int) -> None:
        res = self.timer_fired(rid, "close")
        if res is None or res.phase is not Phase.CLOSING:
            return
        self.abandon(
            res, "close did not return", close_timeout=self.options.close_timeout
        )
        self.move(now, res, "timed_out")

    def on_drain_timeout(self, now: float, rid: int) -> None:
        res = self.timer_fired(rid, "drain")
        if res is None or res.phase is not Phase.RETIRING:
            return
        if self.core.closing is not None:  # never closed under a holder then
            if now >= self.core.ops.leave_at:
                self.leave(now, res)
            else:  # the close waits longer for holders
                self.timer(res, "drain", self.core.ops.leave_at)
            return
        self.n["drain_timeouts"] += 1
        self.core.log(
            "warning",
            "pool.resource.drain_timeout",
            res.key,
            holders=res.holders + len(res.blocks),
            drain_timeout=self.options.drain_timeout,
        )
        # Closed under its holders; they count until they check in (a no-op
        # now) or the resource is gone (blocks too: their `leave` finds it so).
        self.close(now, res)

    def on_lifetime(self, now: float, rid: int) -> None:
        res = self.timer_fired(rid, "lifetime")
        if res is None or res.phase is not Phase.OPEN or not res.mapped:
            return
        self.n["lifetime_expired"] += 1
        self.core.log("info", "pool.resource.expired", res.key, reason="max_lifetime")
        self.retire(now, res, "max_lifetime")

    def on_idle(self, now: float, rid: int) -> None:
        res = self.timer_fired(rid, "idle")
        if res is None or res.phase is not Phase.OPEN or not res.mapped:
            return
        if held(res):
            return  # the last checkin (or block to leave) arms it again
        idle = self.options.max_idle_time
        assert idle is not None
        if now < res.last_used + idle:
            self.arm_idle(res)  # used meanwhile: look again later
            return
        if self.exclusive and not self.core.claim(res):
            return  # a caller has it: its checkin note arms the timer again
        self.n["idle_expired"] += 1
        self.core.log("info", "pool.resource.expired", res.key, reason="max_idle_time")
        self.retire(now, res, "max_idle_time", owned=True)

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

    def snapshot(self) -> Stats:
        """The pool's stats now."""
        w = self.core.waiters
        phases = dict.fromkeys(Phase, 0)
        holders = global_held = 0
        for res in self.resources.values():
            phases[res.phase] += 1
            holders += res.holders + len(res.blocks)
            global_held += res.global_held
        return Stats(
            max_open_resources=self.core.cap,
            open_resources=self.used,
            wait_count=w.queued,
            wait_duration=w.wait_duration,
            creating=phases[Phase.CREATING] + phases[Phase.BACKOFF],
            open=phases[Phase.OPEN] + phases[Phase.STANDBY],
            retiring=phases[Phase.RETIRING],
            closing=phases[Phase.CLOSING],
            holders=holders,
            max_wait=w.max_wait,
            global_held=global_held,
            global_waiting=phases[Phase.RESERVING],
            **self.n,
        )
