"""Internal messages between the supervisor, its resource actors and timers.

Every report from a resource actor carries the resource id (``rid``) it was
started with; the supervisor ignores a report whose id it no longer tracks, so
a late report from an old actor of a released key never touches a newer one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pooler_actors._future import PoolFuture


@dataclass(frozen=True, slots=True)
class Ready:
    """Resource actor → supervisor: the factory returned ``resource``."""

    rid: int
    resource: Any


@dataclass(frozen=True, slots=True)
class Failed:
    """Resource actor → supervisor: the factory raised or returned a non-Reusable."""

    rid: int
    error: BaseException


@dataclass(frozen=True, slots=True)
class Closed:
    """Resource actor → supervisor: closed (``error`` if ``close()`` raised)."""

    rid: int
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class Ping:
    """Supervisor → resource actor: run ``ping()`` and report ``PingResult``."""

    seq: int


@dataclass(frozen=True, slots=True)
class PingResult:
    """Resource actor → supervisor: the outcome of ``Ping(seq)``."""

    rid: int
    seq: int
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class HealthTick:
    """Ticker → supervisor: time for a health check."""


@dataclass(frozen=True, slots=True)
class Withdraw:
    """Caller → supervisor: the caller behind ``future`` gave up waiting."""

    future: PoolFuture[Any]
