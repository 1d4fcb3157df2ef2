"""`make demo`: a pool of real sqlite3 connections, keyed by tenant.

Eight tenants share a pool capped at three connections. The main thread keeps
the `acme` connection open, six client threads run real queries against the
seven other tenants (so most of them queue for one of the two free slots),
and the `acme` connection is broken behind the pool's back: the next health
check finds `SELECT 1` failing, evicts it and hands its slot to a waiting
client. A second act shows the lifecycle policies: a refresh, a prewarm, idle
connections closed by `max_idle_time`, and a second pool whose connections
are renewed by `max_lifetime`. A third act uses leases on a pool of exclusive
connections: a holder keeps its connection through a `release` (it is
retired, and closed when checked in), and a request for a new tenant at the
cap takes over the slot of the least recently used idle tenant at once. A
stats table with a legend ends the run.

Run it with `make demo` (or `.venv/bin/python examples/tenant_demo.py`); add
`--verbose` for the pool's event stream (structlog, on stderr). Without it the
pool prints nothing: a library is quiet unless the application asks.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import structlog

from pooler_actors import Pool, Stats
from pooler_actors.stats import COUNTERS, GAUGES

TENANTS = ["acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka"]
MAX_OPEN = 3
CLIENTS = 6
ROUNDS = 3  # how many times a client serves each of its tenants
WORK_S = 0.15  # how long a client keeps a tenant busy per round (request handling)
HEALTH_CHECK_INTERVAL = 0.5
MAX_IDLE_TIME = 2.0  # a connection nobody asked for in 2 s is closed

# The stats table's legend: what the easily confused fields mean.
LEGEND = {
    "open_resources": "exist now: creating + open + closing (what the cap counts)",
    "open": "created and ready to hand out",
    "wait_count": "callers waiting for a slot right now",
    "max_wait": "the longest single wait so far, in seconds",
    "waits": "acquires that had to wait for a slot",
    "wait_duration": "total seconds callers spent waiting for a slot",
}

_started = time.monotonic()


def _elapsed(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Stamp each event with seconds since the demo started."""
    event["timestamp"] = f"+{time.monotonic() - _started:6.3f}s"
    return event


def make_log(verbose: bool) -> Any:
    """The demo's own event logger; with `verbose`, the pool's events too.

    `--verbose` configures structlog (debug level, so queued and granted
    callers show) to write to stderr; the pool then logs through it. Otherwise
    structlog stays unconfigured, the pool is silent, and the demo's own
    events go to a logger that drops them.
    """
    if not verbose:
        return structlog.wrap_logger(
            None, wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL)
        )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _elapsed,
            structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    return structlog.get_logger()


log: Any = None  # set by main()


def say(text: str) -> None:
    """One line of the demo's story, on stdout."""
    print(f"[+{time.monotonic() - _started:5.2f}s] {text}", flush=True)


class TenantDB:
    """One tenant's sqlite3 connection, as a pool resource.

    The pool opens, pings and closes it on its worker threads, and queries run
    in client threads, hence `check_same_thread=False`; the lock serialises
    the use of this one connection (it belongs to the example, not the pool).
    """

    def __init__(self, tenant: str, path: Path) -> None:
        self.tenant = tenant
        self.conn = sqlite3.connect(path, check_same_thread=False)
        self.lock = threading.Lock()
        self.closed = False

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
            self.closed = True


