"""What a database user expects (SPEC 12), without a database: the factory's
key, plain objects with `ping=`/`close=`, retries by default, messages.

The same behaviours against a real PostgreSQL are in `test_psycopg.py`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Hashable
from typing import Any

import pykka
import pytest
from conftest import pool_threads, wait_for
from resources import Res
from test_capacity_driver import MemoryCapacity

from pooler_actors import AcquireTimeout, AsyncPool, FactoryError, Pool
from pooler_actors.errors import NotPoolable, short_repr
from pooler_actors.redis import RedisCapacity

# -- the factory gets the key -------------------------------------------------


class Conn:
    """A resource class whose constructor's one parameter has a default."""

    def __init__(self, tenant: str = "default") -> None:
        self.tenant = tenant

    def ping(self) -> None:
        pass

    def close(self) -> None:
        pass


def connect_like(conninfo: str = "", *, autocommit: bool = False, **kw: Any) -> Res:
    """`psycopg.connect`'s shape: an optional DSN, then keywords."""
    return Res(conninfo)


def star(*args: Hashable) -> Res:
    return Res(args)


def test_a_defaulted_parameter_gets_the_key() -> None:
    with Pool(Conn, health_check_interval=None) as pool:
        assert pool.acquire("acme").tenant == "acme"


def test_a_connect_shaped_factory_gets_the_dsn_key() -> None:
    with Pool(connect_like, health_check_interval=None) as pool:
        assert pool.acquire("dbname=acme").key == "dbname=acme"


def test_star_args_gets_the_key() -> None:
    with Pool(star, health_check_interval=None) as pool:
        assert pool.acquire("k").key == ("k",)


def test_a_zero_argument_factory_still_works() -> None:
    with Pool(lambda: Res("same"), health_check_interval=None) as pool:
        assert pool.acquire("a").key == "same"


def two_keys(a: str, b: str) -> Res:
    return Res(a + b)


def keyword_needed(key: str, *, password: str) -> Res:
    return Res(key)


@pytest.mark.parametrize("factory", [two_keys, keyword_needed, lambda a, b: None])
def test_a_factory_taking_neither_one_nor_zero_arguments_fails_at_build(
    factory: Any,
) -> None:
    before = pykka.ActorRegistry.get_all()
    with pytest.raises(TypeError, match="cannot be called with one positional") as e:
        Pool(factory)
    name = getattr(factory, "__qualname__", "")
    assert name in str(e.value)
    # Nothing was started.
    assert pykka.ActorRegistry.get_all() == before
    assert not pool_threads()


# -- plain objects: ping= and close= ---------------------------------------------


class Plain:
    """An object with no ping() and no close(): not Reusable."""

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.alive = True


class Hooks:
    """`ping=` and `close=` that record which thread ran them."""

    def __init__(self) -> None:
        self.pings: list[str] = []
        self.closes: list[tuple[Plain, str]] = []
        self.fail_ping = False

    def ping(self, obj: Plain) -> None:
        self.pings.append(threading.current_thread().name)
        if self.fail_ping or not obj.alive:
            raise ConnectionError("gone")

    def close(self, obj: Plain) -> None:
        obj.alive = False
        self.closes.append((obj, threading.current_thread().name))


def test_plain_objects_are_pooled_with_ping_and_close() -> None:
    hooks = Hooks()
    with Pool(
        Plain,
        ping=hooks.ping,
        close=hooks.close,
        health_check_interval=0.02,
        name="plain",
    ) as pool:
        obj = pool.acquire("a")
        assert isinstance(obj, Plain) and obj.key == "a"
        wait_for(lambda: len(hooks.pings) >= 2)
        obj.alive = False  # the next health check evicts it, closing it
        wait_for(lambda: hooks.closes and hooks.closes[0][0] is obj)
        assert pool.acquire("a") is not obj
    for thread in hooks.pings + [t for _, t in hooks.closes]:
        assert thread.startswith("pooler_actors:plain:")
        assert thread != "pooler_actors:plain:supervisor"


def test_ping_and_close_hooks_replace_the_resources_own() -> None:
    class Both(Res):
        def ping(self) -> None:
            raise AssertionError("the resource's own ping must not run")

        def close(self) -> None:
            raise AssertionError("the resource's own close must not run")

    closed: list[object] = []
    with Pool(
        Both, ping=lambda r: None, close=closed.append, health_check_interval=0.01
    ) as pool:
        res = pool.acquire("a")
        assert pool.release("a") is True
    assert closed == [res]


def test_with_only_close_given_the_resource_needs_its_own_ping() -> None:
    with Pool(
        Plain, close=lambda o: None, health_check_interval=None, create_retries=3
    ) as pool:
        with pytest.raises(FactoryError, match=r"has no ping\(\) method") as e:
            pool.acquire("a", timeout=10)
        assert isinstance(e.value.__cause__, NotPoolable)
        assert pool.stats().create_retries == 0  # never retried


def test_a_plain_object_without_hooks_is_not_poolable_and_not_retried() -> None:
    calls: list[Hashable] = []

    def factory(key: Hashable) -> Plain:
        calls.append(key)
        return Plain(key)

    with (
        Pool(factory, health_check_interval=None) as pool,
        pytest.raises(FactoryError, match="ping= and close=") as e,
    ):
        pool.acquire("a", timeout=10)
        assert isinstance(e.value.__cause__, NotPoolable)
        assert isinstance(e.value.__cause__, TypeError)
    assert calls == ["a"]


