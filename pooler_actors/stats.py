"""A snapshot of a pool's gauges and cumulative counters."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["COUNTERS", "GAUGES", "Stats"]


@dataclass(frozen=True, slots=True)
class Stats:
    """What the pool holds now, and what it has done since it started.

    Gauges describe this instant; counters only grow. Every counter counts
    every call, failed ones included.
    """

    # The Go package's four fields.
    max_open_resources: int
    """The cap on resources that exist at once."""
    open_resources: int
    """Resources that exist: being created, open or being closed (``<=`` cap)."""
    wait_count: int
    """Callers queued for a free slot now (the ``waiting`` gauge)."""
    wait_duration: float
    """Total seconds queued callers spent blocked, from ``Acquire`` to answer."""

    # Gauges.
    creating: int = 0
    """Resources whose factory is running."""
    open: int = 0
    """Resources created and ready to be handed out."""
    closing: int = 0
    """Resources whose ``close()`` has been asked for and has not finished."""
    max_wait: float = 0.0
    """The longest single wait of a queued caller, in seconds."""

    # Cumulative counters.
    acquires: int = 0
    """``Acquire`` messages received."""
    hits: int = 0
    """Acquires answered at once from an open resource."""
    joins: int = 0
    """Acquires that joined a creation already in flight for their key."""
    created: int = 0
    """Resources the factory made successfully."""
    factory_errors: int = 0
    """Factory calls that raised, returned a non-``Reusable`` or timed out."""
    waits: int = 0
    """Acquires that queued for a free slot."""
    timeouts: int = 0
    """Acquires that ended with ``AcquireTimeout`` or were given up by the caller."""
    rejected: int = 0
    """Acquires refused with ``TooManyWaiters``."""
    releases: int = 0
    """Resources closed by ``Release`` or ``ReleaseAll``."""
    health_checks: int = 0
    """Health checks run."""
    health_evictions: int = 0
    """Resources evicted because ``ping()`` raised or timed out."""
    abandoned: int = 0
    """Resources whose actor got stuck in user code and was given up on."""
    close_errors: int = 0
    """``close()`` calls that raised."""
    lifetime_expired: int = 0
    """Resources closed because they reached ``max_lifetime``."""
    idle_expired: int = 0
    """Resources closed because they were idle for ``max_idle_time``."""
    prewarmed: int = 0
    """Resources created by ``Prewarm``."""
    refreshed: int = 0
    """``Refresh`` requests of an open key (counted when they start)."""

    @property
    def waiting(self) -> int:
        """Alias of :attr:`wait_count`."""
        return self.wait_count

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as a plain ``dict`` of field name to value."""
        return asdict(self)


GAUGES: tuple[str, ...] = (
    "max_open_resources",
    "open_resources",
    "wait_count",
    "creating",
    "open",
    "closing",
    "max_wait",
)
"""Names of the :class:`Stats` fields that describe this instant."""

COUNTERS: tuple[str, ...] = (
    "wait_duration",
    "acquires",
    "hits",
    "joins",
    "created",
    "factory_errors",
    "waits",
    "timeouts",
    "rejected",
    "releases",
    "health_checks",
    "health_evictions",
    "abandoned",
    "close_errors",
    "lifetime_expired",
    "idle_expired",
    "prewarmed",
    "refreshed",
)
"""Names of the :class:`Stats` fields that only grow."""
