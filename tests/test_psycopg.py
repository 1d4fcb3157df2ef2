"""Plain psycopg connections in a pool, and `pooler_actors.psycopg` (SPEC 12),
against the real PostgreSQL of the session (`pg_fixtures.py`).

The pool holds `psycopg.Connection` objects as they are (`ping=`/`close=`);
`pooler_actors.psycopg.connection` ends each block as psycopg_pool does.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg", reason="pip install -e '.[dev]' (psycopg)")

from pg_fixtures import CAP, TENANTS, PgEnv  # noqa: E402
from pg_server import too_many_clients  # noqa: E402

from pooler_actors import AsyncPool, FactoryError, Pool  # noqa: E402
from pooler_actors import psycopg as pgp  # noqa: E402

Conn = Any  # psycopg.Connection[Any]: psycopg is imported by importorskip


def make_table(pg: PgEnv, tenant: str) -> None:
    with psycopg.connect(pg.dsn(tenant), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS items")
        conn.execute("CREATE TABLE items (n int)")


def count(conn: Conn) -> int:
    row = conn.execute("SELECT count(*) FROM items").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def pool(pg: PgEnv) -> Iterator[Pool[str, Any]]:
    """One connection per tenant, exclusive, pinged and closed by the helpers."""
    with Pool(
        pgp.connector(pg.dsn),
        ping=pgp.ping,
        close=pgp.close,
        max_holders=1,
        max_open_resources=4,
        health_check_interval=None,
        name="pg-plain",
    ) as p:
        yield p


def test_a_plain_connection_is_pooled_as_it_is(pool: Pool[str, Any]) -> None:
    with pool.lease(TENANTS[0], timeout=10) as conn:
        assert isinstance(conn, psycopg.Connection)
        row = conn.execute("SELECT current_database()").fetchone()
        assert row == (TENANTS[0],)
        conn.rollback()
    assert pool.release(TENANTS[0]) is True
    assert conn.closed


def test_the_block_commits_on_success(pg: PgEnv, pool: Pool[str, Any]) -> None:
    tenant = TENANTS[1]
    make_table(pg, tenant)
    with pgp.connection(pool, tenant, timeout=10) as conn:
        conn.execute("INSERT INTO items VALUES (1)")
    # Committed: another session sees it.
    with psycopg.connect(pg.dsn(tenant)) as other:
        assert count(other) == 1


def test_an_exception_in_the_block_rolls_back(pg: PgEnv, pool: Pool[str, Any]) -> None:
    tenant = TENANTS[2]
    make_table(pg, tenant)
    with (
        pytest.raises(ZeroDivisionError),
        pgp.connection(pool, tenant, timeout=10) as conn,
    ):
        conn.execute("INSERT INTO items VALUES (1)")
        _ = 1 / 0
    with pgp.connection(pool, tenant, timeout=10) as again:
        assert again is conn  # the same connection, reused
        assert count(again) == 0


def test_an_uncommitted_insert_is_not_seen_by_the_next_lease(
    pg: PgEnv, pool: Pool[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A connection checked in mid-transaction is rolled back, with a warning."""
    tenant = TENANTS[3]
    make_table(pg, tenant)
    with caplog.at_level(logging.WARNING, logger="pooler_actors"):
        lease = pool.checkout(tenant, timeout=10)
        lease.resource.execute("INSERT INTO items VALUES (1)")
        assert pgp.checkin(pool, lease) is True
    assert any(
        r.getMessage().startswith("pool.psycopg.rollback")
        and "transaction_status=INTRANS" in r.getMessage()
        for r in caplog.records
    )
    with pgp.connection(pool, tenant, timeout=10) as conn:
        assert conn is lease.resource
        assert count(conn) == 0


def test_a_connection_killed_server_side_is_discarded(
    pg: PgEnv, pool: Pool[str, Any]
) -> None:
    tenant = TENANTS[4]
    with pgp.connection(pool, tenant, timeout=10) as conn:
        pid = conn.info.backend_pid
    assert pg.server.terminate([pid]) == 1
    with (
        pytest.raises(psycopg.OperationalError),
        pgp.connection(pool, tenant, timeout=10) as dead,
    ):
        assert dead is conn
        dead.execute("SELECT 1")
    assert conn.closed  # checked in as broken: the pool closed it
    with pgp.connection(pool, tenant, timeout=10) as fresh:
        assert fresh is not conn
        assert fresh.info.backend_pid != pid
        assert fresh.execute("SELECT 1").fetchone() == (1,)


def test_a_failed_commit_is_raised_and_the_connection_stays_usable(
    pg: PgEnv, pool: Pool[str, Any]
) -> None:
    tenant = TENANTS[5]
    with psycopg.connect(pg.dsn(tenant), autocommit=True) as setup:
        setup.execute("DROP TABLE IF EXISTS u")
        setup.execute("CREATE TABLE u (n int UNIQUE DEFERRABLE INITIALLY DEFERRED)")
    with (
        pytest.raises(psycopg.errors.UniqueViolation),
        pgp.connection(pool, tenant, timeout=10) as conn,
    ):
        conn.execute("INSERT INTO u VALUES (1), (1)")  # fails at COMMIT
    with pgp.connection(pool, tenant, timeout=10) as again:
        assert again is conn
        assert again.execute("SELECT count(*) FROM u").fetchone() == (0,)


def test_connection_needs_a_pool() -> None:
    with pytest.raises(TypeError, match="needs a Pool or an AsyncPool"):
        pgp.connection(object(), "k")  # type: ignore[call-overload]