def create_databases(folder: Path) -> None:
    """One database file per tenant, each with an `orders` table and rows."""
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
    pool: Pool[str, TenantDB],
    client: str,
    tenants: list[str],
    start: threading.Barrier,
    served: list[str],
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
            served.append(tenant)
            time.sleep(WORK_S)  # the request keeps this tenant busy a moment
            # Done with this tenant: free the slot for someone who waits.
            pool.release(tenant)


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def clients_and_eviction_act(pool: Pool[str, TenantDB]) -> bool:
    """Clients queue for the free slots while acme's connection breaks."""
    acme = pool.acquire("acme")  # the main thread keeps acme: one slot taken
    [(count,)] = acme.query("SELECT COUNT(*) FROM orders")
    say(f"main thread holds acme's connection ({count} orders): 1 of 3 slots")
    # Each tenant belongs to one client, so a release never closes a
    # connection that another thread is still using.
    others = [t for t in TENANTS if t != "acme"]
    start = threading.Barrier(CLIENTS)
    served: list[str] = []
    clients = [
        threading.Thread(
            target=serve,
            args=(pool, f"client-{i}", others[i::CLIENTS], start, served),
            name=f"client-{i}",
        )
        for i in range(CLIENTS)
    ]
    for t in clients:
        t.start()
    say(f"{CLIENTS} clients query the {len(others)} other tenants, {ROUNDS} rounds")

    time.sleep(0.2)
    pool.acquire("acme")  # a hit: acme counts as used, not idle
    log.warning("demo.break_connection", tenant="acme")
    broken_at = time.monotonic()
    with acme.lock:  # not in the middle of a health-check ping
        acme.conn.close()
    say("acme's connection broken behind the pool's back")
    if not wait_until(lambda: not pool.contains("acme"), 20):
        log.error("demo.failed", reason="acme was not evicted")
        say("FAILED: acme was not evicted")
        return False
    say(
        f"health check evicted acme {time.monotonic() - broken_at:.2f} s later;"
        " a waiting client took its slot"
    )
    log.info("demo.evicted_seen", tenant="acme")
    for t in clients:
        t.join()
    stats = pool.stats()
    say(
        f"clients served {len(served)} requests; {stats.waits} acquires waited"
        f" for a slot, the longest {stats.max_wait:.2f} s"
    )
    # The evicted tenant gets a fresh, working connection on demand.
    acme = pool.acquire("acme")
    [(count,)] = acme.query("SELECT COUNT(*) FROM orders")
    log.info("demo.reconnected", tenant="acme", orders=count)
    say(f"acme reconnected on demand: {count} orders")
    return True


def lifecycle_act(
    pool: Pool[str, TenantDB], connect: Callable[[str], TenantDB]
) -> None:
    """Refresh, prewarm, idle expiry, and lifetime renewal on a second pool."""
    old = pool.acquire("acme")
    pool.refresh("acme")  # a fresh connection replaces the old one
    fresh = pool.acquire("acme") is not old
    log.info("demo.refreshed", tenant="acme", fresh=fresh)
    say(f"refresh(acme): a new connection replaced the old one: {fresh}")

    result = pool.prewarm(TENANTS)  # as far as the cap allows, never waits
    log.info("demo.prewarmed", **{str(k): v for k, v in result.items()})
    outcomes = [str(v) for v in result.values()]
    counts = ", ".join(f"{o} {outcomes.count(o)}" for o in dict.fromkeys(outcomes))
    say(f"prewarm(all {len(TENANTS)} tenants): {counts} (the cap is {MAX_OPEN})")

    # Nobody asks for these now: max_idle_time closes them and frees the slots.
    wait_until(lambda: pool.stats().open_resources == 0, 10 * MAX_IDLE_TIME)
    open_now = pool.stats().open_resources
    log.info("demo.idle_closed", open_resources=open_now)
    say(f"max_idle_time={MAX_IDLE_TIME:g} s closed the idle ones: {open_now} left")

    # A second pool whose connections live at most half a second.
    with Pool(
        connect, name="short-lived", max_lifetime=0.5, health_check_interval=None
    ) as short:
        first = short.acquire("globex")
        wait_until(lambda: not short.contains("globex"), 10)
        renewed = short.acquire("globex")
        expired = short.stats().lifetime_expired
        log.info(
            "demo.lifetime_renewed",
            tenant="globex",
            fresh=renewed is not first,
            lifetime_expired=expired,
        )
        say(
            f"max_lifetime=0.5 s (a second pool): globex renewed:"
            f" {renewed is not first}, lifetime_expired={expired}"
        )


