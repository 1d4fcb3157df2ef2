"""The waiters: requests not answered at once, their queues and deadlines.

Part of the pure core (see [_core][pooler_actors._core]). It owns `callers`
(every request not answered yet, by `cid`), each key's FIFO of waiting
callers (`KeyEntry.waiters`, and the numbers in `KeyEntry.queue` a checkin
may hand on to at the counter: `Counter._hand_on`), the slot
queue (`slots`: callers, and refreshes at the cap, waiting for a free slot,
oldest first), each caller's `deadline` timer, the count of queued callers
(`queued`) and the wait statistics (`wait_duration`, `max_wait`). It also
keeps the callers a grant found withdrawn (`gave_up`) and those a checkin
served before their `ASK` note was read (`early`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pooler_actors._effects import Fail, Reply
from pooler_actors._part import NO_KEY, Part
from pooler_actors.errors import AcquireTimeout, PoolClosedError, TooManyWaiters
from pooler_actors.lease import Lease
from pooler_actors.options import PoolOptions

if TYPE_CHECKING:
    from pooler_actors._core import PoolCore
    from pooler_actors._inventory import KeyEntry, Resource
    from pooler_actors._ops import Refill

__all__ = ["Caller", "Waiters"]

_INF = math.inf


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
    taken: bool = False  # a checkin at the counter took it (`Counter._hand_on`)
    answered: float = -1.0  # when a grant was sent


class Waiters(Part):
    """The callers, their FIFOs, the slot queue and deadlines; see the module
    docstring."""

    def __init__(self, core: PoolCore) -> None:
        super().__init__(core)
        self.callers: dict[int, Caller] = {}  # requests not answered yet
        self.slots: dict[Caller | Refill, Caller | Refill] = {}  # FIFO for a slot
        self.queued = 0  # callers in some key's FIFO
        self.wait_duration = 0.0
        self.max_wait = 0.0
        self.gave_up: dict[int, Caller] = {}  # granted, then found withdrawn
        self.early: set[int] = set()  # served by a checkin before its ASK note
        #: The `ASK` notes of self-queued checkouts a checkin took before the
        #: core read them: its `GIVEN` note follows, or its withdrawal (a
        #: `Caller` is made then: `self_queued`).
        self.taken: dict[int, tuple[Any, ...]] = {}

    def handlers(self) -> dict[str, Callable[[float, int], None]]:
        """The kinds of core timer this part handles, and how."""
        return {"deadline": self.on_deadline}

    def first_in_line(self, item: Caller | Refill) -> None:
        """Put `item` first in the slot queue."""
        self.slots = {item: item, **self.slots}

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
        placed: bool = False,
    ) -> bool:
        """`Acquire` (`hold=False`) or `Checkout` (`hold=True`) of `key`.

        `gone` says the caller gave up before the request was read: it is
        counted, and gets no creation and no place in a queue. `since`: when
        the caller asked, if before `now` (its `timeout` counts from then).
        `placed`: a checkout that queued itself at the counter, whose number
        stands in the key's queue already: queued, it keeps that place (FIFO).
        Returns whether the caller was queued.
        """
        n = self.n
        n["acquires"] += 1
        if not hold and not self.options.shared:
            self.effects.append(Fail(cid, _acquire_needs_lease(self.options)))
            return False
        if self.core.closing is not None:
            self.effects.append(Fail(cid, PoolClosedError(self.core.name)))
            return False
        entry = self.core.inventory.keys.get(key)
        # Callers queued for the key come first (FIFO per key): a checkin note
        # not read yet may have put a resource back in the idle list they wait
        # for (exclusive), and it is theirs once the note is read.
        if entry is not None and not entry.waiters:
            res = self.core.placement.best_open(now, entry, hold)
            if res is not None:  # answered at once
                n["hits"] += 1
                if self.core.debug:
                    self.core.log("debug", "pool.acquire.hit", key, context)
                self.effects.append(
                    Reply(cid, self.core.placement.hand(now, res, key, hold))
                )
                return False
        if gone:
            n["timeouts"] += 1
            return False
        if timeout is None:
            timeout = self.options.acquire_timeout
        # timeout=0 never waits for a slot, but a creation it starts or joins
        # is awaited.
        start = now if since is None else since
        deadline = start + timeout if timeout else _INF
        caller = Caller(cid, key, hold, start, deadline, timeout, context)
        if entry is not None:
            res = self.core.placement.joinable(entry, hold)
            if res is not None:
                n["joins"] += 1
                self.add_caller(caller)
                self.join(caller, res)
                self.core.log("debug", "pool.acquire.joined", key, context)
                return False
        room = (
            entry is None or self.core.placement.count(entry) < self.options.max_per_key
        )
        if (
            room
            and self.core.inventory.used < self.core.cap
            and self.core.closing is None
        ):
            self.add_caller(caller)
            res = self.core.creations.create(now, key, context)
            self.join(caller, res)
            self.core.pump(now)
            return False
        if timeout == 0:
            n["timeouts"] += 1
            self.core.log(
                "warning", "pool.acquire.timeout", key, context, timeout=0, wait_s=0.0
            )
            self.effects.append(Fail(cid, AcquireTimeout(key, 0)))
            return False
        limit = self.options.max_waiting
        if limit is not None and self.queued >= limit:
            n["rejected"] += 1
            self.core.log(
                "warning", "pool.acquire.rejected", key, context, max_waiting=limit
            )
            self.effects.append(Fail(cid, TooManyWaiters(key, limit)))
            return False
        n["waits"] += 1
        caller.queued = True
        self.add_caller(caller)
        self.enqueue(self.core.inventory.entry(key), caller, slot=room, placed=placed)
        if self.core.debug:
            self.core.log(
                "debug", "pool.acquire.queued", key, context, waiting=self.queued
            )
        self.core.pump(now)
        return True

    def give_up(self, now: float, cid: int) -> None:
        """The caller gave up (its own timeout, an interrupt, a cancel)."""
        caller = self.callers.pop(cid, None)
        if caller is None:
            caller = self.gave_up.pop(cid, None)
        if caller is None and cid in self.taken:  # a checkin skipped it
            caller = self_queued(self.taken.pop(cid))
        if caller is None:
            return  # answered already: the reply won the race
        if now >= caller.deadline:  # its deadline, kept in its own thread
            self.time_out(now, caller)
        else:
            self.n["timeouts"] += 1
            waited = self.drop(now, caller)
            self.core.log(
                "warning",
                "pool.acquire.withdrawn",
                caller.key,
                caller.context,
                wait_s=waited,
            )
        self.core.pump(now)

    def undelivered(self, now: float, reply: Reply) -> None:
        """A grant found its caller gone (it withdrew just before).

        A lease nobody received goes back at once; the caller's wait is taken
        back and counted when its withdrawal arrives (`give_up`), as for any
        caller that gave up.
        """
        value = reply.value
        if isinstance(value, Lease) and value.pool is self.core.pool_id:
            self.core.give_back(now, value, broken=False)
        caller = reply.caller
        if caller is None:  # answered at once: the withdrawal finds nothing
            caller = Caller(reply.cid, NO_KEY, False, now, _INF, None, {})
        elif caller.queued:
            self.wait_duration -= caller.answered - caller.start
        self.gave_up[reply.cid] = caller
        self.core.pump(now)

    def on_deadline(self, now: float, cid: int) -> None:
        caller = self.callers.get(cid)
        if caller is None or not self.take_waiter(caller):
            return  # answered, or served by a checkin (a GIVEN note is coming)
        del self.callers[cid]
        caller.timer = None
        self.time_out(now, caller)
        self.effects.append(Fail(cid, AcquireTimeout(caller.key, caller.timeout)))

    def time_out(self, now: float, caller: Caller) -> None:
        """`caller`'s deadline passed: out of its queues, counted, logged."""
        self.n["timeouts"] += 1
        waited = self.drop(now, caller)
        self.core.log(
            "warning",
            "pool.acquire.timeout",
            caller.key,
            caller.context,
            timeout=caller.timeout,
            wait_s=waited,
        )

    def take_waiter(self, caller: Caller) -> bool:
        """Take queued `caller` out of the hit path's reach before the core
        serves, joins or fails it (`Counter._hand_on`); `False` if a checkin took it
        first: it leaves the queue, and its `GIVEN` note (or its withdrawal)
        is on its way."""
        if caller.taken:
            return False
        if not caller.handoff:
            return True
        caller.handoff = False
        try:
            self.core.inventory.keys[caller.key].queue.remove(caller.cid)
        except ValueError:
            caller.taken = True
            self.unqueue(caller)
            return False
        return True

    def join(self, caller: Caller, res: Resource) -> None:
        caller.joined = res
        res.joiners.append(caller)

    def enqueue(
        self, entry: KeyEntry, caller: Caller, *, slot: bool, placed: bool = False
    ) -> None:
        caller.waiting = True
        self.queued += 1
        entry.waiters[caller.cid] = caller
        if self.exclusive and caller.hold:
            # Its number in the key's queue is what keeps callers out of the
            # idle list and hands it the next checkin (invariant 3): marking
            # the key too would keep checkins coming to the core until the
            # core reads the note of the checkin that served the caller.
            caller.handoff = True
            if not (placed and caller.cid in entry.queue):  # (placed: kept)
                entry.queue.append(caller.cid)
        else:
            self.core.published.mark_waiting(entry.key, True)
        if slot:
            caller.in_slots = True
            self.slots[caller] = caller

    def unqueue(self, caller: Caller) -> None:
        if caller.in_slots:
            caller.in_slots = False
            del self.slots[caller]
        if caller.handoff:  # it gave up: a checkin that took it finds it so
            caller.handoff = False
            with contextlib.suppress(ValueError):
                self.core.inventory.keys[caller.key].queue.remove(caller.cid)
        if caller.waiting:
            caller.waiting = False
            self.queued -= 1
            entry = self.core.inventory.keys[caller.key]
            del entry.waiters[caller.cid]
            if not entry.waiters:
                self.core.published.mark_waiting(entry.key, False)
            self.core.inventory.forget_if_empty(entry)

    def add_caller(self, caller: Caller) -> None:
        self.callers[caller.cid] = caller
        caller.timer = self.timers.add(caller.deadline, "deadline", caller.cid)

    def drop(self, now: float, caller: Caller) -> float:
        """Take a caller that gave up or failed out of every queue; its wait."""
        self.timers.cancel(caller.timer)
        self.unqueue(caller)
        res = caller.joined
        if res is not None:
            res.joiners.remove(caller)
            caller.joined = None
            self.core.fleet.withdraw_if_unwanted(now, res)
        return self.waited(now, caller)

    def waited(self, now: float, caller: Caller) -> float:
        waited = now - caller.start
        if caller.queued:
            self.wait_duration += waited
            self.max_wait = max(self.max_wait, waited)
        return waited

    def answer(self, now: float, caller: Caller, value: Any) -> None:
        del self.callers[caller.cid]
        self.served(now, caller)
        self.effects.append(Reply(caller.cid, value, caller))

    def served(self, now: float, caller: Caller) -> None:
        """`caller` has what it asked for: out of its queues, timer cancelled,
        its wait counted (by the core's reply, or a checkin's hand-on)."""
        self.timers.cancel(caller.timer)
        self.unqueue(caller)
        caller.joined = None
        caller.answered = now
        waited = self.waited(now, caller)
        if (
            caller.queued and self.core.debug
        ):  # a hot path: no keywords built for nothing
            self.core.log(
                "debug",
                "pool.acquire.granted",
                caller.key,
                caller.context,
                wait_s=waited,
            )

    def answer_error(self, now: float, caller: Caller, error: BaseException) -> None:
        del self.callers[caller.cid]
        self.timers.cancel(caller.timer)
        self.unqueue(caller)
        caller.joined = None
        self.waited(now, caller)
        self.effects.append(Fail(caller.cid, error))

    def take_joiners(self, res: Resource) -> list[Caller]:
        joiners, res.joiners = res.joiners, []
        return joiners

    def fail_joiners(self, now: float, res: Resource, error: BaseException) -> None:
        for caller in self.take_joiners(res):
            self.answer_error(now, caller, error)

    def fail_all(self, now: float, error: BaseException) -> None:
        """The pool closes: fail every caller not answered yet."""
        for caller in list(self.callers.values()):
            if not self.take_waiter(caller):
                continue  # served by a checkin: its GIVEN note is on its way
            del self.callers[caller.cid]
            self.drop(now, caller)
            self.effects.append(Fail(caller.cid, error))

    def forget_all(self) -> None:
        """The pool has stopped: callers left were taken by checkins at the counter,
        served or gone; their notes and withdrawals are not read any more."""
        for caller in self.callers.values():
            self.timers.cancel(caller.timer)
        self.callers.clear()
        self.taken.clear()

    def served_at_counter(self, now: float, ask: tuple[Any, ...]) -> None:
        """A checkin handed a resource to the self-queued checkout of `ask`
        (its `ASK` note): its wait counts, as `served` counts a caller's."""
        waited = now - ask[3]  # (`since`: see `self_queued` for the fields)
        self.wait_duration += waited
        self.max_wait = max(self.max_wait, waited)
        if self.core.debug:
            self.core.log(
                "debug", "pool.acquire.granted", ask[1], ask[5], wait_s=waited
            )


def self_queued(ask: tuple[Any, ...]) -> Caller:
    """The caller of a self-queued checkout's `ASK` note that a checkin took."""
    _, key, cid, since, timeout, context, _queue = ask
    caller = Caller(cid, key, True, since, _INF, timeout, context, queued=True)
    caller.taken = True
    return caller


def _acquire_needs_lease(options: PoolOptions) -> TypeError:
    return TypeError(
        "acquire() hands out a shared resource and needs max_holders=None and "
        f"max_per_key=1 (this pool has max_holders={options.max_holders}, "
        f"max_per_key={options.max_per_key}); use lease() or checkout()"
    )