@pytest.mark.parametrize("field", ["ping", "close"])
def test_a_hook_that_is_not_callable_is_a_type_error(field: str) -> None:
    with pytest.raises(TypeError, match=f"{field} must be a callable"):
        Pool(Plain, **{field: "SELECT 1"})
    assert not pool_threads()


@pytest.mark.parametrize("field", ["ping", "close"])
def test_an_async_hook_needs_an_async_pool(field: str) -> None:
    async def hook(obj: object) -> None:
        pass

    with pytest.raises(TypeError, match="use AsyncPool"):
        Pool(Plain, **{field: hook})
    assert not pool_threads()


def test_async_pool_awaits_async_ping_and_close_on_its_loop() -> None:
    seen: list[str] = []

    async def ping(obj: Plain) -> None:
        asyncio.get_running_loop()  # raises unless on the loop
        seen.append("ping")

    async def close(obj: Plain) -> None:
        asyncio.get_running_loop()
        seen.append("close")

    async def main() -> None:
        async with AsyncPool(
            Plain, ping=ping, close=close, health_check_interval=0.01
        ) as pool:
            obj = await pool.acquire("a", timeout=10)
            assert isinstance(obj, Plain)
            while "ping" not in seen:
                await asyncio.sleep(0.01)  # the loop must run for the ping
            assert await pool.release("a") is True

    asyncio.run(main())
    assert seen[-1] == "close"


def test_async_pool_takes_sync_hooks_too() -> None:
    hooks = Hooks()

    async def main() -> None:
        async with AsyncPool(
            Plain, ping=hooks.ping, close=hooks.close, health_check_interval=None
        ) as pool:
            obj = await pool.acquire("a", timeout=10)
            assert await pool.release("a") is True
            assert hooks.closes[0][0] is obj

    asyncio.run(main())


# -- messages --------------------------------------------------------------------


def refused(key: Hashable) -> Res:
    raise ConnectionError("refused")


def test_factory_error_names_the_pool_the_key_and_the_cause() -> None:
    with (
        Pool(refused, name="x", create_retries=0, health_check_interval=None) as pool,
        pytest.raises(FactoryError) as e,
    ):
        pool.acquire("a", timeout=10)
    assert (
        str(e.value) == "pool 'x': factory failed for key 'a': ConnectionError: refused"
    )
    assert e.value.key == "a"
    assert e.value.pool_name == "x"
    assert isinstance(e.value.__cause__, ConnectionError)


def test_a_huge_key_is_shortened_in_exceptions_and_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = "k" * 1_000_000
    with caplog.at_level(logging.DEBUG, logger="pooler_actors"):
        with (
            Pool(refused, name="big", create_retries=1, create_backoff=0.01) as pool,
            pytest.raises(FactoryError) as e,
        ):
            pool.acquire(key, timeout=10)
        assert e.value.key is key  # the key itself is kept
        assert len(str(e.value)) < 400
        assert short_repr(key) in str(e.value)
        assert str(AcquireTimeout(key, 1.0)).count("k") <= 200
        records = [r for r in caplog.records if r.name == "pooler_actors"]
        assert any(r.getMessage().startswith("pool.factory.retry") for r in records)
        for record in records:
            assert len(record.getMessage()) < 1000, record.getMessage()[:300]
            shown = getattr(record, "key", None)
            assert shown is None or len(str(shown)) <= 200


def test_short_repr() -> None:
    assert short_repr("a") == "'a'"
    assert len(short_repr("x" * 500)) == 200
    assert short_repr("x" * 500).endswith("...")

    class Bad:
        def __repr__(self) -> str:
            raise RuntimeError

    assert short_repr(Bad()) == "<unrepresentable Bad>"


def test_a_fleet_limit_mismatch_reaches_the_caller_as_its_value_error() -> None:
    cap = MemoryCapacity(limit=2)
    cap.refuse = ValueError("this process has limit=2 but the fleet's is 3")
    with (
        Pool(Res, global_capacity=cap, health_check_interval=None) as pool,
        pytest.raises(ValueError, match="limit=2 but the fleet's is 3"),
    ):
        pool.acquire("a", timeout=10)


def test_an_unreachable_fleet_is_still_an_acquire_timeout() -> None:
    cap = MemoryCapacity(limit=2)
    cap.down = True
    with (
        Pool(Res, global_capacity=cap, health_check_interval=None) as pool,
        pytest.raises(AcquireTimeout),
    ):
        pool.acquire("a", timeout=10)


def test_a_redis_limit_mismatch_names_both_limits(valkey: Any) -> None:
    name = f"test-{uuid.uuid4().hex[:12]}"
    first = RedisCapacity(valkey.url, name=name, limit=3)
    other = RedisCapacity(valkey.url, name=name, limit=4)
    try:
        first.check()
        with (
            Pool(Res, global_capacity=other, health_check_interval=None) as pool,
            pytest.raises(
                ValueError, match=r"limit=4 but the fleet's stored limit is 3"
            ),
        ):
            pool.acquire("a", timeout=10)
    finally:
        first.close()
        other.close()
