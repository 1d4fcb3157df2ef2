"""The counter's state, and the supervisor's side of it (see `_counter`).

The counter is `_counter.Counter`; its state is declared here, in `_State`,
with the methods the core calls while the shell holds the counter's lock
(`drain`, `poll`, `show`, `hide`, ...), and the vocabulary the counter and
the core share: `MISS`, the doorbell's states, the kinds of note callers
leave, `_together`. The callers' side is `_counter_blocks.Blocks` (the block
path) and `_counter.Counter` (everything else). Like the rest of the
counter, this module imports no threading: the lock and the shell's hooks
are injected.
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from pooler_actors.lease import Lease

__all__ = [
    "ASK",
    "BACK",
    "BROKEN",
    "CHECKINS",
    "GIVEN",
    "HANDOVER",
    "HIT",
    "IN",
    "MISS",
    "OUT",
    "POLL",
    "POLLING",
    "QUIET",
    "SPOILT",
    "WOKEN",
]

POLL = 0.005
"""How often, in seconds, the supervisor reads notes while `POLLING`: a few
milliseconds of lag for stats and idle times, against a thread switch per
lease cycle when callers wake it instead."""

MISS: Any = object()
"""The counter could not serve this request: ask the supervisor."""

QUIET, POLLING, WOKEN = 0, 1, 2
"""The doorbell (`Counter.noted`): the next note wakes the supervisor
(`QUIET`); it reads the notes every `POLL` seconds, so only an urgent note
wakes it (`POLLING`); a `Notes` message is on its way (`WOKEN`)."""

# The kinds of note callers leave, read by `PoolCore.notes`:
#
# `(HIT, key, context)`: an `acquire()` got `key`'s open resource (noted so
# only with debug on; else its key goes in `hits`).
# `(OUT, res, context, lease)`: a checkout took `res` (exclusive: from its
# idle list; shared: with a token in `res.tokens`).
# `(IN, res, lease)`: a lease of `res` was checked in (exclusive: `res` is
# back in its idle list; shared: its token is gone).
# `(HANDOVER, res, lease)`: an exclusive lease was checked in, and `res` left
# to the core (callers wait for it, or it retired).
# `(BROKEN, res, lease)`: a lease was checked in as broken (exclusive: `res`
# left to the core).
# `(BACK, res)`: a checkout found `res` retired and left it unused.
# `(GIVEN, res, lease, given, cid)`: `lease` was checked in, and `res` handed
# on to queued caller `cid` as `given` (`Counter._hand_on`).
# `(ASK, key, cid, since, timeout, context, queue)`: a checkout of `key`
# queued itself in `queue` as `cid` (`Counter.enqueue`).
# `(SPOILT, res, lid, reason)`: a block left `res` broken (`_counter_blocks`).
HIT, OUT, IN, BACK = "hit", "out", "in", "back"
HANDOVER, BROKEN, GIVEN, ASK = "handover", "broken", "given", "ask"
SPOILT = "spoilt"
CHECKINS = frozenset((IN, HANDOVER, BROKEN))  # the kinds a checkin leaves


#: What `drain` hands the core: notes, hits, resources blocks left, blocks entered.
Drained = tuple[list[tuple[Any, ...]], list[Any], list[Any], int]


def _together(
    first: Callable[[Any], Any], x: Any, then: Callable[[Any], Any], y: Any
) -> None:
    """`first(x)` and `then(y)` (built-ins) with no bytecode between them: an
    interrupt lands before or after both (callers still undo a partial step:
    the simulation's calls are not built-in). Called as `map` calls them, in
    C, without a `partial` each: a lease cycle makes two of these."""
    deque(map(operator.call, (first, then), (x, y)), 0)


def _nobody(_cid: int) -> None:
    """`Counter.claim` until the shell sets its own: no reply to claim."""
    return None


def _nothing() -> None:
    """`Counter.wake` until the shell sets its own."""


def _no_context() -> dict[str, Any]:
    return {}


class _State:
    """The counter's state, and the supervisor's side of it: what the core
    changes and reads while the shell holds the lock (see the module
    docstring). `Blocks` and `Counter` add the callers' side."""

    __slots__ = (
        "claim",
        "closed",
        "context",
        "debug_on",
        "direct",
        "entered",
        "exclusive",
        "full",
        "hits",
        "idle",
        "lids",
        "lock",
        "noted",
        "notes",
        "on_lost",
        "origins",
        "pool_id",
        "queue",
        "register",
        "shared",
        "single",
        "starved",
        "used",
        "view",
        "waiting",
        "wake",
    )

    def __init__(
        self,
        pool_id: object,
        *,
        exclusive: bool,
        shared: bool,
        direct: bool = False,
        single: bool = False,
    ) -> None:
        self.pool_id = pool_id
        #: The one lock (invariant 1): the shell's, set before callers come.
        self.lock: AbstractContextManager[Any] = nullcontext()
        #: Leases are exclusive (`max_holders=1`): checkins go to idle lists.
        self.exclusive = exclusive
        #: One resource per key, any number of holders: `view` is kept.
        self.shared = shared
        #: Shared mode: key -> its open resource's record.
        self.view: dict[Hashable, Any] = {}
        #: Exclusive mode: key -> its list of idle resources (KeyEntry.idle).
        self.idle: dict[Hashable, list[Any]] = {}
        #: Keys with callers queued in the core: the counter stays out of them.
        self.waiting: set[Hashable] = set()
        #: Callers wait for a slot (a reclaim may serve them): checkins are urgent.
        self.starved = False
        #: Every slot under the cap is taken: no creation can start now, so a
        #: checkout of a known key with nothing idle may queue itself even
        #: with `max_per_key > 1` (the core reads it before a slot frees).
        self.full = False
        #: Exclusive mode: key -> its queued callers' numbers (cids), in order.
        self.queue: dict[Hashable, deque[int]] = {}
        #: A checkout may queue itself in `queue` (exclusive, no `max_waiting`).
        self.direct = direct
        #: `max_per_key == 1`: a known key with nothing idle has its resource
        #: in use (or coming), so a checkout may queue itself.
        self.single = single
        #: The pool's name once it has stopped: notes are read no more.
        self.closed: str | None = None
        #: What callers did here, for the core.
        self.notes: deque[tuple[Any, ...]] = deque()
        #: Keys of hits with no debug context: the cheapest note of all.
        self.hits: deque[Hashable] = deque()
        #: The block path (`_counter_blocks`): blocks entered since the core
        #: last read it, and the shared resources blocks left (records, once).
        self.entered = 0
        self.used: dict[Any, None] = {}
        #: The doorbell: `QUIET`, `POLLING`, `WOKEN`.
        self.noted = QUIET
        # The shell's hooks (`wake` runs after the lock is released but for an
        # interrupted note; `claim`/`register` take only a future's own lock).
        self.wake: Callable[[], None] = _nothing
        self.claim: Callable[[int], Callable[[Any], None] | None] = _nobody
        self.register: Callable[[], tuple[int, Any]] | None = None
        self.context: Callable[[], dict[str, Any]] = _no_context
        #: Notes carry the caller's context (the core's debug flag, each event).
        self.debug_on = True
        #: The last lease id given out (every lease of the pool is made here).
        self.lids = 0
        #: Where leases were checked out (`leak_warning_after` on): id -> stack.
        self.origins: dict[int, str] = {}
        #: Given to every lease made here: called if it is collected while out.
        self.on_lost: Callable[[Lease[Any, Any]], None] | None = None

    def lease(self, key: Hashable, res: Any) -> Lease[Any, Any]:
        """A new lease of `res` (its record), with an id of its own, found
        again if it is lost (under the lock: a caller's or the core's)."""
        self.lids += 1
        return Lease.issue(
            key, res.obj, self.pool_id, res.rid, self.lids, res, self.on_lost
        )

    def _ring(self, urgent: bool) -> bool:
        """Whether this caller must wake the supervisor (a `Notes` message)."""
        if self.noted < (WOKEN if urgent else POLLING):
            self.noted = WOKEN
            return True
        return False

    # --- the supervisor's side ------------------------------------------------

    def _unread(self) -> bool:
        return bool(self.notes or self.hits or self.used or self.entered)

    def polling(self) -> bool:
        """Whether the supervisor reads notes every `POLL` (not only when woken)."""
        with self.lock:
            return self.noted != QUIET

    def drain(self, *, woken: bool = False) -> Drained:
        """The notes, hits and block path's uses (`used`, `entered`) so far,
        for the core's `notes`; `woken`: a `Notes` message (the supervisor
        polls from now on: only urgent notes wake it)."""
        if woken:
            self.noted = POLLING
        notes, hits, used = list(self.notes), list(self.hits), list(self.used)
        entered, self.entered = self.entered, 0
        self.notes.clear()
        self.hits.clear()
        self.used.clear()
        return notes, hits, used, entered

    def poll(self) -> Drained:
        """What came while the mailbox stayed empty for `POLL` (`drain`); if
        nothing came, callers wake the supervisor from now on."""
        if self.noted == WOKEN:  # its `Notes` message is late, or lost to an
            self.noted = POLLING  # interrupt: a look now is as good
        elif self.noted == POLLING and not self._unread():
            self.noted = QUIET
        return self.drain()

    def known(self, key: Hashable, idle: list[Any], queue: deque[int]) -> None:
        """Exclusive: `key`'s idle list and queue (the core's), shared now."""
        self.idle[key] = idle
        self.queue[key] = queue

    def unknown(self, key: Hashable) -> None:
        """`key` has no resource and no caller left."""
        self.idle.pop(key, None)
        self.queue.pop(key, None)

    def show(self, key: Hashable, res: Any) -> None:
        """Shared: `res` is `key`'s open resource for hits now (`None`: none)."""
        if self.shared and res is None:
            self.view.pop(key, None)
        elif self.shared:
            self.view[key] = res

    def hide(self, res: Any) -> bool:
        """Shared: `res` out of service for a reclaim, unless a plain
        `acquire()` got it (never reclaimed then): whether it was."""
        if res.handed_out:
            return False
        res.retired = True
        key = res.key
        if self.view.get(key) is res:
            del self.view[key]
        return True

    def mark_waiting(self, key: Hashable, waiting: bool) -> None:
        """Callers of `key` are queued in the core (or no more): none passed."""
        (self.waiting.add if waiting else self.waiting.discard)(key)

    def starve(self, starved: bool, full: bool) -> None:
        """Callers wait for a slot (or no more): a checkin is urgent news;
        `full`: every slot is taken (or no more)."""
        self.starved = starved
        self.full = full

    def shut(self, name: str) -> None:
        """The pool `name` stopped: a checkout would queue itself in vain."""
        self.closed = name

    def origin(self, lid: int) -> str | None:
        """Where lease `lid` was checked out, if known."""
        return self.origins.get(lid)

    def forget(self) -> None:
        """After a fork, in the child: nothing of the parent's to take."""
        self.view.clear()
        self.idle.clear()
