"""AsyncPool with asyncio-native resources: an `async def` factory and
`async def ping()/close()` are awaited on the pool's event loop; sync ones keep
working; a sync Pool refuses them clearly. Includes a real asyncio client,
`redis.asyncio`, against the test Valkey server.

Every test checks that no coroutine was left un-awaited (Python warns with
`RuntimeWarning: coroutine ... was never awaited` when one is dropped).
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import subprocess
import sys
import threading
import uuid
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio
from valkey_server import ValkeyServer

from pooler_actors import (
    AsyncPool,
    FactoryError,
    Pool,
    PoolOptions,
    PoolSupervisor,
    Reusable,
)

T = TypeVar("T")
GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guides" / "asyncio.md"


@contextmanager
def no_unawaited_coroutines() -> Iterator[None]:
    """Fail if a coroutine is garbage-collected without being awaited."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
        gc.collect()
    unawaited = [str(w.message) for w in caught if "never awaited" in str(w.message)]
    assert not unawaited, unawaited


def run(coro: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run`, checking that no coroutine is left un-awaited."""
    with no_unawaited_coroutines():
        return asyncio.run(coro)


async def until(
    predicate: Callable[[], Awaitable[bool] | bool], timeout: float = 10
) -> None:
    """Wait for a condition without blocking the loop; fail after `timeout`."""
    async with asyncio.timeout(timeout):
        while True:
            value = predicate()
            if await value if isinstance(value, Awaitable) else value:
                return
            await asyncio.sleep(0.002)


class Where:
    """Records the loop and thread each call of a resource ran in."""

    def __init__(self) -> None:
        self.calls: list[
            tuple[str, Hashable, asyncio.AbstractEventLoop | None, str]
        ] = []

    def note(self, what: str, key: Hashable) -> None:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        self.calls.append((what, key, loop, threading.current_thread().name))

    def of(
        self, what: str
    ) -> list[tuple[Hashable, asyncio.AbstractEventLoop | None, str]]:
        return [(k, loop, thread) for w, k, loop, thread in self.calls if w == what]


class AsyncRes:
    """A resource whose ping() and close() are coroutines."""

    def __init__(self, key: Hashable, where: Where) -> None:
        self.key = key
        self.where = where
        self.healthy = True
        self.closed = False
        self.fail_close = False

    async def ping(self) -> None:
        await asyncio.sleep(0)
        self.where.note("ping", self.key)
        if not self.healthy:
            raise ConnectionError(f"{self.key} is down")

    async def close(self) -> None:
        await asyncio.sleep(0)
        self.where.note("close", self.key)
        self.closed = True
        if self.fail_close:
            raise OSError("close failed")


class SyncRes:
    def __init__(self, key: Hashable, where: Where) -> None:
        self.key = key
        self.where = where

    def ping(self) -> None:
        self.where.note("ping", self.key)

    def close(self) -> None:
        self.where.note("close", self.key)


def test_the_warning_check_sees_an_unawaited_coroutine() -> None:
    async def never() -> None:
        pass

    with pytest.raises(AssertionError, match="never awaited"):  # noqa: SIM117
        with no_unawaited_coroutines():
            never()  # type: ignore[unused-coroutine]


# --- awaited on the pool's loop --------------------------------------------


def test_async_factory_ping_and_close_are_awaited_on_the_pools_loop() -> None:
    where = Where()
    made: list[AsyncRes] = []

    async def connect(key: str) -> AsyncRes:
        await asyncio.sleep(0)
        where.note("factory", key)
        res = AsyncRes(key, where)
        made.append(res)
        return res

    async def main() -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        async with AsyncPool(connect, health_check_interval=0.02) as pool:
            a = await pool.acquire("a")
            assert isinstance(a, AsyncRes)
            assert a is await pool.acquire("a")
            assert isinstance(a, Reusable)
            await until(lambda: len(where.of("ping")) >= 2)
            stats = await pool.stats()
            assert stats.created == 1
            assert stats.health_evictions == 0
        assert a.closed
        return loop

    loop = run(main())
    loop_thread = threading.main_thread().name  # asyncio.run's loop runs here
    assert where.of("factory") == [("a", loop, loop_thread)]
    assert set(where.of("ping")) == {("a", loop, loop_thread)}
    assert where.of("close") == [("a", loop, loop_thread)]


def test_a_pool_made_outside_a_loop_uses_the_loop_of_its_first_call() -> None:
    where = Where()

    async def connect(key: str) -> AsyncRes:
        where.note("factory", key)
        return AsyncRes(key, where)

    pool = AsyncPool(connect)

    async def main() -> asyncio.AbstractEventLoop:
        async with pool:
            await pool.acquire("a")
        return asyncio.get_running_loop()

    loop = run(main())
    assert where.of("factory")[0][1] is loop
    assert where.of("close")[0][1] is loop


def test_sync_and_async_factories_and_resources_mix_in_one_async_pool() -> None:
    where = Where()

    def sync_factory_async_resource(key: str) -> AsyncRes:
        where.note("factory", key)
        return AsyncRes(key, where)

    async def async_factory_sync_resource(key: str) -> SyncRes:
        where.note("factory", key)
        return SyncRes(key, where)

    async def main() -> asyncio.AbstractEventLoop:
        async with (
            AsyncPool(sync_factory_async_resource) as one,
            AsyncPool(async_factory_sync_resource, health_check_interval=0.02) as two,
        ):
            assert isinstance(await one.acquire("x"), AsyncRes)
            assert isinstance(await two.acquire("y"), SyncRes)
            await until(lambda: bool(where.of("ping")))
        return asyncio.get_running_loop()

    loop = run(main())
    factories = {k: (lp, t) for k, lp, t in where.of("factory")}
    # A sync factory runs on a worker thread, outside any loop; an async one
    # on the pool's loop.
    assert factories["x"][0] is None
    assert factories["x"][1].startswith("pooler_actors:")
    assert factories["y"][0] is loop
    # A sync ping/close runs on a worker; an async close on the loop.
    assert all(lp is None for k, lp, _ in where.of("ping") if k == "y")
    closes = {k: lp for k, lp, _ in where.of("close")}
    assert closes == {"x": loop, "y": None}


def test_a_plain_method_returning_an_awaitable_is_awaited_too() -> None:
    """redis-py's `ping()` is such a method: not `async def`, but awaitable."""
    pongs: list[str] = []

    class Client:
        def ping(self) -> Awaitable[None]:
            async def pong() -> None:
                pongs.append("pong")

            return pong()

        def close(self) -> Awaitable[None]:
            return asyncio.sleep(0)

    async def main() -> None:
        async with AsyncPool(Client, health_check_interval=0.02) as pool:
            await pool.acquire("a")
            await until(lambda: len(pongs) >= 2)

    run(main())


# --- failures -----------------------------------------------------------------


def test_async_factory_error_is_a_factory_error_with_its_cause() -> None:
    async def connect(key: str) -> AsyncRes:
        await asyncio.sleep(0)
        raise ConnectionRefusedError(f"no server for {key}")

    async def main() -> None:
        async with AsyncPool(connect) as pool:
            with pytest.raises(FactoryError) as info:
                await pool.acquire("a")
            assert isinstance(info.value.__cause__, ConnectionRefusedError)
            assert (await pool.stats()).factory_errors == 1

    run(main())


def test_an_async_ping_that_raises_evicts_the_resource() -> None:
    where = Where()

    async def main() -> None:
        async with AsyncPool(
            lambda key: AsyncRes(key, where), health_check_interval=0.02
        ) as pool:
            first = await pool.acquire("a")
            first.healthy = False
            await until(lambda: first.closed)
            assert (await pool.stats()).health_evictions == 1
            second = await pool.acquire("a")
            assert second is not first

    run(main())


def test_an_async_close_that_raises_is_counted() -> None:
    where = Where()

    async def main() -> None:
        async with AsyncPool(lambda key: AsyncRes(key, where)) as pool:
            res = await pool.acquire("a")
            res.fail_close = True
            assert await pool.release("a")  # returns once closed
            assert res.closed
            assert (await pool.stats()).close_errors == 1

    run(main())


def test_a_hung_async_factory_times_out_and_its_coroutine_is_cancelled() -> None:
    cancelled: list[str] = []

    async def connect(key: str) -> AsyncRes:
        try:
            await asyncio.Event().wait()  # never set
        except asyncio.CancelledError:
            cancelled.append(key)
            raise
        raise AssertionError("unreachable")

    async def main() -> None:
        async with AsyncPool(connect, create_timeout=0.1) as pool:
            with pytest.raises(FactoryError) as info:
                await pool.acquire("a")
            assert isinstance(info.value.__cause__, TimeoutError)
            # The pool wrote the creation off and cancelled its coroutine.
            await until(lambda: cancelled == ["a"])
            assert (await pool.stats()).abandoned == 1

    run(main())


def test_a_slow_async_factory_blocks_neither_the_supervisor_nor_the_loop() -> None:
    where = Where()

    async def main() -> None:
        gate = asyncio.Event()

        async def connect(key: str) -> AsyncRes:
            if key == "slow":
                await gate.wait()
            return AsyncRes(key, where)

        async with AsyncPool(connect) as pool:
            slow = asyncio.create_task(pool.acquire("slow"))
            await until(lambda: _creating(pool, 1))
            # While "slow" is being made, the pool answers and makes others.
            fast = await pool.acquire("fast")
            assert fast.key == "fast"
            assert not slow.done()
            gate.set()
            assert (await slow).key == "slow"

    run(main())


async def _creating(pool: AsyncPool[Any, Any], n: int) -> bool:
    return (await pool.stats()).creating == n


def test_cancelling_a_caller_leaves_its_async_creation_to_the_pool() -> None:
    calls: list[str] = []
    where = Where()

    async def main() -> None:
        gate = asyncio.Event()

        async def connect(key: str) -> AsyncRes:
            calls.append(key)
            await gate.wait()
            return AsyncRes(key, where)

        async with AsyncPool(connect) as pool:
            caller = asyncio.create_task(pool.acquire("a"))
            await until(lambda: calls == ["a"])
            caller.cancel()
            with pytest.raises(asyncio.CancelledError):
                await caller
            gate.set()
            # The creation was not the caller's to cancel: it completes once
            # and the next caller gets that resource.
            res = await pool.acquire("a")
            assert res.key == "a"
            assert calls == ["a"]

    run(main())


# --- a sync Pool refuses asyncio-native code clearly ---------------------------


async def _async_connect(key: str) -> AsyncRes:
    return AsyncRes(key, Where())


class _AsyncCallable:
    async def __call__(self, key: str) -> AsyncRes:
        return AsyncRes(key, Where())


@pytest.mark.parametrize("factory", [_async_connect, _AsyncCallable()])
def test_a_sync_pool_refuses_an_async_factory_at_construction(
    factory: Callable[[str], Awaitable[AsyncRes]],
) -> None:
    with pytest.raises(TypeError, match="AsyncPool"):
        Pool(factory)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="AsyncPool"):
        PoolSupervisor.start(factory, PoolOptions())


def test_a_sync_pool_refuses_resources_with_async_methods() -> None:
    with no_unawaited_coroutines(), Pool(lambda key: AsyncRes(key, Where())) as pool:
        with pytest.raises(FactoryError) as info:
            pool.acquire("a")
        assert isinstance(info.value.__cause__, TypeError)
        assert "AsyncPool" in str(info.value.__cause__)


def test_a_sync_pool_refuses_a_factory_that_returns_a_coroutine() -> None:
    with no_unawaited_coroutines(), Pool(_async_connect_wrapped) as pool:
        with pytest.raises(FactoryError) as info:
            pool.acquire("a")
        assert isinstance(info.value.__cause__, TypeError)
        assert "AsyncPool" in str(info.value.__cause__)


def _async_connect_wrapped(key: str) -> Any:
    return _async_connect(key)  # a plain def that hands back a coroutine


# --- a real asyncio client: redis.asyncio against Valkey -------------------------


class TenantRedis(redis.asyncio.Redis):
    """A `redis.asyncio` client as a pool resource.

    `ping()` records the server's answers (proof it was awaited); redis-py
    names its close coroutine `aclose()`, the pool calls `close()`.
    """

    pongs: list[bool]

    async def ping(self, **kwargs: Any) -> bool:  # type: ignore[override]
        pong: bool = await super().ping(**kwargs)
        self.pongs.append(pong)
        return pong

    async def close(self) -> None:  # type: ignore[override]
        await self.aclose()


def redis_factory(
    server: ValkeyServer, name: str, made: list[int]
) -> Callable[[int], Coroutine[Any, Any, TenantRedis]]:
    async def connect(db: int) -> TenantRedis:
        client = TenantRedis(
            host="127.0.0.1", port=server.port, db=db, client_name=f"{name}-{db}"
        )
        client.pongs = []
        await client.ping()  # fail here, not on first use
        made.append(db)
        return client

    return connect


def server_clients(server: ValkeyServer, name: str) -> list[str]:
    """Names of the server's clients that belong to the test named `name`."""
    with redis.Redis(host="127.0.0.1", port=server.port) as admin:
        return sorted(
            c["name"] for c in admin.client_list() if c["name"].startswith(name)
        )


def test_redis_asyncio_clients_keyed_by_db_number(valkey: ValkeyServer) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    made: list[int] = []
    key = f"{name}:greeting"

    async def main() -> list[TenantRedis]:
        pool = AsyncPool(
            redis_factory(valkey, name, made),
            max_open_resources=4,
            health_check_interval=0.02,
        )
        async with pool:
            clients = [await pool.acquire(db) for db in (0, 1, 2)]
            for db, client in enumerate(clients):
                await client.set(key, f"hello from db {db}")
            for db in (0, 1, 2):
                client = await pool.acquire(db)
                assert client is clients[db]
                assert await client.get(key) == f"hello from db {db}".encode()
                await client.delete(key)
            # One client per db (a client may hold a second connection while
            # a health check's ping runs beside a command: names, not counts).
            assert sorted(set(server_clients(valkey, name))) == [
                f"{name}-{db}" for db in (0, 1, 2)
            ]
            # Health checks: each ping awaited, answered by the server.
            await until(lambda: all(len(c.pongs) >= 3 for c in clients))
            assert all(all(c.pongs) for c in clients)
            assert (await pool.stats()).health_evictions == 0
        return clients

    clients = run(main())
    assert made == [0, 1, 2]
    # close() was awaited: every connection of the pool is gone from the server.
    assert server_clients(valkey, name) == []
    assert len(clients) == 3


def test_redis_asyncio_pool_cancelled_waiter_is_withdrawn(valkey: ValkeyServer) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    made: list[int] = []

    async def main() -> None:
        async with AsyncPool(
            redis_factory(valkey, name, made), max_open_resources=1
        ) as pool:
            await pool.acquire(0)  # the only slot
            waiter = asyncio.create_task(pool.acquire(1))
            await until(lambda: _waiting(pool, 1))
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            await until(lambda: _waiting(pool, 0))
            assert await pool.release(0)
            client = await pool.acquire(2)
            assert await client.ping()
            # No client was ever made for the cancelled caller's db 1.
            assert made == [0, 2]
            assert server_clients(valkey, name) == [f"{name}-2"]

    run(main())
    assert server_clients(valkey, name) == []


async def _waiting(pool: AsyncPool[Any, Any], n: int) -> bool:
    return (await pool.stats()).wait_count == n


def test_the_asyncio_guides_redis_program_runs(valkey: ValkeyServer) -> None:
    blocks = re.findall(r"^```py\n(.*?)^```$", GUIDE.read_text(), re.S | re.M)
    (program,) = [b for b in blocks if "redis.asyncio" in b]
    env = {**os.environ, "REDIS_PORT": str(valkey.port)}
    done = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "b'hello'\n"
    assert done.stderr == ""
