"""Pools under one fleet-wide cap, against a real Valkey server and real processes.

The resources count themselves on the server while they are open
([Counted][fleet_worker.Counted]), so "the cap holds" is measured on what
the pools really opened, besides the semaphore's own count. Each test names
its own semaphore; tests that pause, stop or restart a server start their
own. Leases last 1 s here (5 s where a pause must not end them).
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import wait_for
from fleet_worker import Counted, counter_keys
from line_process import LineProcess
from structlog.testing import capture_logs
from valkey_server import ValkeyServer, free_port, usage

from pooler_actors import (
    AcquireTimeout,
    AsyncPool,
    CapacityUnavailable,
    Pool,
    PoolClosedError,
)
from pooler_actors.redis import RedisCapacity

WORKER = str(Path(__file__).resolve().parent / "fleet_worker.py")
TTL = 1.0

Log = list[MutableMapping[str, Any]]


def fresh_name() -> str:
    return f"fleet-{uuid.uuid4().hex[:12]}"


class Worker(LineProcess):
    """A pool in its own process (tests/fleet_worker.py)."""

    def __init__(self, url: str, name: str, limit: int, label: str, *mode: str):
        super().__init__(
            f"worker {label}", WORKER, url, name, str(limit), str(TTL), label, *mode
        )


class Fleet:
    """Pools of this process and worker processes of one test; all ended after it."""

    def __init__(self, url: str, counter_url: str | None = None) -> None:
        self.url = url
        # Where resources count themselves: another server than the
        # semaphore's when a test stops that one.
        self.client = redis.Redis.from_url(counter_url or url, socket_timeout=5)
        self.pools: list[Pool[str, Counted]] = []
        self.workers: list[Worker] = []

    def pool(
        self,
        name: str,
        limit: int,
        *,
        url: str | None = None,
        factory: Callable[[str], Counted] | None = None,
        lease_ttl: float = TTL,
        on_unavailable: Any = "closed",
        **options: Any,
    ) -> Pool[str, Counted]:
        cap = RedisCapacity(
            url or self.url,
            name=name,
            limit=limit,
            lease_ttl=lease_ttl,
            on_unavailable=on_unavailable,
        )
        options.setdefault("max_holders", 1)
        options.setdefault("health_check_interval", None)
        options.setdefault("drain_timeout", 2.0)  # a failed test ends soon
        pool: Pool[str, Counted] = Pool(
            factory or (lambda key: Counted(self.client, name, "local", key)),
            global_capacity=cap,
            name=f"{name}-{len(self.pools)}",
            **options,
        )
        self.pools.append(pool)
        return pool

    def worker(self, name: str, limit: int, label: str, *mode: str) -> Worker:
        worker = Worker(self.url, name, limit, label, *mode)
        self.workers.append(worker)
        worker.wait_line("ready")
        return worker

    def counted(self, name: str) -> tuple[int, int, list[str]]:
        """Resources open now, the most ever open at once, the creation order."""
        open_, high, order = counter_keys(name)
        return (
            int(self.client.get(open_) or 0),
            int(self.client.get(high) or 0),
            [_text(x) for x in self.client.lrange(order, 0, -1)],
        )

    def end(self) -> None:
        for pool in self.pools:
            pool.close()
        for worker in self.workers:
            worker.kill()


@pytest.fixture
def fleet(valkey: ValkeyServer) -> Iterator[Fleet]:
    made = Fleet(valkey.url)
    try:
        yield made
    finally:
        made.end()


@pytest.fixture
def own_fleet(valkey: ValkeyServer, own_valkey: ValkeyServer) -> Iterator[Fleet]:
    made = Fleet(own_valkey.url, counter_url=valkey.url)
    try:
        yield made
    finally:
        made.end()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def found(logs: Log, event: str, **fields: Any) -> Log:
    return [
        e
        for e in list(logs)
        if e["event"] == event and all(e.get(k) == v for k, v in fields.items())
    ]


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run `call` in a thread; its result (or exception) lands in the list."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(call())
        except BaseException as error:
            out.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def result(thread: threading.Thread, out: list[Any], timeout: float = 20.0) -> Any:
    thread.join(timeout)  # hang guard
    assert not thread.is_alive(), "still blocked"
    return out[0]


def checkout_until_granted(pool: Pool[str, Counted], prefix: str) -> str:
    """Check out new keys until one is created; return that key.

    Right after an outage a creation may still fail fast: the capacity
    thread probes the server again only after a short interval.
    """
    deadline = time.monotonic() + 15
    for n in range(1000):
        key = f"{prefix}{n}"
        try:
            lease = pool.checkout(key, timeout=5)
        except AcquireTimeout:
            assert time.monotonic() < deadline, "the pool never recovered"
            time.sleep(0.05)
            continue
        pool.checkin(lease)
        return key
    raise AssertionError("unreachable")


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n  [measured] {line}")


class HeldSampler:
    """Samples the fleet's held slots on the server until stopped; keeps the most."""

    def __init__(self, url: str, name: str, limit: int) -> None:
        self._cap = RedisCapacity(url, name=name, limit=limit)
        self.highest = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.highest = max(self.highest, self._cap.usage().held)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(10)
        self._cap.close()
        return self.highest


