"""``make demo``: a pool of real sqlite3 connections, keyed by tenant.

Eight tenants share a pool capped at three connections. The main thread keeps
the ``acme`` connection open, six client threads run real queries against the
seven other tenants (so most of them queue for one of the two free slots),
and the ``acme`` connection is broken behind the pool's back: the next health
check finds ``SELECT 1`` failing, evicts it and hands its slot to a waiting
client. A last act shows the lifecycle policies: a refresh, a prewarm, idle
connections closed by ``max_idle_time``, and a second pool whose connections
are renewed by ``max_lifetime``. Every pool event shows up in the structlog
stream; a stats table ends the run.

Run it with ``make demo`` (or ``.venv/bin/python examples/tenant_demo.py``).
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import structlog

from pooler_actors import Pool, Stats

TENANTS = ["acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka"]
MAX_OPEN = 3
CLIENTS = 6
ROUNDS = 3  # how many times a client serves each of its tenants
WORK_S = 0.15  # how long a client keeps a tenant busy per round (request handling)
HEALTH_CHECK_INTERVAL = 0.5
MAX_IDLE_TIME = 2.0  # a connection nobody asked for in 2 s is closed

_started = time.monotonic()


def _elapsed(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """Stamp each line with seconds since the demo started, and shorten floats."""
    for name, value in event.items():
        if isinstance(value, float):
            event[name] = round(value, 3)
    event["timestamp"] = f"+{time.monotonic() - _started:6.3f}s"
    return event


# A readable event stream on stdout, debug level included (queued, granted...).
structlog.configure(
    processors=[
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _elapsed,
        structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty()),
    ],
    wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    logger_factory=structlog.PrintLoggerFactory(sys.stdout),
)
log = structlog.get_logger()


class TenantDB:
    """One tenant's sqlite3 connection, as a pool resource.

    The factory runs in the resource actor's thread and queries run in client
    threads, hence ``check_same_thread=False``; the lock serialises the use of
    this one connection (it belongs to the example, not to the pool).
    """

    def __init__(self, tenant: str, path: Path) -> None:
        self.tenant = tenant
        self.conn = sqlite3.connect(path, check_same_thread=False)
        self.lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TenantDB({self.tenant!r})"

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Run one statement, commit, and return its rows."""
        with self.lock:
            rows = self.conn.execute(sql, params).fetchall()
            self.conn.commit()
            return rows

    def ping(self) -> None:
        """The health check: raises once the connection is unusable."""
        with self.lock:
            self.conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        """Close the connection (closing twice is harmless in sqlite3)."""
        with self.lock:
            self.conn.close()


def create_databases(folder: Path) -> None:
    """One database file per tenant, each with an ``orders`` table and rows."""
    for n, tenant in enumerate(TENANTS, start=1):
        with sqlite3.connect(folder / f"{tenant}.db") as conn:
            conn.execute(
                "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT, cents INTEGER)"
            )
            conn.executemany(
                "INSERT INTO orders (item, cents) VALUES (?, ?)",
                [(f"{tenant}-item-{i}", 100 * n + 7 * i) for i in range(5 * n)],
            )
        conn.close()


def serve(
    pool: Pool[str, TenantDB], client: str, tenants: list[str], start: threading.Barrier
) -> None:
    """A client thread: for each of its tenants, acquire, query, release."""
    # Bound here, carried by each Acquire: the pool's events show the client.
    structlog.contextvars.bind_contextvars(client=client)
    start.wait()  # all clients ask at once, so most of them queue
    for round_ in range(ROUNDS):
        for tenant in tenants:
            pool.acquire(tenant, timeout=20).query(
                "INSERT INTO orders (item, cents) VALUES (?, ?)",
                (f"{client}-round-{round_}", 250),
            )
            # Code that asks again for an open tenant gets it at once (a hit).
            db = pool.acquire(tenant, timeout=20)
            [(count, total)] = db.query("SELECT COUNT(*), SUM(cents) FROM orders")
            log.info("demo.query", tenant=tenant, orders=count, total_cents=total)
            time.sleep(WORK_S)  # the request keeps this tenant busy a moment
            # Done with this tenant: free the slot for someone who waits.
            pool.release(tenant)


