"""The hit path: a request served in the caller's own thread, no round trip.

The core publishes ([Published][pooler_actors._core.Published]) what a caller
may take without asking: in shared mode the open resource of each key (for
`acquire()` and shared leases), in exclusive mode (`max_holders=1`) each
key's list of idle resources. A caller that finds what it needs there takes
it, leaves a note of what it did, and makes sure a `Notes` message is on its
way; the supervisor
feeds the notes to the core, so stats, idle times and events stay exact.
Every operation still reaches the supervisor as a message; the caller just
does not wait for the answer.

The rules that make this safe, each relying only on single operations on
built-in objects being atomic (`dict` lookup, `set` membership, `list.pop`,
`list.append`, `list.remove`, `deque.append`/`popleft`, attribute
reads and writes) — true under the GIL and, per object, on free-threaded
CPython (3.13t/3.14t), whose built-in containers lock internally:

1. Only the core writes `view`, `idle` (the dict) and `waiting`, and it
   updates them within the event that changes them, before any reply of
   that event is sent: a caller that saw a reply (a `release` returned) and
   then looks finds the new state.
2. `view[key]` holds an open, in-service resource. A caller that reads it got
   the resource at that instant, as if its `Acquire` had been served then.
   A resource a plain `acquire()` got is never reclaimed, though its note may
   not be read yet: a caller's first hit on it sets `res.handed_out`, then
   reads `view[key]` again; a reclaim sets `retired`, takes it out of
   `view`, then reads `handed_out` (the order of rule 7). Either the reclaim
   keeps it, or the caller finds it gone and asks. A caller that finds
   `handed_out` set already reads `retired`: the caller that set it may have
   backed off after the reclaim looked.
3. An idle exclusive resource is in exactly one place: its key's idle list,
   a caller's hands, or the core's hands. `pop` and `remove` decide races:
   whoever takes it from the list has it. The core closes, pings, reclaims
   or expires an exclusive resource only once it has taken it (`remove`), or
   after `drain_timeout`.
4. Retiring sets `res.retired` before the core tries to take it. A caller
   re-checks `retired` after its `pop`: if set, the resource is not used but
   left to the core (a `BACK` note). A caller that read `retired` false
   before the flag was set holds it; the core then finds it gone from the
   list and waits for its checkin (`IN`) or hand-back (`BACK`).
5. Queued callers come first: while a key has callers queued in the core
   (`waiting`) or queued on their own (`queue[key]` not empty, exclusive
   mode), the hit path neither takes from its idle list nor gives back to
   it while one can be served, so freed resources go out in FIFO order. A
   caller that read `waiting` and `queue` before a caller was queued
   arrived before it.
6. A note is appended before `noted` is read; a caller that reads it low
   enough sets it to `WOKEN` and wakes the supervisor (a `Notes` message).
   While callers are busy the supervisor polls instead of being woken: on a
   `Notes` message it sets `POLLING` (before it reads the notes), and while
   `POLLING` it reads them every `POLL` seconds and before each message it
   handles. An ordinary note wakes it only when `QUIET`; an urgent one (a
   hand-over, a broken resource, one handed back, a checkin of a retired
   resource, of a key with queued callers, or while callers wait for a slot:
   someone waits on it) whenever it is not `WOKEN`. A poll that
   finds no note sets `QUIET`, then reads the notes once more. So no note is
   stranded, no urgent note waits for a poll, and at most one `Notes`
   message per racing caller is queued: the mailbox stays bounded however
   many hits there are. One caller's notes reach the core before its later
   requests, in its order.
7. Shared leases (`max_holders=None`): a caller appends its lease to
   `res.tokens`, then reads `retired`; the core sets `retired`, then reads
   `tokens`. One of them sees the other (the order of these operations is
   sequentially consistent in CPython): either the caller backs off, or the
   core counts it as a holder and waits for its checkin.
8. Every checkin is a note, never a round trip: the lease's own one-shot
   claim (`Lease.claim_checkin`, a `list.pop`) says whether it is the first.
9. A checkin hands its resource straight to the first caller queued for the
   key (exclusive mode), as the core would, without waking the supervisor
   first. The core puts a queued checkout's number in `queue[key]` and
   takes it out (`remove`) before it serves, joins or fails that caller; a
   checkin takes it with `popleft`: whoever takes the number has the caller.
   The checkin then claims the caller's reply future (`PoolFuture.claim`:
   it fails if the caller gave up, and the next number is tried), appends a
   `GIVEN` note, and only then settles the future: the caller's own later
   notes come after it. A core that finds a number taken leaves that caller
   to its note (or to its withdrawal) and serves the next one.
10. A checkout that must wait may queue itself, without a round trip
    (exclusive mode, no `max_waiting`, a timeout other than 0, and callers
    queued for the key already or one resource per key, `max_per_key=1`,
    so that a known key with nothing idle has its resource in use or on
    its way): it takes a request number and reply future from the shell
    (`register`), appends its number to `queue[key]`, then reads the idle
    list, appends an `ASK` note (urgent if it found a resource idle: a
    checkin that looked at `queue` before the number was there left it
    so), and waits. A checkin may serve it from then on (rule 9), even
    before the core reads the `ASK` note (a `GIVEN` note read first is
    kept for it). The `ASK` note, read before any later message of the
    caller (its withdrawal), tells the core, which takes the number back
    (`remove`) and reads it as a `Checkout` asked then, after serving those
    that notes read before made room for; or, if a checkin took it first,
    leaves the caller to its `GIVEN` note or its withdrawal. The caller
    then reads `closed`; the shell sets `closed`, then fails every grant
    still pending when the pool stops: a caller that queued itself too
    late withdraws, so nobody waits for a pool that reads no more notes.
    A caller interrupted while it queues itself (between its number and
    its note) withdraws its future (the shell made it tell the supervisor):
    no checkin can claim it, and the core drops it; if a checkin served it
    already, its lease goes back (`give_back`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable
from typing import Any

from structlog.contextvars import get_contextvars

from pooler_actors._core import (
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
    Published,
)
from pooler_actors.errors import PoolClosedError
from pooler_actors.lease import Lease

__all__ = [
    "MISS",
    "POLL",
    "checkin",
    "checkout",
    "drain",
    "enqueue",
    "give_back",
    "hit",
    "poll",
]

POLL = 0.005
"""How often, in seconds, the supervisor reads notes while `POLLING` (rule 6):
a few milliseconds of lag for stats and idle times, against a thread switch
per lease cycle when callers wake it instead."""

MISS: Any = object()
"""The hit path could not serve this request: ask the supervisor."""

Probe = Callable[[], bool]
Wake = Callable[[], None]


def _note(
    pub: Published, note: tuple[Any, ...], wake: Wake, urgent: bool = False
) -> None:
    pub.notes.append(note)
    if pub.noted < (WOKEN if urgent else POLLING):  # rule 6: after the append
        pub.noted = WOKEN
        wake()


def _context(debug: Probe) -> dict[str, Any] | None:
    """The caller's context, for the debug event (only when debug is on)."""
    return get_contextvars() if debug() else None


