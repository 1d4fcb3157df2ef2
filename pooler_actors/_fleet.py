"""Fleet slots: a resource's reservation under a fleet-wide cap.

Part of the pure core (see [_core][pooler_actors._core]). With a
`global_capacity`, a creation starts in `RESERVING` and asks for a slot
(`ReserveSlot`); the capacity driver reports a grant, an unreachable engine
or a lost lease, and this part answers: start the factory, fail the
creation's callers, or evict (retire) the resource. A reservation nobody
waits for any more is withdrawn (`CancelSlot`); a slot is given back
(`ReturnSlot`) when its resource leaves the pool (`Inventory.move`). What
must not wait long stops waiting after `_FLEET_WAIT` (the `reserve` timer):
a prewarm, a `timeout=0` request, and a refresh, whose old resources retire
then. Its state lives on each resource's record: `global_held`, `slot_lost`
and its `reserve` timer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pooler_actors._effects import CancelSlot, ReserveSlot, ReturnSlot
from pooler_actors._lifecycle import Phase
from pooler_actors._part import Part
from pooler_actors.errors import AcquireTimeout, CapacityUnavailable

if TYPE_CHECKING:
    from pooler_actors._inventory import Resource

__all__ = ["Fleet"]

# A fleet slot free anywhere is granted in one round trip to the engine; a
# reservation still waiting after this long means the fleet is at its limit,
# and what must not wait for long stops waiting (see `on_reserve_wait`).
_FLEET_WAIT = 1.0


class Fleet(Part):
    """Fleet-wide reservations; see the module docstring."""

    def handlers(self) -> dict[str, Callable[[float, int], None]]:
        """The kinds of core timer this part handles, and how."""
        return {"reserve": self.on_reserve_wait}

    def reserve(self, now: float, res: Resource) -> None:
        """Ask for a fleet-wide slot for new `res` (in `RESERVING`)."""
        self.core.log("debug", "pool.global.waiting", res.key, res.context)
        self.core.inventory.timer(res, "reserve", now + _FLEET_WAIT)
        self.effects.append(ReserveSlot(res.rid))

    def granted(self, now: float, rid: int, held: bool) -> None:
        """A fleet-wide slot for `rid` (`held=False`: granted without one)."""
        res = self.core.inventory.resources.get(rid)
        if res is None or res.phase is not Phase.RESERVING:
            if held:
                self.effects.append(ReturnSlot(rid))  # nobody wants it any more
            return
        res.global_held = held
        self.timers.cancel(res.timers.pop("reserve", None))
        self.core.inventory.move(now, res, "granted")
        self.core.log("debug", "pool.global.granted", res.key, res.context, held=held)
        self.core.creations.start(now, res)

    def unavailable(self, now: float, rid: int, error: BaseException) -> None:
        """The capacity engine cannot be reached: fail `rid`'s creation closed."""
        res = self.core.inventory.resources.get(rid)
        if res is None or res.phase is not Phase.RESERVING:
            return
        self.core.log("warning", "pool.global.unavailable", res.key, error=repr(error))
        # A refusal that is a configuration error (the fleet's stored limit
        # differs from this process's): the caller gets that ValueError itself.
        cause = error.__cause__ if isinstance(error, CapacityUnavailable) else error
        refused = cause if isinstance(cause, ValueError) else None
        for caller in self.core.waiters.take_joiners(res):
            failure: BaseException
            if refused is not None:
                failure = ValueError(*refused.args)
            else:
                failure = AcquireTimeout(caller.key, caller.timeout)
            failure.__cause__ = error
            self.core.waiters.answer_error(now, caller, failure)
        self.core.inventory.unmap(res)
        self.core.inventory.move(now, res, "cancelled")
        self.core.pump(now)

    def lost(self, now: float, rid: int) -> None:
        """`rid`'s fleet-wide lease was lost: evict it (retire, if held)."""
        res = self.core.inventory.resources.get(rid)
        if res is None or not res.global_held:
            return
        res.global_held = False
        res.slot_lost = True
        if res.phase in (Phase.CREATING, Phase.BACKOFF, Phase.OPEN):
            self.n["global_lost"] += 1
            self.core.log("warning", "pool.global.lost", res.key)
            if res.phase is Phase.BACKOFF:  # the next factory try needs a slot
                error = RuntimeError("its fleet-wide slot was lost")
                self.core.creations.fail_creation(now, res, error)
            else:
                self.core.inventory.retire(now, res, "global_lease_lost")
        self.core.pump(now)

    def on_reserve_wait(self, now: float, rid: int) -> None:
        res = self.core.inventory.timer_fired(rid, "reserve")
        if res is None or res.phase is not Phase.RESERVING:
            return
        if res.replaces:
            # A refresh's replacement gets no fleet slot: the old resources
            # may be what fills the fleet, and would wait for it forever.
            # They retire now; the replacement, a standby no more, keeps its
            # place in the fleet's queue and takes the slot they give back
            # (or an earlier one).
            self.core.inventory.retire_replaced(now, res)
        # A prewarm creates what the caps allow now; it does not queue.
        self.core.ops.not_created(res)
        # `timeout=0` never waits for a slot, a fleet slot included.
        for caller in [c for c in res.joiners if c.timeout == 0]:
            self.core.waiters.on_deadline(now, caller.cid)
        self.withdraw_if_unwanted(now, res)

    def withdraw_if_unwanted(self, now: float, res: Resource) -> None:
        """Withdraw a reservation nobody waits for any more."""
        if res.phase is not Phase.RESERVING or res.joiners:
            return
        entry = self.core.inventory.keys.get(res.key) if res.mapped else None
        if entry is not None and entry.waiters and self.core.closing is None:
            # Callers of the key wait behind it (no holder place was left for
            # them): the reservation keeps its place in the fleet's queue for
            # them, and the pump joins them to it.
            self.core.changed(res.key)
        elif not res.mapped or not (res.ops or res.replaces):
            # Out of the key map, a prewarm or refresh waiting on it would
            # only see it closed.
            self.effects.append(CancelSlot(res.rid))
            self.core.inventory.unmap(res)
            self.core.inventory.move(now, res, "cancelled")
            self.core.sizing.failed(now, res.key)  # a warm key waits a while