def lifecycle_act(pool: Pool[str, TenantDB], connect: Any) -> None:
    """Refresh, prewarm, idle expiry, and lifetime renewal on a second pool."""
    old = pool.acquire("acme")
    pool.refresh("acme")  # a fresh connection replaces the old one
    log.info("demo.refreshed", tenant="acme", fresh=pool.acquire("acme") is not old)

    result = pool.prewarm(TENANTS)  # as far as the cap allows, never waits
    log.info("demo.prewarmed", **{str(k): v for k, v in result.items()})

    # Nobody asks for these now: max_idle_time closes them and frees the slots.
    deadline = time.monotonic() + 10 * MAX_IDLE_TIME
    while pool.stats().open_resources and time.monotonic() < deadline:
        time.sleep(0.05)
    log.info("demo.idle_closed", open_resources=pool.stats().open_resources)

    # A second pool whose connections live at most half a second.
    with Pool(
        connect, name="short-lived", max_lifetime=0.5, health_check_interval=None
    ) as short:
        first = short.acquire("globex")
        deadline = time.monotonic() + 10
        while short.contains("globex") and time.monotonic() < deadline:
            time.sleep(0.02)
        renewed = short.acquire("globex")
        log.info(
            "demo.lifetime_renewed",
            tenant="globex",
            fresh=renewed is not first,
            lifetime_expired=short.stats().lifetime_expired,
        )


def print_stats_table(snapshot: Stats) -> None:
    """Every field of a ``Stats`` snapshot, one per line, aligned."""
    stats = snapshot.as_dict()
    width = max(len(name) for name in stats)
    print()
    print("Final pool stats")
    print("-" * (width + 12))
    for name, value in stats.items():
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        print(f"{name:<{width}}  {shown:>10}")
    print("-" * (width + 12))


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="tenant_demo_") as tmp:
        folder = Path(tmp)
        create_databases(folder)
        log.info("demo.start", tenants=len(TENANTS), max_open=MAX_OPEN, clients=CLIENTS)

        def connect(tenant: str) -> TenantDB:
            return TenantDB(tenant, folder / f"{tenant}.db")

        pool: Pool[str, TenantDB] = Pool(
            connect,
            name="tenants",
            max_open_resources=MAX_OPEN,
            health_check_interval=HEALTH_CHECK_INTERVAL,
            max_idle_time=MAX_IDLE_TIME,
        )
        with pool:
            # The main thread keeps acme's connection open: one slot taken.
            acme = pool.acquire("acme")
            [(count,)] = acme.query("SELECT COUNT(*) FROM orders")
            log.info("demo.query", tenant="acme", orders=count)

            # Each tenant belongs to one client, so a release never closes a
            # connection that another thread is still using.
            others = [t for t in TENANTS if t != "acme"]
            start = threading.Barrier(CLIENTS)
            clients = [
                threading.Thread(
                    target=serve,
                    args=(pool, f"client-{i}", others[i::CLIENTS], start),
                    name=f"client-{i}",
                )
                for i in range(CLIENTS)
            ]
            for t in clients:
                t.start()

            # Break acme's connection behind the pool's back: its ping fails.
            time.sleep(0.2)
            pool.acquire("acme")  # a hit: acme counts as used, not idle
            log.warning("demo.break_connection", tenant="acme")
            with acme.lock:  # not in the middle of a health-check ping
                acme.conn.close()
            deadline = time.monotonic() + 20
            while pool.contains("acme") and time.monotonic() < deadline:
                time.sleep(0.01)
            if pool.contains("acme"):
                log.error("demo.failed", reason="acme was not evicted")
                return 1
            log.info("demo.evicted_seen", tenant="acme")

            for t in clients:
                t.join()

            # The evicted tenant gets a fresh, working connection on demand.
            acme = pool.acquire("acme")
            [(count,)] = acme.query("SELECT COUNT(*) FROM orders")
            log.info("demo.reconnected", tenant="acme", orders=count)

            lifecycle_act(pool, connect)
            stats = pool.stats()
            print_stats_table(stats)
        print()
        print(
            f"Demo finished: {len(TENANTS)} tenants through {MAX_OPEN} slots, "
            f"{stats.created} connections created, {stats.waits} waits, "
            f"{stats.health_evictions} health eviction(s)."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