def leases_act(connect: Callable[[str], TenantDB]) -> None:
    """Exclusive leases: never closed under the holder; idle slots reclaimed."""
    with Pool(
        connect,
        name="leased",
        max_open_resources=MAX_OPEN,
        max_holders=1,  # exclusive: one request per connection at a time
        health_check_interval=HEALTH_CHECK_INTERVAL,
    ) as pool:
        with pool.lease("acme", timeout=20) as db:
            # An operator releases acme while a request holds its connection.
            # release() does not wait for holders (here the caller is one).
            pool.release("acme")
            retiring = pool.stats().retiring
            [(count,)] = db.query("SELECT COUNT(*) FROM orders")
            log.info("demo.held_through_release", tenant="acme", orders=count)
            say(
                f"release(acme) during a lease: {retiring} retiring, closed:"
                f" {db.closed}; the holder's query still works: {count} orders"
            )
        closed = wait_until(lambda: db.closed, 10)
        log.info("demo.checked_in", tenant="acme", closed=closed)
        say(f"acme checked in: its retired connection is closed now: {closed}")

        idle = ["globex", "initech", "umbrella"]
        for tenant in idle:  # served and checked in: three idle connections
            with pool.lease(tenant, timeout=20) as db:
                db.query("SELECT COUNT(*) FROM orders")
        started = time.monotonic()
        with pool.lease("hooli", timeout=20) as db:  # the cap is reached
            waited = time.monotonic() - started
            [(count,)] = db.query("SELECT COUNT(*) FROM orders")
        gone = [t for t in idle if not pool.contains(t)]
        stats = pool.stats()
        log.info("demo.reclaimed", tenant="hooli", gave_way=gone, waited_s=waited)
        say(
            f"hooli at the cap waited {waited:.2f} s, not max_idle_time:"
            f" idle {', '.join(gone)} gave up its slot (reclaimed={stats.reclaimed})"
        )
        say(
            f"lease pool: checkouts={stats.checkouts}, holders={stats.holders},"
            f" retiring={stats.retiring}, drain_timeouts={stats.drain_timeouts}"
        )


def print_stats_table(snapshot: Stats) -> None:
    """The stats, gauges apart from counters, with a legend."""
    stats = snapshot.as_dict()
    sections = {
        "Gauges: the pool right now": [n for n in stats if n in GAUGES],
        "Counters: totals since the pool started": [n for n in stats if n in COUNTERS],
        "Other": [n for n in stats if n not in GAUGES and n not in COUNTERS],
    }
    width = max(len(name) for name in stats)
    print()
    print("Final pool stats")
    for title, names in sections.items():
        if not names:
            continue
        print(f"  {title}")
        for name in names:
            value = stats[name]
            shown = f"{value:.3f}" if isinstance(value, float) else str(value)
            print(f"    {name:<{width}} {shown:>8}  {LEGEND.get(name, '')}".rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="sqlite3 connections per tenant")
    parser.add_argument(
        "--verbose", action="store_true", help="the pool's event stream on stderr"
    )
    args = parser.parse_args(argv)
    global log
    log = make_log(args.verbose)
    with tempfile.TemporaryDirectory(prefix="tenant_demo_") as tmp:
        folder = Path(tmp)
        create_databases(folder)
        log.info("demo.start", tenants=len(TENANTS), max_open=MAX_OPEN, clients=CLIENTS)
        say(f"{len(TENANTS)} tenant databases, one pool capped at {MAX_OPEN}")

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
            print("Act 1: clients, a cap, a broken connection")
            if not clients_and_eviction_act(pool):
                return 1
            print("Act 2: lifecycle policies")
            lifecycle_act(pool, connect)
            print("Act 3: leases of exclusive connections (a pool of their own)")
            leases_act(connect)
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
