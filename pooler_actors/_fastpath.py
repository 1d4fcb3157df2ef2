"""The hit path: a request served in the caller's own thread, no round trip.

The core publishes ([Published][pooler_actors._core.Published]) what a caller
may take without asking: in shared mode the open resource of each key (for
`acquire()`), in exclusive mode (`max_holders=1`) each key's list of idle
resources. A caller that finds what it needs there takes it, leaves a note of
what it did, and makes sure a `Notes` message is on its way; the supervisor
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
   (`waiting`), the hit path neither takes from nor gives back to its idle
   list, so the core hands freed resources out in FIFO order. A caller that
   read `waiting` before a caller was queued arrived before it.
6. A note is appended before `noted` is read; the supervisor clears `noted`
   before it drains the notes. So every note is drained by the `Notes`
   message in flight or by the one its own caller sends, and at most one
   message per racing caller is queued: the mailbox stays bounded however
   many hits there are.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from structlog.contextvars import get_contextvars

from pooler_actors._core import BACK, HIT, IN, OUT, Published
from pooler_actors.lease import Lease

__all__ = ["MISS", "checkin", "checkout", "drain", "hit"]

MISS: Any = object()
"""The hit path could not serve this request: ask the supervisor."""

Probe = Callable[[], bool]
Wake = Callable[[], None]


def _note(pub: Published, note: tuple[Any, ...], wake: Wake) -> None:
    pub.notes.append(note)
    if not pub.noted:  # rule 6: read after the append
        pub.noted = True
        wake()


def _context(debug: Probe) -> dict[str, Any] | Any | None:
    """The caller's context for a debug event; `MISS` if debug is unknown."""
    on = debug()
    if on is None:
        return MISS  # logging was reconfigured: let the supervisor probe it
    return get_contextvars() if on else None


def hit(pub: Published, key: Hashable, debug: Probe, wake: Wake) -> Any:
    """`acquire(key)` of an open key in shared mode; `MISS` otherwise."""
    try:
        resource = pub.view[key]
    except (KeyError, TypeError):  # not open, or unhashable (asking says so)
        return MISS
    _note(pub, (HIT, key, _context(debug)), wake)
    return resource


def checkout(pub: Published, key: Hashable, debug: Probe, wake: Wake) -> Any:
    """An exclusive checkout of an idle resource of `key`; `MISS` otherwise."""
    try:
        if key in pub.waiting:  # rule 5
            return MISS
        idle = pub.idle.get(key)
    except TypeError:
        return MISS
    if not idle:
        return MISS
    context = _context(debug)
    try:
        res = idle.pop()  # rule 3
    except IndexError:
        return MISS
    if res.retired:  # rule 4
        _note(pub, (BACK, res), wake)
        return MISS
    _note(pub, (OUT, res, context), wake)
    return Lease(key, res.obj, pool=pub.pool_id, rid=res.rid, lid=0, handle=res)


def checkin(pub: Published, lease: Lease[Any, Any], wake: Wake) -> Any:
    """Give an exclusive lease back to its idle list; `MISS`: ask instead."""
    res = lease.handle
    if (
        not pub.exclusive
        or lease.pool is not pub.pool_id
        or res is None
        or getattr(res, "retired", True)
        or lease.key in pub.waiting  # rule 5
    ):
        return MISS
    if not lease.claim_checkin():
        return False
    res.home.append(res)  # type: ignore[attr-defined]
    _note(pub, (IN, res), wake)
    return True


def drain(pub: Published) -> list[tuple[Any, ...]]:
    """The notes left so far (supervisor's side of rule 6)."""
    pub.noted = False  # before draining: a note appended after is woken for
    notes = pub.notes
    return [notes.popleft() for _ in range(len(notes))]
