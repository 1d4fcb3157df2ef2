"""An asyncio service with one real sqlite3 database per tenant, via AsyncPool.

Five tenants share a pool capped at two connections. Each tenant's batch runs
as several concurrent tasks that record orders on the tenant's connection;
when a batch is done the service releases the tenant's connection, and the
pool hands the freed slot to the next tenant waiting in line. While tenants
wait, a heartbeat task keeps ticking: awaiting the pool never blocks the event
loop. A second round re-opens two tenants and reads back what the first round
wrote to their database files.

Run it: ``.venv/bin/python examples/asyncio_service.py``
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Hashable
from pathlib import Path

import structlog

from pooler_actors import AsyncPool

# Pool lifecycle events go to stderr, so stdout shows only the example's output.
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

TENANTS = ["acme", "globex", "initech", "umbrella", "hooli"]
ORDERS_PER_TENANT = 6


class TenantDB:
    """One tenant's sqlite3 connection, in the shape the pool needs."""

    def __init__(self, path: Path) -> None:
        # The pool opens, pings and closes the connection in the resource's
        # actor thread, and the service uses it in the event loop's thread.
        self.conn = sqlite3.connect(path, check_same_thread=False)
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, item TEXT)"
        )
        self.conn.commit()

    def record(self, item: str) -> None:
        with self.conn:  # one transaction
            self.conn.execute("INSERT INTO orders (item) VALUES (?)", (item,))

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0])

    def ping(self) -> None:
        self.conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        self.conn.close()


def tenant_db_factory(directory: Path) -> Callable[[Hashable], TenantDB]:
    """A factory that opens ``<directory>/<tenant>.sqlite3`` for a tenant key."""

    def open_tenant(tenant: Hashable) -> TenantDB:
        return TenantDB(directory / f"{tenant}.sqlite3")

    return open_tenant


async def record_order(pool: AsyncPool[str, TenantDB], tenant: str, n: int) -> None:
    db = await pool.acquire(tenant, timeout=10)  # open already: answered at once
    db.record(f"order-{n}")
    await asyncio.sleep(0.01)  # the rest of the request: other tasks run


TICKS = [0]  # heartbeats so far
TICKS_WHILE_WAITING: list[int] = []  # heartbeats during each queued acquire


async def tenant_batch(pool: AsyncPool[str, TenantDB], tenant: str) -> int:
    # The first acquire may wait for a free slot; the loop keeps running.
    before = TICKS[0]
    await pool.acquire(tenant, timeout=10)
    TICKS_WHILE_WAITING.append(TICKS[0] - before)
    await asyncio.gather(
        *(record_order(pool, tenant, n) for n in range(ORDERS_PER_TENANT))
    )
    db = await pool.acquire(tenant)
    total = db.count()
    await pool.release(tenant)  # batch done: the slot goes to the next tenant
    return total


async def heartbeat(stop: asyncio.Event) -> None:
    while not stop.is_set():
        TICKS[0] += 1
        await asyncio.sleep(0.005)


async def serve(directory: Path) -> None:
    factory = tenant_db_factory(directory)
    async with AsyncPool[str, TenantDB](
        factory,
        max_open_resources=2,
        health_check_interval=1.0,
        name="tenant-dbs",
    ) as pool:
        stop = asyncio.Event()
        beat = asyncio.create_task(heartbeat(stop))
        totals = await asyncio.gather(*(tenant_batch(pool, t) for t in TENANTS))
        stop.set()
        await beat
        for tenant, total in zip(TENANTS, totals, strict=True):
            print(f"{tenant}: {total} orders")
        stats = await pool.stats()
        print(
            f"created {stats.created} connections, at most "
            f"{stats.max_open_resources} open; {stats.waits} tenants queued "
            f"for a slot; open now: {stats.open_resources}"
        )
        # The last tenants waited for two batches to finish: meanwhile the
        # heartbeat ticked, so the waiting acquire did not block the loop.
        print(f"heartbeat ticked while tenants waited: {max(TICKS_WHILE_WAITING) > 0}")

        # Round two: re-open two tenants; their orders are in their files.
        again = await asyncio.gather(
            pool.acquire("acme", timeout=10), pool.acquire("hooli", timeout=10)
        )
        print("after reopening:", [db.count() for db in again])
        print("open tenants:", [key async for key, _ in pool.all()])
    files = sorted(p.name for p in directory.glob("*.sqlite3"))
    print(f"pool closed; {len(files)} database files:", ", ".join(files))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(serve(Path(tmp)))


if __name__ == "__main__":
    main()
