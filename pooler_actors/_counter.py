"""The counter: what callers may take without a round trip, under one lock.

A request the pool can answer from what it already has -- a hit on an open
shared resource, an idle exclusive resource, a checkin, a checkout that must
queue -- is served in the caller's own thread, at the counter: the view of
open shared resources, the idle lists, the queues of checkouts per key, the
notes callers leave for the core and the doorbell that wakes the supervisor.
The core stays the owner of the truth: it learns what callers did from their
notes, in each caller's order.

The counter is this module's `Counter`, with its state and the core's side
of it declared in `_counter_state` and the block path (`with pool.lease(key)`
on a shared pool, without a lease) in `_counter_blocks`: three modules, one
class, one lock.

Invariants (each method's docstring says which it keeps):

1. **One lock.** Every read and write of the counter's state happens under
   `lock`: a caller's inside one method below, the core's while the shell
   holds the lock for the whole core event (one event is one atomic step for
   every caller). Nothing rests on the GIL or on the order in which another
   thread sees two writes; no user code, logging or blocking call runs under
   the lock.
2. **One place.** An idle exclusive resource is in exactly one place: its
   key's idle list, one lease, or the core's hands. A holder of a shared
   resource is counted once: by the core, by a token not yet noted, or by
   its block's id in `blocks` while the block's place is set.
3. **Nothing unnoted, nobody passed over.** Whatever a caller changes here is
   noted in the same step, and the supervisor woken unless it polls; a
   caller's notes reach the core before its later messages. While callers
   of a key are queued (in the core, or on their own in `queue`), nobody
   takes from its idle list and a checkin hands its resource to the first.

The shell holds the lock for a whole core event, rather than applying the
core's changes as effects, because the core's transitions need answers at
once (is this idle resource still here to close?) and a core event is short
and runs no user code; its effects run after the lock is released.

An interrupt (`KeyboardInterrupt`, any asynchronous exception) lands before
or after a method's paired changes (`_together`), and a method undoes a
partial step before it propagates; a lease dropped after it was handed out
is found when it is collected (`Lease.__del__`). The lock and the shell's
hooks (`wake`, `claim`, `register`, `context`, `on_lost`) are
injected: this module imports no threading, so the pure core may own a
counter and the simulation may drive one step by step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

from pooler_actors._counter_blocks import Blocks
from pooler_actors._counter_state import (
    ASK,
    BROKEN,
    GIVEN,
    HANDOVER,
    HIT,
    IN,
    MISS,
    OUT,
    QUIET,
    WOKEN,
    _together,
)
from pooler_actors.errors import PoolClosedError
from pooler_actors.lease import Lease, not_a_lease

# The constants live in `_counter_state`; `MISS` is the callers' answer.
__all__ = ["MISS", "Counter"]


class Counter(Blocks):
    """What callers may take without a round trip, and the only code besides
    `_State` and `Blocks` that touches it (see the module docstring for its
    three invariants)."""

    __slots__ = ()

    # --- callers' side: each method one atomic step -------------------------

    def hit(self, key: Hashable) -> Any:
        """`acquire(key)` of an open shared key: its resource, or `MISS`.

        No call runs between taking the lock and releasing it (a subscript,
        not `get`; `+=`, not `append`): CPython hands the GIL to another
        thread only at a call or a backward jump, and a thread that lost it
        while holding the lock would make every other caller queue on the
        lock and hand the GIL on in turn (a convoy: 8 threads over 2 CPUs ran
        15 times slower with one `append` in the locked region). A speed
        rule only: correctness rests on the lock alone. While the supervisor
        polls and debug is off, a hit is one key in `hits` and nothing to
        wake: that case first (0.37 against 0.40 µs a hit)."""
        with self.lock:
            try:
                res = self.view[key]
            except (KeyError, TypeError):  # not open (or unhashable: asking says so)
                return MISS
            if res.retired:
                return MISS
            if self.noted and not self.debug_on:  # (`QUIET` is 0: see `_ring`)
                res.handed_out = True  # a plain acquire() got it: never reclaimed
                self.hits += (key,)
                return res.obj
        return self._hit_noted(key)

    def _hit_noted(self, key: Hashable) -> Any:
        """`hit`, when the hit is noted with its context (debug) or wakes the
        supervisor: a step of its own, as if the first had not happened."""
        ring = False
        try:
            with self.lock:
                try:
                    res = self.view[key]
                except (KeyError, TypeError):
                    return MISS
                if res.retired:
                    return MISS
                res.handed_out = True
                if self.debug_on:
                    ring = self._add(self.notes, (HIT, key, self.context()), False)
                else:  # the cheapest note, rung first (an interrupt between
                    ring = self.noted == QUIET  # the two wakes for nothing)
                    self.noted = WOKEN if ring else self.noted
                    self.hits += (key,)
        finally:
            if ring:
                self.wake()
        return res.obj

    def take(self, key: Hashable) -> Any:
        """A checkout served here (an idle exclusive resource, or a place on
        the open shared one), or `MISS`. Keeps invariants 2 and 3."""
        lease, ring = MISS, False
        try:
            with self.lock:
                context = self.context() if self.debug_on else None
                try:
                    if key in self.waiting:
                        return MISS
                    if self.exclusive:
                        lease = self._take_idle(key, context)
                    elif self.shared:
                        lease = self._take_shared(key, context)
                except TypeError:  # unhashable: asking says so
                    return MISS
                ring = lease is not MISS and self._ring(False)
        finally:
            if ring:
                self.wake()
        return lease

    def _take_idle(self, key: Hashable, context: dict[str, Any] | None) -> Any:
        idle = self.idle.get(key)
        if not idle or self.queue.get(key):  # callers queued themselves first
            return MISS
        res = idle[-1]
        if res.retired:  # retired while idle: the core takes it, not callers
            return MISS
        lease = self.lease(key, res)
        note = (OUT, res, context, lease)
        try:
            _together(idle.remove, res, self.notes.append, note)  # (`res` is last)
        except BaseException:  # interrupted: as if it never came
            self._unnote(note)
            if res not in idle:
                idle.append(res)
            raise
        return lease

    def _take_shared(self, key: Hashable, context: dict[str, Any] | None) -> Any:
        res = self.view.get(key)
        if res is None or res.retired:
            return MISS
        lease = self.lease(key, res)
        note = (OUT, res, context, lease)
        try:
            _together(res.tokens.append, lease.lid, self.notes.append, note)
        except BaseException:  # interrupted: as if it never came
            self._unnote(note)
            if lease.lid in res.tokens:
                res.tokens.remove(lease.lid)
            raise
        return lease

    def _unnote(self, note: tuple[Any, ...]) -> None:
        """Take back `note`, the last one, if it was appended (an undo)."""
        if self.notes and self.notes[-1] is note:
            self.notes.pop()

    def enqueue(self, key: Hashable, timeout: float | None, since: float) -> Any:
        """A checkout that must wait, queued here (`queue[key]` and its note,
        one step; a checkin may serve it): its future, or `MISS`: an unknown
        key, or one that might want a new resource now (`max_per_key > 1`
        with nobody queued and a slot free) asks the supervisor. Invariant 3."""
        if not self.direct or timeout == 0 or self.register is None:
            return MISS
        context = self.context()
        with self.lock:
            try:
                queue = self.queue.get(key)
            except TypeError:  # unhashable: asking says so
                return MISS
            if queue is None or not (
                queue or self.single or self.full or key in self.waiting
            ):
                return MISS  # an unknown key, or one that may need a new resource
            if self.closed is not None:
                raise PoolClosedError(self.closed)
            cid, future = self.register()
            # A resource idle now (retired ones aside) is served at once.
            idle = self.idle.get(key)
            urgent = any(not r.retired for r in idle) if idle else False
            note = (ASK, key, cid, since, timeout, context, queue)
            try:
                _together(queue.append, cid, self.notes.append, note)
            except BaseException as error:  # interrupted: as if it never came
                self._unnote(note)
                if cid in queue:
                    queue.remove(cid)
                future.withdraw(error)
                raise
            ring = self._ring(urgent)
        if ring:  # (an interrupt just here: the supervisor's own look finds it)
            self.wake()
        return future

    def mark_origin(self, lease: Lease[Any, Any], where: str) -> None:
        """Remember where `lease` was checked out (`leak_warning_after`)."""
        with self.lock:
            if not lease.checked_in:
                self.origins[lease.lid] = where

    def give_back(self, future: Any) -> None:
        """Check in the lease `future` is or will be settled with, if it is one:
        its caller will not take it (it gave up just as it was granted)."""

        def back(settled: Any) -> None:
            try:
                lease = settled.get(timeout=0)
            except BaseException:
                return
            if isinstance(lease, Lease):
                self.checkin(lease, False)

        future.add_done_callback(back)

    def hold(self, lease: Lease[Any, Any]) -> bool:
        """Reserve `lease`'s checkin for a caller that runs the pool's `reset`
        first, outside the lock; `False` if checked in (or reserved) already.
        Keeps invariant 2: its holder keeps it until `checkin(..., reset=True)`.

        Raises:
            TypeError: `lease` is not a `Lease`.
            ValueError: the lease is of another pool.
        """
        self._check_lease(lease)
        with self.lock:
            return lease.hold_for_reset()

    def _check_lease(self, lease: object) -> None:  # (nothing changes if it raises)
        if not isinstance(lease, Lease):
            raise not_a_lease(lease)
        if lease.pool is not self.pool_id:
            raise ValueError(f"{lease!r} was not granted by this pool")

    def checkin(
        self, lease: Lease[Any, Any], broken: bool, *, reset: bool = False
    ) -> bool:
        """Give a lease back, here: never a round trip; `False` if it was given
        back already. Keeps invariants 2 and 3: the resource goes to the first
        caller queued for its key, or back to its idle list, with its note.

        Raises:
            TypeError: `lease` is not a `Lease`.
            ValueError: the lease is of another pool.
        """
        self._check_lease(lease)
        ring = False
        answer: list[Any] = []  # a queued caller's reply and lease (`_hand_on`)
        try:
            with self.lock:
                if not lease.claim_checkin(reset):
                    return False
                try:
                    ring = self._checkin(lease, broken, answer)
                except BaseException:
                    # Interrupted before its note: as if it never came. (Past
                    # its note, `_checkin` completes what the note says.)
                    if not self._noted(lease):
                        lease.unclaim_checkin(reset)
                    raise
        finally:
            try:
                if answer:  # claimed under the lock, answered once it is released
                    answer[0](answer[1])
            finally:  # (an interrupt inside the answer: the wake is still due)
                if ring:
                    self.wake()
        return True

    def lost(
        self, lease: Lease[Any, Any], broken: bool, *, dropped: bool = False
    ) -> bool:
        """A checkin the core makes (a `Checkin` message; `dropped`: a lease
        collected while out, even one whose `reset` was cut short, or a
        dropped block's place; the shell holds the lock): noted as the
        counter's own checkins are, the resource left to the core, which
        serves whoever waits. `False` if the lease was checked in already."""
        if not lease.claim_checkin(dropped):
            return False
        res: Any = lease.handle
        if self.exclusive:  # the holder had it in hand: now the core has
            self.notes.append((BROKEN if broken else HANDOVER, res, lease))
        else:
            if lease.lid in res.tokens:
                res.tokens.remove(lease.lid)
            self._unhold(res, lease.lid)  # a dropped block's place (`dropped`)
            self.notes.append((BROKEN if broken else IN, res, lease))
        return True

    def _noted(self, lease: Lease[Any, Any]) -> bool:
        return bool(self.notes) and self.notes[-1][2] is lease

    def _checkin(self, lease: Lease[Any, Any], broken: bool, answer: list[Any]) -> bool:
        """The checkin's note and what it says; whether to wake the supervisor.
        A queued caller it serves is put in `answer` (see `_hand_on`)."""
        if self.origins:
            self.origins.pop(lease.lid, None)
        res: Any = lease.handle
        key = lease.key
        if not self.exclusive:
            self._unhold(res, lease.lid)  # a dropped block's, after the stop
            note = (BROKEN if broken else IN, res, lease)
            # Someone waits on it: a holder place, a close, a reclaim.
            urgent = broken or res.retired or key in self.waiting or self.starved
            also = (res.tokens.remove, lease.lid) if lease.lid in res.tokens else ()
            try:
                return self._add(self.notes, note, urgent, *also)
            finally:  # its token goes with its note (interrupted or not)
                if self._noted(lease) and lease.lid in res.tokens:
                    res.tokens.remove(lease.lid)
        if broken or res.retired:
            return self._post((BROKEN if broken else HANDOVER, res, lease), True)
        queue = self.queue.get(key)
        while queue:
            cid, fulfil = queue[0], None
            try:
                fulfil = self.claim(cid)
            except BaseException:  # finish the claim (claiming again is safe)
                fulfil = self.claim(cid)
                if fulfil is not None and self._hand_on(
                    queue, res, lease, fulfil, answer
                ):
                    self.wake()
                raise
            if fulfil is not None:
                return self._hand_on(queue, res, lease, fulfil, answer)
            queue.popleft()  # it gave up: its withdrawal reaches the core
        if key in self.waiting:  # queued in the core: it serves them
            return self._post((HANDOVER, res, lease), True)
        try:
            note = (IN, res, lease)
            return self._add(self.notes, note, self.starved, res.home.append, res)
        finally:  # idle again with its note (interrupted or not)
            if self._noted(lease) and res not in res.home:
                res.home.append(res)

    def _hand_on(
        self,
        queue: deque[int],
        res: Any,
        lease: Lease[Any, Any],
        fulfil: Callable[[Any], None],
        answer: list[Any],
    ) -> bool:
        """Hand `res` to the first caller in `queue`, whose reply this checkin
        claimed: its number taken and its `GIVEN` note here, its answer put in
        `answer` for `checkin` to give once the lock is released -- the
        caller's own later notes follow that one. Once claimed, the caller is
        answered whatever interrupts this.

        Settling wakes the caller's thread, and on a busy CPU the scheduler
        may switch to it at once: outside the lock, every other caller keeps
        going meanwhile (py-spy, the 24 x 8 PostgreSQL shape: a third of the
        pool's samples holding the GIL were that wake-up, under the lock).
        """
        given = self.lease(lease.key, res)
        answer += (fulfil, given)  # settles only: a user's callback runs elsewhere
        note = (GIVEN, res, lease, given, queue[0])
        try:  # (cut short before its `popleft`, the number left is stale:
            queue.popleft()  # a checkin's claim of it finds it settled)
            return self._post(note, False)
        finally:
            if not self._noted(lease) and self._add(self.notes, note, False):
                self.wake()

    def _post(self, note: tuple[Any, ...], urgent: bool) -> bool:
        """Append `note` and ring: whether this caller must wake the supervisor."""
        return self._add(self.notes, note, urgent)

    def _add(self, items: deque[Any], item: Any, urgent: bool, *also: Any) -> bool:
        """Append `item` (and call `also`, a built-in and its argument, at
        once) and ring; interrupted past the append, it wakes the supervisor
        itself if it rang."""
        before, was = len(items), self.noted
        try:
            if also:
                _together(items.append, item, *also)
            else:
                items.append(item)
            return self._ring(urgent)
        except BaseException:
            # Appended, and the doorbell rung by this call (now or before the
            # interrupt): the wake is this caller's to send.
            if len(items) > before and (self._ring(urgent) or was != self.noted):
                self.wake()
            raise