# -- the cap holds ----------------------------------------------------------------


def test_processes_whose_local_caps_exceed_the_limit_never_exceed_it(
    fleet: Fleet,
) -> None:
    name, limit = fresh_name(), 3
    sampler = HeldSampler(fleet.url, name, limit)
    # Three processes capped at 4 each (12 > 3), 6 threads each, 8 leases per
    # thread on 6 keys (2 resources per key at most).
    workers = [
        fleet.worker(name, limit, f"w{i}", "load", "4", "6", "8") for i in range(3)
    ]
    results = [w.wait_line("done", timeout=40).split() for w in workers]
    highest_held = sampler.stop()
    assert [(int(r[1]), int(r[2])) for r in results] == [(48, 0)] * 3
    _, high, order = fleet.counted(name)
    # Counted through the resources: never more open at once than the limit.
    assert high <= limit
    assert high >= 2  # the load did overlap (else the test proves nothing)
    assert {entry.split(":")[0] for entry in order} == {"w0", "w1", "w2"}
    # Counted through the server's own leases.
    assert highest_held <= limit
    for worker in workers:
        worker.proc.wait(timeout=20)
    assert [w.proc.returncode for w in workers] == [0, 0, 0]
    assert fleet.counted(name)[0] == 0  # every worker closed what it opened
    assert usage(fleet.url, name, limit)[:2] == (0, 0)


