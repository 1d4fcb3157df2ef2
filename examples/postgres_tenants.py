"""Tenants on a real PostgreSQL, through leases: one connection per request.

Five tenants, each with its own schema in the database of ``DATABASE_URL``,
share a pool capped at 4 connections, at most 2 per tenant. Eight worker
threads serve 100 requests; each request holds a tenant's connection
exclusively for its transaction (``with pool.lease(tenant) as db``), so the
pool never closes a connection under a query, and a connection that fails
with ``psycopg.OperationalError`` is checked in as broken and replaced.
Midway, the example kills one of its own backends (``pg_terminate_backend``):
at most the request that meets the dead connection fails.

Run it: ``DATABASE_URL=postgresql://user:password@host:5432/dbname
.venv/bin/python examples/postgres_tenants.py``. The role needs to create
schemas in that database; the example drops what it created. Without
``DATABASE_URL`` it prints one line and exits 0.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Callable

import psycopg
import structlog
from psycopg import sql
from psycopg.rows import TupleRow

from pooler_actors import Pool

# Pool events go to stderr, so stdout shows only the example's output.
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

TENANTS = ["acme", "globex", "initech", "umbrella", "hooli"]
REQUESTS_PER_TENANT = 20
WORKERS = 8
APP = "pooler-actors-example"


def schema(tenant: str) -> str:
    return f"pooler_example_{tenant}"


class TenantConn:
    """One tenant's connection: autocommit, its schema first on the path."""

    def __init__(self, url: str, tenant: str) -> None:
        self.conn = psycopg.connect(
            url,
            autocommit=True,
            connect_timeout=5,
            application_name=APP,
            options=f"-c search_path={schema(tenant)}",
        )

    def ping(self) -> None:
        self.conn.execute("SELECT 1")

    def close(self) -> None:
        self.conn.close()


def connector(url: str) -> Callable[[str], TenantConn]:
    """The pool's factory: the key is the tenant."""

    def connect(tenant: str) -> TenantConn:
        return TenantConn(url, tenant)

    return connect


def is_broken(exc: BaseException) -> bool:
    # The connection itself failed (killed backend, server restart, network):
    # retire it. A constraint violation or a syntax error leaves it usable.
    return isinstance(exc, psycopg.OperationalError)


def setup(admin: psycopg.Connection[TupleRow]) -> None:
    for tenant in TENANTS:
        name = sql.Identifier(schema(tenant))
        admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(name))
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(name))
        admin.execute(
            sql.SQL("CREATE TABLE {}.orders (id serial PRIMARY KEY, item text)").format(
                name
            )
        )


def our_backends(admin: psycopg.Connection[TupleRow]) -> int:
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (APP,)
    ).fetchone()
    return int(row[0]) if row else 0


def main() -> int:
    url = os.environ.get("DATABASE_URL")
    if not url:
        print(
            "postgres_tenants: set DATABASE_URL=postgresql://user:password@host/db "
            "to run this example against a PostgreSQL server"
        )
        return 0
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as admin:
        setup(admin)
        pool = Pool(
            connector(url),
            max_open_resources=4,  # below the server's limit for this role
            max_holders=1,  # exclusive: one request per connection at a time
            max_per_key=2,  # a busy tenant may use two of the four
            is_broken=is_broken,
            create_retries=5,  # the server frees a slot a few ms after close()
            create_backoff=0.01,
            health_check_interval=30.0,
            name="tenants",
        )
        failed: list[BaseException] = []
        requests: queue.SimpleQueue[tuple[str, int] | None] = queue.SimpleQueue()
        for n in range(REQUESTS_PER_TENANT):
            for tenant in TENANTS:
                requests.put((tenant, n))
        for _ in range(WORKERS):
            requests.put(None)
        half = threading.Event()

        def handle(tenant: str, n: int) -> None:
            with pool.lease(tenant, timeout=10) as db, db.conn.transaction():
                db.conn.execute("INSERT INTO orders (item) VALUES (%s)", (f"#{n}",))

        def worker() -> None:
            while (job := requests.get()) is not None:
                for _attempt in range(3):
                    try:
                        handle(*job)
                        break
                    except psycopg.OperationalError as exc:
                        # The lease checked the dead connection in as
                        # broken: the retry gets another one.
                        failed.append(exc)
                if job[1] == REQUESTS_PER_TENANT // 2:
                    half.set()

        with pool:
            threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
            for t in threads:
                t.start()
            half.wait(timeout=30)
            # Kill one of the pool's backends mid-run.
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s LIMIT 1",
                (APP,),
            )
            for t in threads:
                t.join()
            for tenant in TENANTS:
                with pool.lease(tenant, timeout=10) as db:
                    row = db.conn.execute("SELECT count(*) FROM orders").fetchone()
                print(f"{tenant}: {row[0] if row else 0} orders")
            stats = pool.stats()
            print(
                f"failed requests: {len(failed)} (each retried);"
                f" broken connections replaced: {stats.broken};"
                f" open connections: {stats.open_resources} of at most"
                f" {stats.max_open_resources}"
            )
        # close() returned: every connection is closed; the server drops the
        # backends a moment later.
        deadline = time.monotonic() + 2
        while our_backends(admin) and time.monotonic() < deadline:
            time.sleep(0.01)
        print(f"pool closed; connections now: {our_backends(admin)}")
        for tenant in TENANTS:
            admin.execute(
                sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema(tenant)))
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