def hit(pub: Published, key: Hashable, debug: Probe, wake: Wake) -> Any:
    """`acquire(key)` of an open key in shared mode; `MISS` otherwise.

    `Pool.acquire` has this inlined (the same steps, one call less).
    """
    try:
        res = pub.view[key]
    except (KeyError, TypeError):  # not open, or unhashable (asking says so)
        return MISS
    if not res.handed_out:  # rule 2: the mark first, then look again
        res.handed_out = True
        if pub.view.get(key) is not res:
            return MISS
    elif res.retired:  # rule 2: its mark may be a caller's that backed off
        return MISS
    if debug():
        pub.notes.append((HIT, key, get_contextvars()))
    else:
        pub.hits.append(key)
    if not pub.noted:  # rule 6: read after the append; QUIET is 0
        pub.noted = WOKEN
        wake()
    return res.obj


def checkout(pub: Published, key: Hashable, debug: Probe, wake: Wake) -> Any:
    """A checkout served here: exclusive from an idle list, shared with a
    token; `MISS` otherwise."""
    try:
        if key in pub.waiting:  # rule 5
            return MISS
        if pub.exclusive:
            return _take_idle(pub, key, debug, wake)
        if pub.shared:
            return _take_shared(pub, key, debug, wake)
    except TypeError:  # unhashable: asking says so
        pass
    return MISS


def _take_idle(pub: Published, key: Hashable, debug: Probe, wake: Wake) -> Any:
    idle = pub.idle.get(key)
    if not idle or pub.queue.get(key):  # rule 5: callers queued themselves
        return MISS
    context = _context(debug)
    try:
        res = idle.pop()  # rule 3
    except IndexError:
        return MISS
    if res.retired:  # rule 4
        _note(pub, (BACK, res), wake, urgent=True)
        return MISS
    lease = Lease(key, res.obj, pool=pub.pool_id, rid=res.rid, lid=0, handle=res)
    _note(pub, (OUT, res, context, lease), wake)
    return lease


def _take_shared(pub: Published, key: Hashable, debug: Probe, wake: Wake) -> Any:
    res = pub.view.get(key)
    if res is None:
        return MISS
    lease = Lease(key, res.obj, pool=pub.pool_id, rid=res.rid, lid=0, handle=res)
    tokens = res.tokens
    tokens.append(lease)  # rule 7: the token first...
    if res.retired:  # ...then the flag
        tokens.remove(lease)
        _note(pub, (BACK, res), wake, urgent=True)
        return MISS
    _note(pub, (OUT, res, get_contextvars() if debug() else None, lease), wake)
    return lease


