"""User-style code: `make lint` type-checks it with `mypy --strict`, and
tests/test_typing.py runs it (each `assert_type` is also true at run time).

Written as an application would use the library, with no casts and no
`type: ignore`: if the library's types regress, `make lint` fails here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any, assert_type

from pooler_actors import (
    Acquire,
    AcquireTimeout,
    AsyncPool,
    Factory,
    FactoryError,
    Lease,
    Pool,
    Pooler,
    PoolOptions,
    PoolRef,
    PoolSupervisor,
    Release,
    Reusable,
    Stats,
)


class Conn:
    """A resource: `ping()` raises when unhealthy, `close()` frees it."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.open = True

    def ping(self) -> None:
        if not self.open:
            raise ConnectionError("closed")

    def close(self) -> None:
        self.open = False


class TenantDB:
    """The README's shape: the class itself is the factory."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant

    def ping(self) -> None:
        pass

    def close(self) -> None:
        pass


class AsyncConn:
    """An asyncio-native resource: `ping()` and `close()` are coroutines."""

    def __init__(self, db: int) -> None:
        self.db = db

    async def ping(self) -> None:
        await asyncio.sleep(0)

    async def close(self) -> None:
        await asyncio.sleep(0)


async def aconnect(db: int) -> AsyncConn:
    await asyncio.sleep(0)
    return AsyncConn(db)


async def aconnect_default() -> AsyncConn:
    return AsyncConn(0)


def connect(tenant: str) -> Conn:
    return Conn(f"db://{tenant}")


def connect_default() -> Conn:
    return Conn("db://default")


def keyed_pools() -> None:
    with Pool(TenantDB, max_open_resources=2) as pool:
        assert_type(pool, Pool[str, TenantDB])
        db = pool.acquire("a", timeout=1.0)
        assert_type(db, TenantDB)
        assert db.tenant == "a"
        assert_type(pool.contains("a"), bool)
        for key, resource in pool.all():
            assert_type(key, str)
            assert_type(resource, TenantDB)
        next_, stop = pool.walk()
        key_or_none, resource_or_none, more = next_()
        assert_type(key_or_none, str | None)
        assert_type(resource_or_none, TenantDB | None)
        assert more
        stop()
        assert_type(pool.prewarm(["b", "c"]), dict[str, str])
        assert_type(pool.refresh("a"), bool)
        assert_type(pool.release("a"), bool)
        pool.release_all()
        stats = pool.stats()
        assert_type(stats, Stats)
        assert stats.created >= 1

    options = PoolOptions(max_open_resources=3, name="conns")
    with Pool(connect, options=options) as conns:
        assert_type(conns, Pool[str, Conn])
        assert_type(conns.acquire("tenant-a"), Conn)


def leases() -> None:
    with Pool(connect, max_holders=1, acquire_timeout=2.0) as pool:
        with pool.lease("a") as conn:
            assert_type(conn, Conn)
            conn.ping()
        lease = pool.checkout("a")
        assert_type(lease, Lease[str, Conn])
        assert_type(lease.key, str)
        assert_type(lease.resource, Conn)
        assert_type(pool.checkin(lease), bool)


def key_less_factories() -> None:
    # A factory that takes no key says nothing about keys: they are left open.
    with Pool(connect_default) as anything:
        assert_type(anything, Pool[Any, Conn])
        assert_type(anything.acquire(("region", 7)), Conn)
    # ...unless the application says which keys it uses.
    numbered: Pool[int, Conn] = Pool(connect_default)
    assert_type(numbered.acquire(7), Conn)
    numbered.close()
    with Pool[str, Conn](connect_default) as named:
        assert_type(named.acquire("x"), Conn)


def shapes() -> None:
    both: list[Reusable] = [Conn("x"), AsyncConn(1)]  # sync or async methods
    assert len(both) == 2
    keyed: Factory[str, Conn] = connect
    plain: Factory[str, Conn] = connect_default
    assert callable(keyed)
    assert callable(plain)

    def use(pool: Pooler[str, Conn]) -> Conn:
        return pool.acquire("a")

    with Pool(connect) as pool:
        assert_type(use(pool), Conn)


def errors() -> None:
    def failing(tenant: str) -> Conn:
        raise ConnectionError(tenant)

    with Pool(failing, create_timeout=5.0) as pool:
        try:
            pool.acquire("a", timeout=1.0)
        except FactoryError as error:
            assert_type(error.key, Hashable)
            assert isinstance(error.__cause__, ConnectionError)
        except AcquireTimeout:
            raise AssertionError("the factory fails at once") from None


def messages() -> None:
    ref = PoolSupervisor.start(connect, PoolOptions(max_open_resources=2))
    try:
        conn: Conn = ref.ask(Acquire("a", timeout=1.0))
        assert conn.dsn == "db://a"
        future = ref.ask(Acquire("b"), block=False)
        other: Conn = future.get(timeout=1.0)
        assert other.dsn == "db://b"
        released: bool = ref.ask(Release("a"))
        assert released
    finally:
        ref.stop()
    with Pool(connect) as pool:
        assert_type(pool.actor_ref, PoolRef)
        same: Conn = pool.actor_ref.ask(Acquire("c"))
        assert same is pool.acquire("c")


async def with_asyncio() -> None:
    async with AsyncPool(TenantDB, max_open_resources=2) as pool:
        assert_type(pool, AsyncPool[str, TenantDB])
        db = await pool.acquire("a")
        assert_type(db, TenantDB)
        async for key, resource in pool.all():
            assert_type(key, str)
            assert_type(resource, TenantDB)
        assert_type(await pool.snapshot(), list[tuple[str, TenantDB]])
        assert_type(await pool.release("a"), bool)
        assert_type(await pool.stats(), Stats)

    async with AsyncPool(connect, max_holders=1) as leased:
        async with leased.lease("a") as conn:
            assert_type(conn, Conn)
        lease = await leased.checkout("b")
        assert_type(lease, Lease[str, Conn])
        assert_type(await leased.checkin(lease), bool)

    async with AsyncPool(connect_default) as anything:
        assert_type(anything, AsyncPool[Any, Conn])

    # An async factory: the pool holds what it returns once awaited.
    async with AsyncPool(aconnect, health_check_interval=0.01) as native:
        assert_type(native, AsyncPool[int, AsyncConn])
        three = await native.acquire(3)
        assert_type(three, AsyncConn)
        assert three.db == 3
    async with AsyncPool(aconnect_default) as keyless:
        assert_type(keyless, AsyncPool[Any, AsyncConn])


def main() -> None:
    keyed_pools()
    leases()
    key_less_factories()
    shapes()
    errors()
    messages()
    asyncio.run(with_asyncio())


if __name__ == "__main__":
    main()
