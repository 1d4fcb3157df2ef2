"""Placement: where a request goes, and which idle resource makes room.

Part of the pure core (see [_core][pooler_actors._core]). It decides, for a
request of a key, which open resource serves it (an idle one when leases are
exclusive, else the one with the fewest holders), which creation in flight it
may join, and whether the key may have one more resource (`max_per_key`); it
grants a key's waiting callers in FIFO order (`serve_key`), hands free slots
to the slot queue oldest first (`wake`), and closes least recently used idle
resources for callers still waiting for a slot (`reclaim`, option
`reclaim_idle`). Its own state is `reclaiming`: how many resources it is
closing for them right now.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from pooler_actors._inventory import held
from pooler_actors._lifecycle import Phase
from pooler_actors._ops import Refill
from pooler_actors._part import Part
from pooler_actors._waiters import Caller

if TYPE_CHECKING:
    from pooler_actors._core import PoolCore
    from pooler_actors._inventory import KeyEntry, Resource

__all__ = ["Placement"]

_IN_CREATION = (Phase.RESERVING, Phase.CREATING, Phase.BACKOFF)


class Placement(Part):
    """Placement of requests and reclaim of idle resources; see the module
    docstring."""

    def __init__(self, core: PoolCore) -> None:
        super().__init__(core)
        #: Resources retiring as `reclaimed` that still count toward the cap.
        self.reclaiming = 0

    def best_open(self, now: float, entry: KeyEntry, hold: bool) -> Resource | None:
        """The open resource of `entry` with a free holder place, fewest holders.

        Exclusive: an idle one, taken from the idle list the way callers take
        them (`pop`), so the core and the hit path never both get one.
        """
        if hold and self.exclusive:
            idle = entry.idle
            while idle:
                try:
                    res = idle.pop()
                except IndexError:  # a caller took the last one after `while`
                    return None
                if not res.retired:
                    return res
                self.core.own_retired(now, res)  # published before it retired
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

    def joinable(self, entry: KeyEntry, hold: bool) -> Resource | None:
        """A creation of `entry` in flight that has a place for one more."""
        for res in entry.resources:
            if res.phase in _IN_CREATION and self.has_room(res, hold):
                return res
        return None

    def has_room(self, res: Resource, hold: bool) -> bool:
        limit = self.options.max_holders
        if not hold or limit is None:
            return True
        return res.holders + sum(1 for c in res.joiners if c.hold) < limit

    def count(self, entry: KeyEntry) -> int:
        """Resources `entry` has toward `max_per_key`.

        A refresh's standby is not one more while a resource it replaces still
        serves; once those left (evicted, expired, lost) it is the key's
        resource like any other, or a second factory call would run for it.
        """
        return sum(
            1 for r in entry.resources if not any(old.mapped for old in r.replaces)
        )

    def hand(self, now: float, res: Resource, key: Hashable, hold: bool) -> Any:
        """What a granted request gets: a lease, or the resource itself."""
        res.last_used = now
        if not hold:
            res.handed_out = True
            return res.obj
        res.holders += 1
        self.n["checkouts"] += 1
        lease = self.core.published.lease(key, res)  # found again if dropped
        res.leases[lease.lid] = now
        if self.core.debug:
            self.core.log("debug", "pool.lease.checkout", key, lease=lease.lid)
        return lease

    def serve_key(self, now: float, entry: KeyEntry) -> None:
        """Grant `entry`'s waiters, FIFO, what its resources have room for."""
        waiters = self.core.waiters
        serving = True
        room = self.count(entry) < self.options.max_per_key
        spare = None  # taken from the idle list for a caller a checkin served
        for caller in list(entry.waiters.values()):
            if serving:
                res = spare or self.best_open(now, entry, caller.hold)
                if res is not None:
                    spare = None
                    if not waiters.take_waiter(caller):
                        spare = res  # for the next one
                        continue
                    waiters.answer(
                        now, caller, self.hand(now, res, caller.key, caller.hold)
                    )
                    continue
                res = self.joinable(entry, caller.hold)
                if res is not None:
                    if waiters.take_waiter(caller):
                        waiters.unqueue(caller)
                        waiters.join(caller, res)
                    continue
                serving = False  # FIFO per key: nobody jumps this caller
            if room and not caller.in_slots:
                caller.in_slots = True
                waiters.slots[caller] = caller
            elif not room and caller.in_slots:
                caller.in_slots = False
                del waiters.slots[caller]
        if spare is not None:  # nobody left to take it
            self.core.back_in_service(spare)

    def wake(self, now: float) -> None:
        """Hand free slots to the slot queue, oldest first."""
        core = self.core
        slots = core.waiters.slots
        while slots and core.inventory.used < core.cap and core.closing is None:
            item = self.next_slot(slots)
            del slots[item]
            entry = core.inventory.keys.get(item.key)
            full = entry is not None and self.count(entry) >= self.options.max_per_key
            if isinstance(item, Refill):
                if full:  # opened anew meanwhile: nothing to refill
                    core.ops.finish_op(item.op, True)
                    continue
                res = core.creations.create(now, item.key, {})
                core.ops.watch(item.op, [res])
                continue
            item.in_slots = False
            if not full:
                core.creations.create(now, item.key, item.context)
                entry = core.inventory.keys[item.key]
                if item.waiting and self.count(entry) < self.options.max_per_key:
                    # An older waiter of its key joined the creation its slot
                    # started (FIFO per key): it keeps its place, first in line.
                    item.in_slots = True
                    core.waiters.first_in_line(item)
                    slots = core.waiters.slots

    def next_slot(
        self, slots: dict[Caller | Refill, Caller | Refill]
    ) -> Caller | Refill:
        """Who gets the slot that freed: the oldest in the slot queue, except
        that with `max_per_key > 1` a key with nothing open or being made
        comes before a key that has one already (callers and refills alike).

        The no-thrash rule's second half: a key's second resource costs a
        factory call and wins only the wait for its first one's checkin,
        while a key with nothing would otherwise reclaim another key's idle
        resource for the same slot a moment later. FIFO per key is unchanged
        (a key's callers are all of one kind); a key that has a resource
        takes a slot nobody without one is waiting for.
        """
        if self.options.max_per_key > 1:
            keys = self.core.inventory.keys
            for item in slots.values():
                entry = keys.get(item.key)
                if entry is None or not self.count(entry):
                    return item
        return next(iter(slots.values()))

    def reclaim(self, now: float) -> None:
        """Close least recently used idle resources for callers waiting for a slot."""
        wanted = self.slots_wanted()
        taken: set[int] = set()  # exclusive ones a caller has (notes pending)
        keys = self.core.inventory.keys
        while self.reclaiming < wanted:
            # A key's second (third...) resource goes first, least recently
            # used first: closing a key's only one makes it the next to ask.
            victim, best = None, None
            for res in self.core.inventory.resources.values():
                if (
                    res.phase is Phase.OPEN
                    and res.mapped
                    and not held(res)
                    and not res.handed_out
                    and not res.ping_seq
                    and res.rid not in taken
                ):
                    rank = (self.count(keys[res.key]) < 2, res.last_used, res.used_seq)
                    if best is None or rank < best:
                        victim, best = res, rank
            if victim is None:
                return
            if self.exclusive and not self.core.claim(victim):
                taken.add(victim.rid)
                continue
            if self.shared and not self.core.hide(victim):
                taken.add(victim.rid)
                continue
            self.n["reclaimed"] += 1
            self.reclaiming += 1
            self.core.log("info", "pool.resource.reclaimed", victim.key, waiting=wanted)
            self.core.inventory.retire(now, victim, "reclaimed", owned=True)

    def slots_wanted(self) -> int:
        """How many creations the callers waiting for a slot need reclaims for.

        A key with nothing open or being made gets one, its first, however
        many of its callers wait (the no-thrash rule): a key that has a
        resource waits for a holder place, or grows into a slot that frees by
        itself (up to `max_per_key`), rather than close another key's idle
        resource that is wanted again a moment later. `reclaim` takes a key's
        extra resources before any key's only one.
        """
        keys = {
            item.key for item in self.core.waiters.slots if isinstance(item, Caller)
        }
        wanted = 0
        for key in keys:
            entry = self.core.inventory.keys.get(key)
            if entry is None or not self.count(entry):
                wanted += 1  # its first one only
        return wanted