def enqueue(
    pub: Published, key: Hashable, timeout: float | None, since: float, wake: Wake
) -> Any:
    """A checkout of `key`, whose callers are queued, queued without a round
    trip (rule 10): its reply future; `MISS` if it must ask instead."""
    if not pub.direct or timeout == 0 or pub.register is None:
        return MISS
    try:
        queue = pub.queue.get(key)
    except TypeError:  # unhashable: asking says so
        return MISS
    if queue is None or not (queue or pub.single or key in pub.waiting):
        return MISS  # an unknown key, or one that may need a new resource
    cid, future = pub.register()
    context = get_contextvars()
    try:
        queue.append(cid)  # rule 10: visible to checkins now, then its note
        # A checkin that looked at `queue` before the append left its
        # resource idle: then the core serves this caller, at once.
        urgent = bool(pub.idle.get(key))
        _note(pub, (ASK, key, cid, since, timeout, context, queue), wake, urgent)
    except BaseException as error:  # interrupted (Ctrl-C): it gives up
        # Withdrawn, no checkin serves it and the core drops it; served by a
        # checkin already, its lease goes back: nothing is left behind.
        if not future.withdraw(error):
            give_back(pub, future, wake)
        raise
    if pub.closed is not None:  # the pool stopped: nobody reads the note
        future.withdraw(PoolClosedError(pub.closed))
    return future


def give_back(pub: Published, future: Any, wake: Wake) -> None:
    """Check in the lease `future` is or will be settled with, if it is one:
    its caller will not take it (it gave up just as it was granted)."""

    def back(settled: Any) -> None:
        with contextlib.suppress(BaseException):
            lease = settled.get(timeout=0)
            if isinstance(lease, Lease):
                checkin(pub, lease, False, wake)

    future.add_done_callback(back)


def checkin(pub: Published, lease: Lease[Any, Any], broken: bool, wake: Wake) -> bool:
    """Give a lease back, here: never a round trip; `False` if it was given
    back already.

    Raises:
        ValueError: the lease is of another pool.
    """
    if lease.pool is not pub.pool_id:
        raise ValueError(f"{lease!r} was not granted by this pool")
    if not lease.claim_checkin():
        return False
    res: Any = lease.handle
    if pub.exclusive:
        if broken:
            _note(pub, (BROKEN, res, lease), wake, urgent=True)
        elif res.retired:  # rule 4
            _note(pub, (HANDOVER, res, lease), wake, urgent=True)
        elif lease.key in pub.waiting or pub.queue.get(lease.key):  # rule 5
            if _hand_on(pub, res, lease, wake):
                pass
            elif lease.key in pub.waiting:
                _note(pub, (HANDOVER, res, lease), wake, urgent=True)
            else:  # only callers that gave up had queued themselves
                res.home.append(res)
                _note(pub, (IN, res, lease), wake, urgent=pub.starved)
        else:
            res.home.append(res)  # rule 3: idle again
            # Callers waiting for a slot may get it by a reclaim: urgent.
            _note(pub, (IN, res, lease), wake, urgent=pub.starved)
        return True
    try:  # noqa: SIM105 - contextlib.suppress costs more on this hot path
        res.tokens.remove(lease)  # a hit-path lease of a shared pool
    except ValueError:
        pass  # granted by the core: counted there
    # Someone waits on it: a holder place, a close, a reclaim.
    urgent = broken or res.retired or lease.key in pub.waiting or pub.starved
    _note(pub, (BROKEN if broken else IN, res, lease), wake, urgent)
    return True


def _hand_on(pub: Published, res: Any, lease: Lease[Any, Any], wake: Wake) -> bool:
    """Hand `res` to the first caller queued for its key (rule 9); `False` if
    none is left to take it."""
    queue = pub.queue.get(lease.key)
    while queue:
        try:
            cid = queue.popleft()  # rule 9: whoever takes the number serves it
        except IndexError:
            return False
        fulfil = pub.claim(cid)
        if fulfil is None:
            continue  # it gave up: its withdrawal reaches the core
        key = lease.key
        given = Lease(key, res.obj, pool=pub.pool_id, rid=res.rid, lid=0, handle=res)
        try:
            _note(pub, (GIVEN, res, lease, given, cid), wake)
        finally:  # the caller waits for this, whatever happens here
            fulfil(given)
        return True
    return False


def drain(
    pub: Published, *, woken: bool = False
) -> tuple[list[tuple[Any, ...]], list[Hashable]]:
    """The notes and hits left so far, for the supervisor; `woken` when it
    handles a `Notes` message (rule 6)."""
    if woken:
        pub.noted = POLLING  # before draining: an urgent note after wakes us
    notes, hits = pub.notes, pub.hits
    return (
        [notes.popleft() for _ in range(len(notes))],
        [hits.popleft() for _ in range(len(hits))],
    )


def poll(pub: Published) -> tuple[list[tuple[Any, ...]], list[Hashable]]:
    """The notes and hits that came while the supervisor's mailbox stayed
    empty for `POLL`; if none came, callers wake it from now on (rule 6)."""
    if pub.noted == POLLING and not (pub.notes or pub.hits):
        pub.noted = QUIET  # then look once more: a note may have come since
    return drain(pub)
