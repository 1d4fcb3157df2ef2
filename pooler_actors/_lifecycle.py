"""A resource's lifecycle: its phases and every legal transition, in one table.

Part of the pure core: no threads, no clock, no I/O. The core moves a resource
only through [advance][pooler_actors._lifecycle.advance], which raises on an
edge the table does not list, so an impossible sequence of reports is a loud
bug instead of a silently corrupted pool.

    RESERVING --granted--> CREATING --ready--> OPEN --drain--> RETIRING
    RESERVING --cancelled--> GONE          OPEN --close--> CLOSING
    CREATING --failed--> GONE              RETIRING --close--> CLOSING
    CREATING --timed_out--> ABANDONED      CLOSING --closed--> GONE
    ABANDONED --closed--> GONE             CLOSING --timed_out--> ABANDONED
    CREATING --backoff--> BACKOFF --retry--> CREATING
    BACKOFF --failed--> GONE
    CREATING --standby--> STANDBY --swap--> OPEN  (a refresh's replacement)
    CREATING, OPEN, RETIRING --closed--> GONE  (the actor stopped unasked)

A refresh's replacement is made as any creation is (RESERVING, CREATING,
BACKOFF and their edges), in the key map beside the resources it is to
replace (its `replaces`). Ready, it takes `standby` to STANDBY, serves the
callers that joined its creation, and is swapped in in the same event:
`swap` to OPEN, and what it replaces retires. STANDBY has no other way out,
as nothing can happen to a resource between the two edges. A refresh given
up before its replacement is ready (its key released, the pool closing, the
replacement lost, or no fleet slot for it in time) leaves a plain creation:
its own creation edges end it, or `ready` opens it as any other.

A resource counts toward the cap from RESERVING to CLOSING (BACKOFF, between
two tries of its factory, and STANDBY included). ABANDONED (its
actor is stuck in user code) frees the local slot but keeps a global one, if
it holds one, until the actor really ends. GONE is the one exit.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["COUNTED", "TRANSITIONS", "IllegalTransition", "Phase", "advance"]


class Phase(Enum):
    """Where a resource is in its life."""

    # Members are singletons, compared by identity: hash them so, in C (the
    # Enum default hashes the name in Python, a call per set or dict lookup).
    __hash__ = object.__hash__

    RESERVING = "reserving"  # waiting for a fleet-wide slot before the factory runs
    CREATING = "creating"  # the factory runs
    BACKOFF = "backoff"  # a factory try failed; the next waits its delay
    STANDBY = "standby"  # a refresh's replacement, ready; swapped in at once
    OPEN = "open"  # ready; handed out while it is in the key map
    RETIRING = "retiring"  # out of the key map, waiting for its holders
    CLOSING = "closing"  # close() asked for, not finished
    ABANDONED = "abandoned"  # its actor is stuck in user code; slot freed
    GONE = "gone"  # closed, failed or cancelled: the one exit


#: The phases that take a slot under ``max_open_resources``.
COUNTED = frozenset(
    {
        Phase.RESERVING,
        Phase.CREATING,
        Phase.BACKOFF,
        Phase.STANDBY,
        Phase.OPEN,
        Phase.RETIRING,
        Phase.CLOSING,
    }
)

TRANSITIONS: dict[tuple[Phase, str], Phase] = {
    (Phase.RESERVING, "granted"): Phase.CREATING,
    (Phase.RESERVING, "cancelled"): Phase.GONE,
    (Phase.CREATING, "ready"): Phase.OPEN,
    (Phase.CREATING, "standby"): Phase.STANDBY,  # ready, a refresh's replacement
    (Phase.CREATING, "failed"): Phase.GONE,
    (Phase.CREATING, "timed_out"): Phase.ABANDONED,
    (Phase.CREATING, "closed"): Phase.GONE,  # its actor stopped unasked
    (Phase.CREATING, "backoff"): Phase.BACKOFF,  # a try failed; one more to go
    (Phase.BACKOFF, "retry"): Phase.CREATING,
    (Phase.BACKOFF, "failed"): Phase.GONE,  # nobody wants it, or no slot any more
    (Phase.STANDBY, "swap"): Phase.OPEN,  # what it replaces retires
    (Phase.OPEN, "drain"): Phase.RETIRING,
    (Phase.OPEN, "close"): Phase.CLOSING,
    (Phase.OPEN, "closed"): Phase.GONE,  # its actor stopped unasked
    (Phase.RETIRING, "close"): Phase.CLOSING,
    (Phase.RETIRING, "closed"): Phase.GONE,  # its actor stopped unasked
    (Phase.RETIRING, "left"): Phase.ABANDONED,  # the pool closed: its holders'
    (Phase.CLOSING, "closed"): Phase.GONE,
    (Phase.CLOSING, "timed_out"): Phase.ABANDONED,
    (Phase.ABANDONED, "closed"): Phase.GONE,
}
"""``(phase, event) -> next phase``: every edge a resource may take."""


class IllegalTransition(RuntimeError):
    """The core tried to move a resource along an edge the table does not have."""


def advance(phase: Phase, event: str) -> Phase:
    """The phase after ``event`` in ``phase``; raise on an illegal edge."""
    try:
        return TRANSITIONS[phase, event]
    except KeyError:
        raise IllegalTransition(
            f"no transition from {phase.value!r} on {event!r}"
        ) from None
