"""`reset=` at checkin and `check=` at checkout (SPEC 12): user code that runs
in the caller's thread, never on the supervisor's."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from conftest import wait_for
from structlog.testing import capture_logs

from pooler_actors import AcquireTimeout, AsyncPool, Pool
from pooler_actors.messages import Checkin


class _Conn:
    made = 0

    def __init__(self) -> None:
        _Conn.made += 1
        self.n = _Conn.made
        self.closed = 0
        self.dirty = False

    def ping(self) -> None:
        pass

    def close(self) -> None:
        self.closed += 1


def test_reset_runs_in_the_returning_callers_thread_before_a_hand_on() -> None:
    seen: list[tuple[int, bool]] = []
    got: list[Any] = []

    def reset(conn: _Conn) -> None:
        seen.append((threading.get_ident(), bool(got)))
        conn.dirty = False

    with Pool(
        lambda key: _Conn(), max_open_resources=1, max_holders=1, reset=reset
    ) as pool:
        first = pool.checkout("k", timeout=5)
        first.resource.dirty = True
        waiter = threading.Thread(
            target=lambda: got.append(pool.checkout("k", timeout=10))
        )
        waiter.start()
        wait_for(lambda: pool.stats().wait_count == 1)
        assert pool.checkin(first)
        waiter.join(10)
        assert seen == [(threading.get_ident(), False)]  # here, and before
        assert got[0].resource is first.resource and not got[0].resource.dirty
        assert pool.checkin(got[0])
        assert not pool.checkin(got[0])  # a second checkin: no second reset
        assert len(seen) == 2


def test_a_reset_that_raises_checks_the_resource_in_as_broken() -> None:
    def reset(conn: _Conn) -> None:
        raise RuntimeError("still in a transaction")

    with (
        capture_logs() as logs,
        Pool(
            lambda key: _Conn(), max_open_resources=1, max_holders=1, reset=reset
        ) as pool,
    ):
        lease = pool.checkout("k", timeout=5)
        assert pool.checkin(lease)  # the error is logged, not raised
        wait_for(lambda: lease.resource.closed == 1)
        failed = [e for e in logs if e["event"] == "pool.lease.reset_failed"]
        assert failed and failed[0]["lease"] == lease.lid
        again = pool.checkout("k", timeout=5)
        assert again.resource is not lease.resource
        pool.checkin(again, broken=True)  # broken: no reset runs
        assert pool.stats().broken == 2


def test_an_actors_checkin_message_runs_the_reset_too() -> None:
    resets: list[int] = []
    with Pool(
        lambda key: _Conn(),
        max_holders=1,
        reset=lambda conn: resets.append(conn.n),
    ) as pool:
        lease = pool.checkout("k", timeout=5)
        assert pool.actor_ref.ask(Checkin(lease)) is True
        assert resets == [lease.resource.n]


def test_an_actors_checkin_message_runs_an_async_pools_async_reset() -> None:
    """An actor's `Checkin` to an AsyncPool runs the async `reset` on the
    pool's loop and waits for it; from the loop itself it is a clear error,
    and with the loop gone the resource is checked in as broken."""
    resets: list[int] = []
    pools: list[AsyncPool[str, _Conn]] = []

    async def reset(conn: _Conn) -> None:
        await asyncio.sleep(0)
        resets.append(conn.n)

    async def main() -> Any:
        pool = AsyncPool(lambda key: _Conn(), max_holders=1, reset=reset)
        pools.append(pool)
        lease = await pool.checkout("k", timeout=5)
        with pytest.raises(RuntimeError, match="own event loop"):
            pool.actor_ref.ask(Checkin(lease), block=False)
        assert not lease.checked_in  # nothing changed
        answer = await asyncio.to_thread(pool.actor_ref.ask, Checkin(lease))
        assert answer is True and resets == [lease.resource.n]
        again = await pool.checkout("k", timeout=5)
        assert again.resource is lease.resource  # reset, not retired
        return again

    lease = asyncio.run(main())
    pool = pools[0]
    # The pool's loop is gone: nothing can run the reset, so it is retired.
    assert pool.actor_ref.ask(Checkin(lease)) is True
    wait_for(lambda: lease.resource.closed == 1)
    assert resets == [lease.resource.n]
    asyncio.run(pool.close())


def test_a_failed_check_discards_the_resource_and_gives_another() -> None:
    bad: set[int] = set()

    def check(conn: _Conn) -> None:
        if conn.n in bad:
            raise ConnectionError("server closed the connection")

    with (
        capture_logs() as logs,
        Pool(
            lambda key: _Conn(), max_open_resources=2, max_holders=1, check=check
        ) as pool,
    ):
        first = pool.checkout("k", timeout=5)
        pool.checkin(first)
        bad.add(first.resource.n)  # killed server-side while idle
        second = pool.checkout("k", timeout=5)
        assert second.resource is not first.resource
        wait_for(lambda: first.resource.closed == 1)
        assert [e["event"] for e in logs if e["event"].endswith("check_failed")]
        pool.checkin(second)


def test_a_check_that_always_fails_ends_in_a_timeout() -> None:
    checks: list[int] = []

    def check(conn: _Conn) -> None:
        checks.append(conn.n)
        raise ConnectionError("down")

    pool = Pool(lambda key: _Conn(), max_holders=1, check=check, acquire_timeout=None)
    with pool:
        with pytest.raises(AcquireTimeout):
            pool.checkout("k", timeout=0.3)
        assert pool.stats().holders == 0
        checks.clear()
        with pytest.raises(AcquireTimeout):  # no deadline: a bounded number of tries
            pool.checkout("k", timeout=None)
    assert len(checks) == pool.options.max_open_resources + 1


def test_a_sync_pool_refuses_async_hooks() -> None:
    async def reset(conn: Any) -> None:
        pass

    with pytest.raises(TypeError, match=r"reset=.*AsyncPool"):
        Pool(lambda key: _Conn(), max_holders=1, reset=reset)
    with pytest.raises(TypeError, match="check must be a callable"):
        Pool(lambda key: _Conn(), max_holders=1, check=42)


def test_async_reset_and_check_are_awaited() -> None:
    calls: list[str] = []

    async def reset(conn: _Conn) -> None:
        await asyncio.sleep(0)
        calls.append(f"reset {conn.n}")

    async def check(conn: _Conn) -> None:
        await asyncio.sleep(0)
        calls.append(f"check {conn.n}")

    async def main() -> None:
        async with AsyncPool(
            lambda key: _Conn(), max_holders=1, reset=reset, check=check
        ) as pool:
            async with pool.lease("k", timeout=5) as conn:
                n = conn.n
            assert calls == [f"check {n}", f"reset {n}"]

    asyncio.run(main())
