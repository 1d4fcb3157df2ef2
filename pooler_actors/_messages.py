"""Internal messages: resource actors, timers and callers to the supervisor.

Every report from a resource actor carries the resource id (`rid`) and the
factory try (`attempt`) it was started with; the core ignores a report that
does not match what it tracks, so a late report from an old actor never
touches a newer one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Ready:
    """Resource actor → supervisor: the factory returned `resource`."""

    rid: int
    attempt: int
    resource: Any


@dataclass(frozen=True, slots=True)
class Failed:
    """Resource actor → supervisor: the factory raised or returned a non-Reusable."""

    rid: int
    attempt: int
    error: BaseException


@dataclass(frozen=True, slots=True)
class Closed:
    """Resource actor → supervisor: the actor ended; `error` if `close()` raised."""

    rid: int
    attempt: int
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class Ping:
    """Supervisor → resource actor: run `ping()` and report `PingResult`."""

    seq: int


@dataclass(frozen=True, slots=True)
class PingResult:
    """Resource actor → supervisor: the outcome of `Ping(seq)`."""

    rid: int
    seq: int
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class HealthTick:
    """Anyone → supervisor: run a health check now."""


@dataclass(frozen=True, slots=True)
class Resume:
    """Supervisor → itself: go on with work left for later (a sweep's pings)."""


@dataclass(frozen=True, slots=True)
class Withdraw:
    """Caller → supervisor: the caller behind `future` gave up waiting."""

    future: Any


@dataclass(frozen=True, slots=True)
class GlobalGranted:
    """Capacity thread → supervisor: a fleet slot for `rid` (or none needed)."""

    rid: int
    held: bool


@dataclass(frozen=True, slots=True)
class GlobalUnavailable:
    """Capacity thread → supervisor: the engine is unreachable for `rid`."""

    rid: int
    error: BaseException


@dataclass(frozen=True, slots=True)
class GlobalLost:
    """Capacity thread → supervisor: `rid`'s fleet lease was lost."""

    rid: int


@dataclass(frozen=True, slots=True)
class Notes:
    """Counter → supervisor: callers left notes (see `_counter`)."""


@dataclass(frozen=True, slots=True)
class LeaseLost:
    """A lease collected without a checkin (`Lease.__del__`) → supervisor."""

    lease: Any


@dataclass(frozen=True, slots=True)
class Shutdown:
    """A facade (or the exit hook) → supervisor: close the pool, waiting up to
    `wait` seconds for holders; then leases still out are left to their
    holders (each resource closed at its checkin). Reply: `None` once the
    pool has stopped."""

    wait: float
