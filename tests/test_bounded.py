"""Bounded waits by default, close with leases out, lease tracing events and
checkin's argument check (SPEC 12: "Bounded waits by default", "Messages",
"Events")."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import threading
import time
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from resources import Res
from structlog.testing import capture_logs

from pooler_actors import (
    AcquireTimeout,
    AsyncPool,
    Checkin,
    Pool,
    PoolClosedError,
    PoolOptions,
)


def new_pool(**options: Any) -> Pool[Hashable, Res]:
    options.setdefault("health_check_interval", None)
    return Pool(Res, **options)


# --- acquire_timeout defaults to 30 s ----------------------------------------


def test_acquire_timeout_defaults_to_30_seconds() -> None:
    assert PoolOptions().acquire_timeout == 30.0
    assert PoolOptions(acquire_timeout=None).acquire_timeout is None  # explicit
    with new_pool(max_holders=1) as pool:
        assert pool.options.acquire_timeout == 30.0


def test_a_nested_lease_of_the_same_key_times_out_instead_of_hanging() -> None:
    # max_per_key=1, exclusive: the inner lease waits for the outer one, which
    # its own caller holds; it ends in AcquireTimeout (30 s by default).
    with new_pool(max_holders=1, acquire_timeout=0.1) as pool:
        with pool.lease("a") as outer:
            with pytest.raises(AcquireTimeout), pool.lease("a"):
                pass  # pragma: no cover - never reached
            assert outer.key == "a"
        with pool.lease("a") as again:  # the pool still serves the key
            assert again.key == "a"


# --- a wrong argument to checkin ----------------------------------------------


def test_checkin_of_a_resource_is_a_type_error_on_both_paths() -> None:
    with new_pool(max_holders=1) as pool:
        lease = pool.checkout("a")
        with pytest.raises(TypeError) as direct:
            pool.checkin(lease.resource)  # type: ignore[arg-type]
        with pytest.raises(TypeError) as message:
            Checkin(lease.resource)  # type: ignore[arg-type]
        assert str(direct.value) == str(message.value)
        assert str(direct.value).startswith("checkin needs a Lease, got <")
        # Nothing changed: the lease is still out, and checks in once.
        assert pool.stats().holders == 1
        assert pool.checkin(lease) is True
        assert pool.checkin(lease) is False


def test_async_checkin_of_a_resource_is_the_same_type_error() -> None:
    async def main() -> str:
        async with AsyncPool(Res, max_holders=1, health_check_interval=None) as pool:
            lease = await pool.checkout("a")
            try:
                with pytest.raises(TypeError) as error:
                    await pool.checkin(lease.resource)  # type: ignore[arg-type]
                return str(error.value)
            finally:
                await pool.checkin(lease)

    assert asyncio.run(main()).startswith("checkin needs a Lease, got <")


def test_checkin_of_another_pools_lease_stays_a_value_error() -> None:
    with new_pool(max_holders=1) as pool, new_pool(max_holders=1) as other:
        lease = other.checkout("a")
        with pytest.raises(ValueError, match="was not granted"):
            pool.checkin(lease)
        with pytest.raises(ValueError, match="was not granted"):
            pool.actor_ref.ask(Checkin(lease))
        assert other.checkin(lease) is True


# --- events for tracing leases --------------------------------------------------


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


def test_checkout_and_checkin_events_carry_the_lease_id_and_hold_time() -> None:
    with capture_logs() as logs, new_pool(max_holders=1, name="t") as pool:
        first = pool.checkout("a")  # created: a message the core answers
        assert pool.checkin(first)  # at the counter
        second = pool.checkout("a")  # the idle resource, at the counter
        assert pool.actor_ref.ask(Checkin(second))  # the message
        wait_for(lambda: len(events(logs, "pool.lease.checkin")) == 2)
    outs = events(logs, "pool.lease.checkout")
    ins = events(logs, "pool.lease.checkin")
    assert [e["lease"] for e in outs] == [first.lid, second.lid]
    assert [e["lease"] for e in ins] == [first.lid, second.lid]
    for event in outs + ins:
        assert (event["log_level"], event["pool"], event["key"]) == ("debug", "t", "a")
    assert all(e["held_s"] >= 0 and e["broken"] is False for e in ins)


def test_a_hand_on_is_a_checkin_and_a_checkout() -> None:
    with capture_logs() as logs, new_pool(max_holders=1) as pool:
        held = pool.checkout("a")
        got: list[Any] = []
        waiter = threading.Thread(target=lambda: got.append(pool.checkout("a")))
        waiter.start()
        wait_for(lambda: pool.stats().wait_count == 1)
        pool.checkin(held)  # handed on to the waiter
        waiter.join()
        pool.checkin(got[0])
        wait_for(lambda: len(events(logs, "pool.lease.checkin")) == 2)
    assert [e["lease"] for e in events(logs, "pool.lease.checkout")] == [
        held.lid,
        got[0].lid,
    ]
    assert [e["lease"] for e in events(logs, "pool.lease.checkin")] == [
        held.lid,
        got[0].lid,
    ]


def test_broken_event_says_why() -> None:
    def is_broken(error: BaseException) -> bool:
        return isinstance(error, ConnectionError)

    with capture_logs() as logs, new_pool(max_holders=1, is_broken=is_broken) as pool:
        lease = pool.checkout("a")
        pool.checkin(lease, broken=True)
        with pytest.raises(ConnectionError), pool.lease("b"):
            raise ConnectionError("reset by peer")
        wait_for(lambda: len(events(logs, "pool.lease.broken")) == 2)
    broken = events(logs, "pool.lease.broken")
    assert [(e["key"], e["reason"]) for e in broken] == [
        ("a", "checkin"),
        ("b", "ConnectionError('reset by peer')"),
    ]
    assert broken[0]["lease"] == lease.lid
    assert [e["broken"] for e in events(logs, "pool.lease.checkin")] == [True, True]


# --- close(timeout): leases out are left to their holders -----------------------


def test_close_with_a_lease_out_returns_after_its_timeout() -> None:
    with capture_logs() as logs:
        pool = new_pool(max_holders=1, name="c")
        lease = pool.checkout("a")
        idle = pool.checkout("b")
        pool.checkin(idle)
        started = time.monotonic()
        pool.close(timeout=0.1)
        assert time.monotonic() - started < 3.0  # not drain_timeout (30 s)
        assert pool.closed
        assert pool.actor_ref.thread is not None
        assert not pool.actor_ref.thread.is_alive()
        assert idle.resource.closes == 1  # an idle one is closed by close()
        assert lease.resource.closes == 0  # never under its holder
        (out,) = events(logs, "pool.close.lease_out")
        assert (out["log_level"], out["pool"], out["key"]) == ("warning", "c", "a")
        assert out["lease"] == lease.lid
        # Every later call fails at once...
        for call in (
            lambda: pool.checkout("a"),
            lambda: pool.checkout("z"),
            pool.stats,
            lambda: pool.release("a"),
        ):
            with pytest.raises(PoolClosedError):
                call()
        # ... but the checkin still checks in: the resource closes now.
        assert pool.checkin(lease) is True
        wait_for(lambda: lease.resource.closes == 1)
        assert pool.checkin(lease) is False
        pool.close()  # idempotent, at once


def test_a_checkin_message_after_close_also_checks_in() -> None:
    pool = new_pool(max_holders=1)
    lease = pool.checkout("a")
    pool.close(timeout=0)
    assert pool.actor_ref.ask(Checkin(lease)) is True
    wait_for(lambda: lease.resource.closes == 1)
    assert pool.actor_ref.ask(Checkin(lease)) is False
    assert lease.resource.closes == 1


def test_a_lease_left_out_and_dropped_still_closes_its_resource() -> None:
    pool = new_pool(max_holders=1)
    lease = pool.checkout("a")
    res = lease.resource
    pool.close(timeout=0)
    assert res.closes == 0
    del lease  # never checked in: collected
    gc.collect()
    wait_for(lambda: res.closes == 1)


def test_a_shared_resource_left_out_closes_at_its_last_checkin() -> None:
    pool = new_pool(max_holders=None)
    first, second = pool.checkout("a"), pool.checkout("a")
    assert first.resource is second.resource
    pool.close(timeout=0.05)
    pool.checkin(first)
    assert first.resource.closes == 0  # the second lease still holds it
    pool.checkin(second)
    wait_for(lambda: first.resource.closes == 1)


def test_close_waits_for_a_holder_that_checks_in_within_its_timeout() -> None:
    with capture_logs() as logs:
        pool = new_pool(max_holders=1)
        lease = pool.checkout("a")
        checked_in = threading.Timer(0.05, lambda: pool.checkin(lease))
        checked_in.start()
        pool.close(timeout=60)
        checked_in.join()
        assert lease.resource.closes == 1  # closed by the close itself
    assert not events(logs, "pool.close.lease_out")


def test_a_bad_close_timeout_changes_nothing() -> None:
    with new_pool(max_holders=1) as pool:
        with pytest.raises(ValueError, match="timeout"):
            pool.close(timeout=-1)
        assert not pool.closed
        with pool.lease("a") as res:
            assert res.key == "a"


def test_async_close_with_a_lease_out_returns_after_its_timeout() -> None:
    async def main() -> Res:
        pool = AsyncPool(Res, max_holders=1, health_check_interval=None)
        lease = await pool.checkout("a")
        started = time.monotonic()
        await pool.close(timeout=0.1)
        assert time.monotonic() - started < 3.0
        assert lease.resource.closes == 0
        with pytest.raises(PoolClosedError):
            await pool.checkout("a")
        assert await pool.checkin(lease) is True
        return lease.resource

    res = asyncio.run(main())
    wait_for(lambda: res.closes == 1)


def test_interpreter_exit_does_not_wait_for_held_leases(tmp_path: Path) -> None:
    script = tmp_path / "forgot.py"
    script.write_text(
        "import logging, sys\n"
        "logging.basicConfig(stream=sys.stderr, level=logging.WARNING)\n"
        "from pooler_actors import Pool\n"
        "class Res:\n"
        "    def __init__(self, key): self.key = key\n"
        "    def ping(self): pass\n"
        "    def close(self): print('closed', self.key, flush=True)\n"
        "pool = Pool(Res, max_holders=1, health_check_interval=None)\n"
        "held = pool.checkout('held')\n"
        "pool.checkin(pool.checkout('idle'))\n"
        "print('exiting', flush=True)\n"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert time.monotonic() - started < 10.0  # was drain_timeout: 30 s
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["exiting", "closed idle"]
    assert "pool.close.lease_out" in done.stderr
