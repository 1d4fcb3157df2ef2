"""User-style code for SPEC 12: plain objects pooled with `ping=`/`close=`.

`make lint` type-checks it with `mypy --strict` (no casts, no
`type: ignore`): `Pool[K, T]` is inferred from the factory, whatever the
hooks are. It is never run (it would need a PostgreSQL server).
"""

from __future__ import annotations

from typing import Any, assert_type

import psycopg
from psycopg.rows import DictRow, TupleRow, dict_row

from pooler_actors import AsyncPool, Pool
from pooler_actors.psycopg import async_connector, connection, connector

Conn = psycopg.Connection[TupleRow]
AConn = psycopg.AsyncConnection[TupleRow]


def connect(dsn: str) -> Conn:
    return psycopg.connect(dsn)


def ping(conn: Conn) -> None:
    conn.execute("SELECT 1")


def typed_pool() -> None:
    # A typed factory: the pool's types are the factory's.
    pool = Pool(connect, ping=ping, close=Conn.close, max_holders=1)
    assert_type(pool, Pool[str, Conn])
    with pool.lease("dbname=acme") as conn:
        assert_type(conn, Conn)
    pool.close()


def inferred_lambda() -> None:
    # A lambda says nothing about its key: the key type stays open (Any), and
    # `dsn` may be passed on as a `str`; the resource type is inferred.
    pool = Pool(
        lambda dsn: psycopg.connect(dsn),  # noqa: PLW0108 (the point here)
        ping=ping,
        max_holders=1,
    )
    assert_type(pool, Pool[Any, Conn])
    with pool.lease("dbname=acme") as conn:
        assert_type(conn, Conn)
    pool.close()


def tenant_dsn(tenant: str) -> str:
    return f"dbname={tenant}"


def connectors() -> None:
    # The integration's factories are typed as what they open.
    by_dsn = Pool(connector(), max_holders=1)
    assert_type(by_dsn, Pool[str, Conn])
    by_tenant = Pool(connector(tenant_dsn, autocommit=True), max_holders=1)
    assert_type(by_tenant, Pool[str, Conn])
    dicts = Pool(connector(tenant_dsn, row_factory=dict_row), max_holders=1)
    assert_type(dicts, Pool[str, psycopg.Connection[DictRow]])
    for pool in (by_dsn, by_tenant):
        pool.close()
    dicts.close()


async def async_connectors() -> None:
    pool = AsyncPool(async_connector(tenant_dsn), max_holders=1)
    assert_type(pool, AsyncPool[str, AConn])
    async with connection(pool, "acme") as conn:
        assert_type(conn, AConn)
    await pool.close()


def lambda_pool() -> None:
    # Lambdas: the declared type gives the lambda's parameter its type.
    pool: Pool[str, Conn] = Pool(
        lambda dsn: psycopg.connect(dsn),  # noqa: PLW0108 (the point here)
        ping=lambda c: c.execute("SELECT 1"),
        close=lambda c: c.close(),
        max_holders=1,
    )
    with pool.lease("dbname=acme") as conn:
        assert_type(conn, Conn)
        conn.execute("SELECT 1")
    with connection(pool, "dbname=acme") as conn:
        assert_type(conn, Conn)
    pool.close()


async def async_pool() -> None:
    async def aconnect(dsn: str) -> AConn:
        return await psycopg.AsyncConnection.connect(dsn)

    async def aping(conn: AConn) -> None:
        await conn.execute("SELECT 1")

    async def aclose(conn: AConn) -> None:
        await conn.close()

    pool: AsyncPool[str, AConn] = AsyncPool(
        aconnect, ping=aping, close=aclose, max_holders=1
    )
    async with pool.lease("dbname=acme") as conn:
        await conn.execute("SELECT 1")
    async with connection(pool, "dbname=acme") as aconn:
        assert_type(aconn, AConn)
    await pool.close()


def connect_itself() -> None:
    # psycopg.connect itself: its conninfo parameter (with a default) gets
    # the key.
    pool: Pool[str, Conn] = Pool(
        psycopg.connect, ping=ping, close=Conn.close, max_holders=1
    )
    with pool.lease("dbname=acme") as conn:
        conn.execute("SELECT 1")
    pool.close()