def test_pools_of_one_process_with_their_own_capacity_objects_share_the_cap(
    fleet: Fleet,
) -> None:
    name, limit = fresh_name(), 3
    pools = [
        fleet.pool(name, limit, max_open_resources=4, max_per_key=2, max_idle_time=0.02)
        for _ in range(3)
    ]
    sampler = HeldSampler(fleet.url, name, limit)
    errors: list[BaseException] = []

    def run(pool: Pool[str, Counted], seed: int) -> None:
        for n in range(12):
            try:
                with pool.lease(f"k{(seed + n) % 5}", timeout=30) as conn:
                    assert not conn.closed
                    time.sleep(0.003)
            except BaseException as error:
                errors.append(error)

    threads = [
        threading.Thread(target=run, args=(pool, seed))
        for pool in pools
        for seed in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(40)  # hang guard
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    highest_held = sampler.stop()
    _, high, _ = fleet.counted(name)
    assert 2 <= high <= limit
    assert highest_held <= limit
    for pool in pools:
        assert pool.stats().global_held <= limit
        pool.close()
    assert fleet.counted(name)[0] == 0
    assert usage(fleet.url, name, limit)[:2] == (0, 0)


def test_one_capacity_object_serves_one_pool(fleet: Fleet) -> None:
    cap = RedisCapacity(fleet.url, name=fresh_name(), limit=1)
    with (
        Pool(lambda: Counted(fleet.client, "x", "local", "x"), global_capacity=cap),
        pytest.raises(ValueError, match="give each pool its own capacity"),
    ):
        Pool(lambda: None, global_capacity=cap)


# -- fair: FIFO across processes ----------------------------------------------------


def test_creations_get_slots_in_the_order_asked_across_processes(
    fleet: Fleet,
) -> None:
    name = fresh_name()
    a, b, c = (fleet.worker(name, 1, label, "interactive") for label in "abc")
    a.send("checkout k0")
    a.wait_line("got k0")
    # Queue b:x0, c:y0, b:x1; each is on the server before the next asks.
    order = [(b, "x0"), (c, "y0"), (b, "x1")]
    for n, (worker, key) in enumerate(order, start=1):
        worker.send(f"checkout {key}")
        wait_for(lambda n=n: usage(fleet.url, name, 1).waiting == n)
    b.send("stats")
    assert b.wait_line("stats").split()[1:3] == ["global_held=0", "global_waiting=2"]
    # Each holder gives its slot back by closing its resource: the next in
    # the fleet's queue, whichever process it is in, creates its own.
    for holder, key in [(a, "k0"), *order]:
        if holder is not a:
            holder.wait_line(f"got {key}")
        holder.send(f"checkin {key}")
        holder.send(f"release {key}")
        holder.wait_line(f"closed {key}")
    assert fleet.counted(name)[2] == ["a:k0", "b:x0", "c:y0", "b:x1"]
    assert fleet.counted(name)[1] == 1


# -- a process that dies, or pauses past its lease ---------------------------------


def test_the_slots_of_a_killed_process_come_back_within_the_lease(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    name, limit = fresh_name(), 2
    holder = fleet.worker(name, limit, "holder", "interactive")
    for key in ("k0", "k1"):
        holder.send(f"checkout {key}")
        holder.wait_line(f"got {key}")
    pool = fleet.pool(name, limit)  # the same lease_ttl as the holder's

    def checkout(key: str) -> Callable[[], Any]:
        return lambda: pool.checkout(key, timeout=15)

    waiting = [in_thread(checkout(key)) for key in "xy"]
    wait_for(lambda: pool.stats().global_waiting == 2)
    wait_for(lambda: usage(fleet.url, name, limit).waiting == 2)
    killed = time.monotonic()
    holder.proc.send_signal(signal.SIGKILL)
    leases = [result(thread, out) for thread, out in waiting]
    reclaimed = time.monotonic() - killed
    assert [lease.key for lease in leases] == ["x", "y"]
    bound = TTL + TTL / 3
    report(
        capsys,
        f"pool level, SIGKILL reclaim: both waiting checkouts served after "
        f"{reclaimed:.2f} s (lease_ttl {TTL} s + renewal period {TTL / 3:.2f} s "
        f"= {bound:.2f} s)",
    )
    assert pool.stats().global_held == 2
    assert usage(fleet.url, name, limit).held == 2
    for lease in leases:
        pool.checkin(lease)


def test_a_holder_paused_past_its_lease_retires_its_resource_until_checkin(
    fleet: Fleet,
) -> None:
    name = fresh_name()
    holder = fleet.worker(name, 1, "holder", "interactive")
    holder.send("checkout k0")
    holder.wait_line("got k0")
    pool = fleet.pool(name, 1)
    thread, out = in_thread(lambda: pool.checkout("x", timeout=15))
    wait_for(lambda: usage(fleet.url, name, 1).waiting == 1)
    holder.proc.send_signal(signal.SIGSTOP)
    lease = result(thread, out)  # the holder's lease ended: the slot is ours
    holder.proc.send_signal(signal.SIGCONT)
    # Its next renewal tells the holder: its resource is retired, not closed,
    # because a lease of it is out (max_holders=1).
    holder.wait_line("event pool.global.lost key=k0")
    holder.wait_line("event pool.resource.retired key=k0 reason=global_lease_lost")
    holder.send("stats")
    stats = holder.wait_line("stats").split()[1:]
    assert stats == [
        "global_held=0",
        "global_waiting=0",
        "global_lost=1",
        "retiring=1",
        "open=0",
    ]
    holder.send("use k0")
    holder.wait_line("used k0 open")
    holder.send("checkin k0")
    holder.wait_line("closed k0")
    holder.wait_line("event pool.resource.closed key=k0 reason=global_lease_lost")
    assert pool.stats().global_held == 1
    assert usage(fleet.url, name, 1).held == 1
    pool.checkin(lease)


def test_a_lost_lease_evicts_idle_resources_and_retires_held_ones(
    fleet: Fleet,
) -> None:
    name, limit = fresh_name(), 2
    pool = fleet.pool(name, limit)
    held = pool.checkout("held")
    idle = pool.checkout("idle")
    pool.checkin(idle)
    cap = RedisCapacity(fleet.url, name=name, limit=limit)
    holders_key = cap.keys[1]
    with capture_logs() as logs:
        # The server lost the pool's leases and others took the slots: the
        # pool's tokens are gone from the holders, two strangers' are there.
        mine = fleet.client.zrange(holders_key, 0, -1)
        assert len(mine) == 2
        far = int(fleet.client.time()[0]) * 1000 + 600_000
        with fleet.client.pipeline(transaction=True) as tx:
            tx.zrem(holders_key, *mine)
            tx.zadd(holders_key, {"stranger:1": far, "stranger:2": far})
            tx.execute()
        wait_for(lambda: pool.stats().global_lost == 2)
        stats = pool.stats()
        assert (stats.global_held, stats.retiring, stats.open) == (0, 1, 0)
        wait_for(lambda: idle.resource.closed)
        assert not held.resource.closed  # a holder keeps it until checkin
        assert {e["key"] for e in found(logs, "pool.global.lost")} == {"held", "idle"}
        assert found(logs, "pool.resource.retired", key="held")[0]["reason"] == (
            "global_lease_lost"
        )
        pool.checkin(held)
        wait_for(lambda: held.resource.closed)
        wait_for(lambda: len(found(logs, "pool.resource.closed")) == 2)
    assert {e["reason"] for e in found(logs, "pool.resource.closed")} == {
        "global_lease_lost"
    }
    # New resources wait for the strangers' slots.
    thread, out = in_thread(lambda: pool.checkout("next", timeout=15))
    wait_for(lambda: pool.stats().global_waiting == 1)
    fleet.client.zrem(holders_key, "stranger:1", "stranger:2")
    lease = result(thread, out)
    assert lease.key == "next"
    pool.checkin(lease)
    cap.close()


# -- what a pool shows: stats and events ------------------------------------------


def test_stats_and_events_follow_a_creation_waiting_for_a_fleet_slot(
    fleet: Fleet,
) -> None:
    name = fresh_name()
    first, second = fleet.pool(name, 1), fleet.pool(name, 1)
    with capture_logs() as logs:
        lease = first.checkout("a")
        assert found(logs, "pool.global.waiting", key="a", pool=first.name)
        assert found(logs, "pool.global.granted", key="a", held=True)
        assert (first.stats().global_held, first.stats().global_waiting) == (1, 0)
        thread, out = in_thread(lambda: second.checkout("b", timeout=15))
        wait_for(lambda: second.stats().global_waiting == 1)
        stats = second.stats()
        # A reservation counts toward the local cap, but holds no fleet slot.
        assert (stats.global_held, stats.open_resources, stats.creating) == (0, 1, 0)
        assert found(logs, "pool.global.waiting", key="b", pool=second.name)
        assert not found(logs, "pool.global.granted", key="b")
        first.checkin(lease)
        first.release("a")  # closed: its slot goes to the next in the queue
        lease_b = result(thread, out)
        granted = found(logs, "pool.global.granted", key="b")
        assert [(e["pool"], e["held"], e["log_level"]) for e in granted] == [
            (second.name, True, "debug")
        ]
    assert (first.stats().global_held, second.stats().global_held) == (0, 1)
    assert second.stats().global_waiting == 0
    second.checkin(lease_b)


# -- the engine unreachable --------------------------------------------------------


def test_a_paused_server_fails_new_creations_closed_while_open_ones_serve(
    own_fleet: Fleet, own_valkey: ValkeyServer
) -> None:
    name = fresh_name()
    # A 5 s lease: the pause must not end the one held all along.
    pool = own_fleet.pool(name, 3, lease_ttl=5.0)
    pool.checkin(pool.checkout("a"))
    with capture_logs() as logs:
        own_valkey.pause()
        try:
            with pytest.raises(AcquireTimeout) as caught:
                pool.checkout("b", timeout=10)
            # Served from the pool: no network on the way.
            pool.checkin(pool.checkout("a", timeout=1))
        finally:
            own_valkey.resume()
    # The capacity's answer, within about its socket timeout (0.5 s): not
    # the caller's own deadline, which would have no cause.
    assert isinstance(caught.value.__cause__, CapacityUnavailable)
    assert isinstance(caught.value.__cause__.__cause__, redis.TimeoutError)
    assert caught.value.key == "b"
    (event,) = found(logs, "pool.global.unavailable", key="b")
    assert event["log_level"] == "warning"
    assert "CapacityUnavailable" in event["error"]
    stats = pool.stats()
    assert (stats.open, stats.global_held, stats.global_waiting) == (1, 1, 0)
    # Back: new creations get slots again; the slot held all along survived.
    checkout_until_granted(pool, "c")
    stats = pool.stats()
    assert (stats.global_held, stats.global_lost) == (2, 0)
    wait_for(lambda: usage(own_valkey.url, name, 3).held == 2)


def test_a_stopped_server_fails_closed_and_a_restart_is_reconciled(
    own_fleet: Fleet, own_valkey: ValkeyServer
) -> None:
    name = fresh_name()
    pool = own_fleet.pool(name, 2)
    pool.checkin(pool.checkout("a"))
    own_valkey.stop()
    with pytest.raises(AcquireTimeout) as caught:
        pool.checkout("b")  # no deadline at all: the capacity answers
    assert isinstance(caught.value.__cause__, CapacityUnavailable)
    assert isinstance(caught.value.__cause__.__cause__, redis.ConnectionError)
    pool.checkin(pool.checkout("a", timeout=1))  # still served
    own_valkey.start()  # the same port, no data: renewal counts "a" again
    wait_for(lambda: usage(own_valkey.url, name, 2).held == 1)
    checkout_until_granted(pool, "c")
    assert (pool.stats().global_held, pool.stats().global_lost) == (2, 0)


@pytest.mark.parametrize("on_unavailable", ["closed", "open"])
def test_an_unreachable_url_builds_and_decides_at_the_first_creation(
    fleet: Fleet, on_unavailable: str
) -> None:
    made: list[str] = []

    def factory(key: str) -> Counted:
        made.append(key)
        return Counted(fleet.client, "unreachable", "local", key)

    url = f"redis://127.0.0.1:{free_port()}/0"
    pool = fleet.pool(
        fresh_name(), 2, url=url, factory=factory, on_unavailable=on_unavailable
    )
    if on_unavailable == "closed":
        with pytest.raises(AcquireTimeout) as caught:
            pool.checkout("a", timeout=10)
        assert isinstance(caught.value.__cause__, CapacityUnavailable)
        assert made == []
        assert pool.stats().open_resources == 0
    else:
        pool.checkin(pool.checkout("a", timeout=10))  # no fleet slot taken
        assert made == ["a"]
        stats = pool.stats()
        assert (stats.open, stats.global_held) == (1, 0)
    assert pool.stats().global_waiting == 0


def test_fail_open_creates_without_a_slot_and_takes_slots_again_when_back(
    own_fleet: Fleet, own_valkey: ValkeyServer
) -> None:
    name = fresh_name()
    pool = own_fleet.pool(name, 2, on_unavailable="open")
    pool.checkin(pool.checkout("a"))
    own_valkey.stop()
    with capture_logs() as logs:
        pool.checkin(pool.checkout("b", timeout=10))
    assert found(logs, "pool.global.granted", key="b", held=False)
    stats = pool.stats()
    assert (stats.open, stats.global_held) == (2, 1)
    own_valkey.start()
    wait_for(lambda: usage(own_valkey.url, name, 2).held == 1)  # "a" again

    def another_with_a_slot() -> bool:
        checkout_until_granted(pool, f"c{pool.stats().created}-")
        return pool.stats().global_held == 2

    wait_for(another_with_a_slot, timeout=15)
    assert usage(own_valkey.url, name, 2).held == 2


# -- ends: abandoned resources, close ----------------------------------------------


def test_an_abandoned_resource_keeps_its_fleet_slot_until_it_really_ends(
    fleet: Fleet,
) -> None:
    name = fresh_name()
    stuck = threading.Event()

    def factory(key: str) -> Counted:
        return Counted(fleet.client, name, "local", key, lambda _: stuck.wait(20))

    pool = fleet.pool(name, 1, factory=factory, close_timeout=0.2)
    lease = pool.checkout("a")
    pool.checkin(lease)
    try:
        assert pool.release("a") is True  # returns once the close is abandoned
        stats = pool.stats()
        assert (stats.abandoned, stats.open_resources) == (1, 0)
        # Its close() has not returned: the connection may still be open, so
        # the fleet still counts it.
        assert stats.global_held == 1
        assert usage(fleet.url, name, 1).held == 1
        assert fleet.counted(name)[0] == 1
        thread, out = in_thread(lambda: pool.checkout("b", timeout=15))
        wait_for(lambda: pool.stats().global_waiting == 1)
        assert thread.is_alive()
    finally:
        stuck.set()
    lease_b = result(thread, out)  # the slot came back when close() returned
    assert lease.resource.closed
    assert pool.stats().global_held == 1
    pool.checkin(lease_b)


def test_close_gives_every_fleet_slot_back(fleet: Fleet) -> None:
    name, limit = fresh_name(), 3
    pool = fleet.pool(name, limit)
    for key in ("a", "b", "c"):
        pool.checkin(pool.checkout(key))
    thread, out = in_thread(lambda: pool.checkout("d", timeout=15))
    wait_for(lambda: usage(fleet.url, name, limit) == (3, 1, limit))
    pool.close()
    assert isinstance(result(thread, out), PoolClosedError)
    # Given back (and withdrawn) before close() returned.
    assert usage(fleet.url, name, limit)[:2] == (0, 0)
    assert fleet.counted(name)[0] == 0


# -- refresh, prewarm and timeout=0 at the fleet's limit ---------------------------


@pytest.mark.parametrize("limit", [1, 2])
def test_a_refresh_replaces_the_resource_within_the_fleet_limit(
    fleet: Fleet, limit: int
) -> None:
    name = fresh_name()
    pool = fleet.pool(name, limit, max_open_resources=2)
    lease = pool.checkout("a")
    old = lease.resource
    pool.checkin(lease)
    # With a slot free the new one opens beside the old one (no downtime);
    # at the limit the old one retires first and its slot goes to the new one.
    assert result(*in_thread(lambda: pool.refresh("a"))) is True
    lease = pool.checkout("a", timeout=5)
    assert lease.resource is not old
    # The refresh answers once the new one is open; the old one's close runs
    # in its own actor, a moment later.
    wait_for(lambda: old.closed)
    pool.checkin(lease)
    wait_for(lambda: fleet.counted(name)[:2] == (1, limit))
    wait_for(lambda: pool.stats().global_held == 1)  # once its close is reported


def test_prewarm_and_timeout_zero_do_not_queue_for_a_fleet_slot(
    fleet: Fleet,
) -> None:
    name = fresh_name()
    first, second = fleet.pool(name, 1), fleet.pool(name, 1)
    lease = first.checkout("a")
    assert result(*in_thread(lambda: second.prewarm(["b"]))) == {"b": "not_created"}
    caught = result(*in_thread(lambda: second.checkout("c", timeout=0)))
    assert isinstance(caught, AcquireTimeout)
    assert second.stats().global_waiting == 0
    wait_for(lambda: usage(fleet.url, name, 1)[:2] == (1, 0))  # withdrawn
    first.checkin(lease)


def test_an_async_pool_withdraws_the_slot_of_a_cancelled_task(fleet: Fleet) -> None:
    name = fresh_name()
    holder = fleet.pool(name, 1)
    holder.checkin(holder.checkout("a"))  # idle, it keeps the one slot

    async def main() -> str:
        cap = RedisCapacity(fleet.url, name=name, limit=1, lease_ttl=TTL)
        async with AsyncPool(
            lambda key: Counted(fleet.client, name, "async", key),
            max_holders=1,
            health_check_interval=None,
            global_capacity=cap,
        ) as pool:
            task = asyncio.create_task(pool.checkout("b"))
            for _ in range(1000):  # bounded: about 10 s
                if usage(fleet.url, name, 1).waiting == 1:
                    break
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert (await pool.stats()).global_waiting == 0
            for _ in range(1000):  # the capacity thread withdraws it
                if usage(fleet.url, name, 1).waiting == 0:
                    break
                await asyncio.sleep(0.01)
            assert usage(fleet.url, name, 1).waiting == 0
            waiting = asyncio.create_task(pool.checkout("c", timeout=15))
            await asyncio.to_thread(holder.release, "a")  # frees the slot
            got = await waiting
            await pool.checkin(got)
            return str(got.key)

    assert asyncio.run(main()) == "c"
    assert fleet.counted(name)[2] == ["local:a", "async:c"]