# -- asyncio ------------------------------------------------------------------------


def test_async_pool_of_async_connections(pg: PgEnv) -> None:
    tenant = TENANTS[6]
    make_table(pg, tenant)

    async def main() -> None:
        async with AsyncPool(
            pgp.async_connector(pg.dsn),
            ping=pgp.async_ping,
            close=pgp.async_close,
            max_holders=1,
            health_check_interval=None,
        ) as pool:
            async with pgp.connection(pool, tenant, timeout=10) as conn:
                assert isinstance(conn, psycopg.AsyncConnection)
                await conn.execute("INSERT INTO items VALUES (1)")
            with pytest.raises(ZeroDivisionError):
                async with pgp.connection(pool, tenant, timeout=10) as conn:
                    await conn.execute("INSERT INTO items VALUES (2)")
                    _ = 1 / 0
            lease = await pool.checkout(tenant, timeout=10)
            await lease.resource.execute("INSERT INTO items VALUES (3)")
            assert await pgp.async_checkin(pool, lease) is True
            async with pgp.connection(pool, tenant, timeout=10) as conn:
                cur = await conn.execute("SELECT array_agg(n) FROM items")
                assert await cur.fetchone() == ([1],)
                pid = conn.info.backend_pid
            assert pg.server.terminate([pid]) == 1
            with pytest.raises(psycopg.OperationalError):
                async with pgp.connection(pool, tenant, timeout=10) as dead:
                    await dead.execute("SELECT 1")
            assert dead.closed
            async with pgp.connection(pool, tenant, timeout=10) as fresh:
                assert fresh.info.backend_pid != pid
            # A sync block on an AsyncPool says what to use instead.
            with (
                pytest.raises(TypeError, match="use `async with`"),
                pgp.connection(pool, tenant),  # type: ignore[attr-defined]
            ):
                pass

    asyncio.run(main())


# -- retries by default: the server's slot-release lag -------------------------------


@pytest.mark.timeout(90)
def test_default_retries_absorb_the_slot_release_lag(pg: PgEnv) -> None:
    """Cap = the role's CONNECTION LIMIT, 20 tenants, 16 threads, exclusive
    leases of plain connections, default retry options, ~8 s: a connection
    the pool just closed may hold its server slot a few ms longer, and the
    retries absorb that: no caller sees a FactoryError."""
    pool: Pool[str, Any] = Pool(
        pgp.connector(pg.dsn, autocommit=True),
        ping=pgp.ping,
        close=pgp.close,
        max_open_resources=CAP,
        max_holders=1,
        health_check_interval=None,
        name="pg-retries",
    )
    stop = threading.Event()
    lock = threading.Lock()
    factory_errors: list[BaseException] = []
    other: list[BaseException] = []
    done = [0]

    def body(n: int) -> None:
        rng = random.Random(n)
        while not stop.is_set():
            tenant = rng.choice(TENANTS)
            try:
                with pgp.connection(pool, tenant, timeout=30) as conn:
                    row = conn.execute("SELECT current_database()").fetchone()
                    assert row == (tenant,)
                with lock:
                    done[0] += 1
            except FactoryError as exc:
                with lock:
                    factory_errors.append(exc)
            except Exception as exc:
                with lock:
                    other.append(exc)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(16)]
    try:
        for t in threads:
            t.start()
        stop.wait(8)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=40)
        stats = pool.stats()
        pool.close()
    print(
        f"[pg] default retries: leases={done[0]} created={stats.created} "
        f"create_retries={stats.create_retries} factory_errors={len(factory_errors)}"
    )
    assert not [t for t in threads if t.is_alive()]
    assert factory_errors == [], [
        (str(e), too_many_clients(e.__cause__)) for e in factory_errors[:3]
    ]
    assert other == []
    assert done[0] > 100


def test_check_discards_a_connection_killed_while_idle(pg: PgEnv) -> None:
    """SPEC 12 (issue 21): with `check=` (psycopg_pool's `check_connection`:
    a `SELECT 1`), a connection killed server-side while idle is discarded
    at the next checkout, and the caller gets a working one -- the request
    itself never sees the dead connection."""

    def check(conn: Conn) -> None:
        conn.execute("SELECT 1")

    tenant = TENANTS[5]
    with Pool(
        pgp.connector(pg.dsn),
        ping=pgp.ping,
        close=pgp.close,
        check=check,
        max_holders=1,
        max_open_resources=2,
        health_check_interval=None,
        name="pg-check",
    ) as pool:
        with pool.lease(tenant, timeout=10) as conn:
            pid = conn.info.backend_pid
        assert pg.server.terminate([pid]) == 1
        with pool.lease(tenant, timeout=10) as fresh:
            assert fresh is not conn
            assert fresh.info.backend_pid != pid
            assert fresh.execute("SELECT 1").fetchone() == (1,)
        assert conn.closed  # discarded by the check, closed by the pool
        assert pool.stats().broken == 1


def test_a_connection_block_is_good_for_one_with_statement(
    pool: Pool[str, Any],
) -> None:
    """As `pool.lease()` (issue 20, finding 6): one block object entered
    twice must not leak a lease or give an exclusive connection two holders."""
    block = pgp.connection(pool, TENANTS[6], timeout=10)
    with block:
        with pytest.raises(RuntimeError, match="entered already"), block:
            pass
        assert pool.stats().holders == 1
    assert pool.stats().holders == 0
