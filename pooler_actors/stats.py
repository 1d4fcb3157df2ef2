"""A snapshot of a pool's gauges and cumulative counters.

Each field is declared once, below, with its kind (gauge or counter) and its
help text; [GAUGES][pooler_actors.stats.GAUGES],
[COUNTERS][pooler_actors.stats.COUNTERS] and [HELP][pooler_actors.stats.HELP]
(used by the Prometheus collector) are derived from those declarations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["COUNTERS", "GAUGES", "HELP", "Stats"]


def _gauge(help_: str, default: Any = 0) -> Any:
    return field(default=default, metadata={"kind": "gauge", "help": help_})


def _counter(help_: str, default: Any = 0) -> Any:
    return field(default=default, metadata={"kind": "counter", "help": help_})


@dataclass(frozen=True, slots=True)
class Stats:
    """What the pool holds now (gauges), and what it has done since it started
    (counters, which only grow and count every call, failed ones included)."""

    # The Go package's four fields.
    max_open_resources: int = _gauge("The cap on resources that exist at once.")
    open_resources: int = _gauge(
        "Resources that exist: reserving, being created, open, retiring or "
        "being closed (what the cap counts)."
    )
    wait_count: int = _gauge("Callers waiting now for a slot or a holder place.")
    wait_duration: float = _counter(
        "Total seconds waiting callers spent blocked, from request to answer.", 0.0
    )

    creating: int = _gauge("Resources whose factory is running (or about to retry).")
    open: int = _gauge("Resources ready to be handed out (in the key map).")
    retiring: int = _gauge("Resources out of the key map, waiting for their holders.")
    closing: int = _gauge("Resources whose close() was asked for and has not finished.")
    holders: int = _gauge("Leases out now.")
    max_wait: float = _gauge("The longest single wait of a caller, in seconds.", 0.0)
    global_held: int = _gauge("Fleet-wide slots this pool holds.")
    global_waiting: int = _gauge("Creations waiting for a fleet-wide slot.")

    acquires: int = _counter("Acquire and Checkout requests received.")
    hits: int = _counter("Requests answered at once from an open resource.")
    joins: int = _counter("Requests that joined a creation already in flight.")
    created: int = _counter("Resources the factory made successfully.")
    factory_errors: int = _counter(
        "Creations that failed: the factory raised (after its retries), returned "
        "a non-Reusable or hung."
    )
    create_retries: int = _counter("Factory calls retried after a failure.")
    waits: int = _counter("Requests that had to wait for a slot or a holder place.")
    timeouts: int = _counter("Requests that timed out or were given up by the caller.")
    rejected: int = _counter("Requests refused because max_waiting callers waited.")
    checkouts: int = _counter("Leases granted.")
    releases: int = _counter("Resources retired by Release or ReleaseAll.")
    broken: int = _counter("Leases checked in as broken.")
    reclaimed: int = _counter("Idle resources closed to make room for waiters.")
    drain_timeouts: int = _counter("Retiring resources closed with holders left.")
    health_checks: int = _counter("Health checks run.")
    health_evictions: int = _counter("Resources evicted: ping() raised or timed out.")
    global_lost: int = _counter("Resources evicted because their fleet slot was lost.")
    abandoned: int = _counter("Resources whose actor got stuck in user code.")
    close_errors: int = _counter("close() calls that raised.")
    lifetime_expired: int = _counter("Resources retired at max_lifetime.")
    idle_expired: int = _counter("Resources retired after max_idle_time unused.")
    prewarmed: int = _counter("Resources created by Prewarm.")
    refreshed: int = _counter("Refresh requests of an open key.")

    @property
    def waiting(self) -> int:
        """Alias of `wait_count`."""
        return self.wait_count

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as a plain `dict` of field name to value."""
        return asdict(self)


GAUGES: tuple[str, ...] = tuple(
    f.name for f in fields(Stats) if f.metadata["kind"] == "gauge"
)
"""Names of the [Stats][pooler_actors.Stats] fields that describe this instant."""

COUNTERS: tuple[str, ...] = tuple(
    f.name for f in fields(Stats) if f.metadata["kind"] == "counter"
)
"""Names of the [Stats][pooler_actors.Stats] fields that only grow."""

HELP: dict[str, str] = {f.name: f.metadata["help"] for f in fields(Stats)}
"""One line of help per [Stats][pooler_actors.Stats] field."""
