"""RedisCapacity and its driver against a real Valkey server, across real processes.

Every test names its own semaphore, so tests sharing the session's server
never meet; tests that pause, stop or restart a server start their own.
Leases are 1 s here (5 s where a pause must not end them) to keep this fast.
"""

from __future__ import annotations

import math
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import wait_for
from line_process import LineProcess
from valkey_server import ValkeyServer, free_port, usage

from pooler_actors import CapacityUnavailable
from pooler_actors._capacity import CapacityDriver, OnUnavailable
from pooler_actors.redis import CapacityUsage, RedisCapacity

WORKER = str(Path(__file__).resolve().parent / "capacity_worker.py")
TTL = 1.0


def fresh_name() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


class Recorder:
    """A driver's callbacks, recorded with the time they came."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, object, float]] = []

    def granted(self, rid: int, held: bool) -> None:
        self.events.append(("granted", rid, held, time.monotonic()))

    def unavailable(self, rid: int, exc: BaseException) -> None:
        self.events.append(("unavailable", rid, exc, time.monotonic()))

    def lost(self, rid: int) -> None:
        self.events.append(("lost", rid, None, time.monotonic()))

    def of(self, kind: str) -> list[int]:
        return [rid for k, rid, _, _ in self.events if k == kind]

    def outcome(self, rid: int) -> tuple[str, object, float] | None:
        for kind, r, detail, at in self.events:
            if r == rid and kind in ("granted", "unavailable"):
                return kind, detail, at
        return None


class Fleet:
    """Drivers in this process and worker processes; all ended at teardown."""

    def __init__(self) -> None:
        self.drivers: list[CapacityDriver] = []
        self.workers: list[Worker] = []

    def driver(self, cap: RedisCapacity, rec: Recorder) -> CapacityDriver:
        driver = CapacityDriver(
            cap,
            pool_name=f"test-{len(self.drivers)}",
            on_granted=rec.granted,
            on_unavailable=rec.unavailable,
            on_lost=rec.lost,
        )
        self.drivers.append(driver)
        return driver

    def worker(self, url: str, name: str, limit: int, label: str, *mode: str) -> Worker:
        worker = Worker(url, name, limit, label, *mode)
        self.workers.append(worker)
        worker.expect("ready")
        return worker

    def holder(self, url: str, name: str, limit: int, slots: int) -> Worker:
        """A worker process that holds `slots` slots (rids 0, 1, ...)."""
        worker = self.worker(url, name, limit, "holder", "interactive")
        for rid in range(slots):
            worker.send(f"reserve {rid}")
        for _ in range(slots):
            worker.expect("granted")
        return worker

    def end(self) -> None:
        for driver in self.drivers:
            driver.close(timeout=5)
        for worker in self.workers:
            worker.kill()


class Worker(LineProcess):
    """A fleet member in its own process (tests/capacity_worker.py)."""

    def __init__(self, url: str, name: str, limit: int, label: str, *mode: str) -> None:
        super().__init__(
            f"worker {label}", WORKER, url, name, str(limit), str(TTL), label, *mode
        )


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    made = Fleet()
    try:
        yield made
    finally:
        made.end()


def reserve_until_granted(driver: CapacityDriver, rec: Recorder, first_rid: int) -> int:
    """Reserve new rids until one gets a global slot; return that rid.

    Right after an outage a reservation may still fail fast (closed) or be
    let through without a slot (open): the driver probes the engine again
    only after a short interval.
    """
    deadline = time.monotonic() + 15
    rid = first_rid
    while True:
        driver.reserve(rid)
        wait_for(lambda rid=rid: rec.outcome(rid) is not None)
        outcome = rec.outcome(rid)
        assert outcome is not None
        if outcome[:2] == ("granted", True):
            return rid
        assert time.monotonic() < deadline, f"still failing: {outcome}"
        rid += 1
        time.sleep(0.05)


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n  [measured] {line}")


# -- the cap, across processes ------------------------------------------------


def test_the_limit_holds_across_processes_whose_demand_exceeds_it(
    valkey: ValkeyServer, fleet: Fleet
) -> None:
    name, limit = fresh_name(), 3
    # Four processes, each wanting 3 slots at once (12 > 3), 8 grants each.
    workers = [
        fleet.worker(valkey.url, name, limit, f"w{i}", "cycle", "3", "8", "40")
        for i in range(4)
    ]
    results = [w.expect("done", timeout=30).split() for w in workers]
    grants = [int(r[1]) for r in results]
    highest = max(int(r[2]) for r in results)
    assert grants == [8, 8, 8, 8]
    # Counted through the server: INCR on grant, DECR before release.
    assert highest == limit
    plain = redis.Redis.from_url(valkey.url)
    assert int(plain.get(f"{name}:active") or 0) == 0
    assert plain.llen(f"{name}:order") == 32
    wait_for(lambda: usage(valkey.url, name, limit)[:2] == (0, 0))


def test_waiters_are_served_in_order_across_processes(
    valkey: ValkeyServer, fleet: Fleet
) -> None:
    name = fresh_name()
    a, b, c, d = (
        fleet.worker(valkey.url, name, 1, label, "interactive") for label in "abcd"
    )
    a.send("reserve 0")
    a.expect("granted 0 True")
    # Queue b0, c0, b1, d0, c1; each is on the server before the next asks.
    order = [(b, 0), (c, 0), (b, 1), (d, 0), (c, 1)]
    for n, (worker, rid) in enumerate(order, start=1):
        worker.send(f"reserve {rid}")
        wait_for(lambda n=n: usage(valkey.url, name, 1).waiting == n)
    a.send("release 0")
    for worker, rid in order:
        worker.expect(f"granted {rid} True")
        worker.send(f"release {rid}")
    plain = redis.Redis.from_url(valkey.url, decode_responses=True)
    granted = [str(x) for x in plain.lrange(f"{name}:order", 0, -1)]
    assert granted == ["a:0", "b:0", "c:0", "b:1", "d:0", "c:1"]


def test_the_slots_of_a_killed_process_come_back_within_the_lease(
    valkey: ValkeyServer, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    name, limit = fresh_name(), 2
    holder = fleet.holder(valkey.url, name, limit, slots=2)
    rec = Recorder()
    # The whole fleet uses one lease_ttl: a waiter polls every third of its own.
    cap = RedisCapacity(valkey.url, name=name, limit=limit, lease_ttl=TTL)
    driver = fleet.driver(cap, rec)
    driver.reserve(10)
    driver.reserve(11)
    wait_for(lambda: usage(valkey.url, name, limit).waiting == 2)
    killed = time.monotonic()
    holder.proc.send_signal(signal.SIGKILL)
    wait_for(lambda: rec.of("granted") == [10, 11], timeout=10)
    reclaimed = rec.events[-1][3] - killed
    bound = TTL + TTL / 3
    report(
        capsys,
        f"SIGKILL reclaim: both slots back after {reclaimed:.2f} s "
        f"(lease_ttl {TTL} s + renewal period {TTL / 3:.2f} s = {bound:.2f} s)",
    )
    assert usage(valkey.url, name, limit).held == 2


def test_a_holder_paused_past_its_lease_learns_it_lost_it(
    valkey: ValkeyServer, fleet: Fleet
) -> None:
    name = fresh_name()
    holder = fleet.holder(valkey.url, name, 1, slots=1)
    rec = Recorder()
    cap = RedisCapacity(valkey.url, name=name, limit=1, lease_ttl=TTL)
    driver = fleet.driver(cap, rec)
    driver.reserve(5)
    wait_for(lambda: usage(valkey.url, name, 1).waiting == 1)
    holder.proc.send_signal(signal.SIGSTOP)
    wait_for(lambda: rec.of("granted") == [5], timeout=10)  # its lease ended
    holder.proc.send_signal(signal.SIGCONT)
    holder.expect("lost 0")
    assert usage(valkey.url, name, 1).held == 1
    assert rec.of("lost") == []


def test_a_holder_learns_of_a_slot_lost_with_the_servers_data(
    valkey: ValkeyServer, fleet: Fleet
) -> None:
    name = fresh_name()
    holder = fleet.holder(valkey.url, name, 1, slots=1)
    holder.proc.send_signal(signal.SIGSTOP)
    cap = RedisCapacity(valkey.url, name=name, limit=1, lease_ttl=TTL)
    redis.Redis.from_url(valkey.url).delete(*cap.keys)  # the data is gone
    rec = Recorder()
    fleet.driver(cap, rec).reserve(1)
    wait_for(lambda: rec.of("granted") == [1])
    holder.proc.send_signal(signal.SIGCONT)
    holder.expect("lost 0")


# -- the engine, call by call -------------------------------------------------


def test_a_grant_wakes_the_waiting_process_through_pubsub(valkey: ValkeyServer) -> None:
    name = fresh_name()
    a = RedisCapacity(valkey.url, name=name, limit=1)
    b = RedisCapacity(valkey.url, name=name, limit=1)
    try:
        assert a.try_acquire(["a1"]) == ["a1"]
        assert b.try_acquire(["b1", "b2"]) == []
        assert b.wait_for_change(0.0) is False
        a.release(["a1"])  # grants b1 and publishes it
        assert b.wait_for_change(10.0) is True
        assert b.try_acquire(["b1", "b2"]) == ["b1"]
        assert b.usage() == CapacityUsage(held=1, waiting=1, limit=1)
        b.cancel(["b2"])
        b.release(["b1"])
        assert b.usage() == CapacityUsage(held=0, waiting=0, limit=1)
    finally:
        a.close()
        b.close()


def test_renewal_takes_a_slot_again_after_data_loss_while_it_fits(
    valkey: ValkeyServer,
) -> None:
    name = fresh_name()
    a = RedisCapacity(valkey.url, name=name, limit=1)
    b = RedisCapacity(valkey.url, name=name, limit=1)
    plain = redis.Redis.from_url(valkey.url)
    try:
        assert a.try_acquire(["x"]) == ["x"]
        plain.delete(*a.keys)
        assert a.renew(["x"], []) == []  # it fits: counted again
        assert a.usage().held == 1
        plain.delete(*a.keys)
        assert b.try_acquire(["y"]) == ["y"]  # someone took the slot
        assert a.renew(["x"], []) == ["x"]
        assert a.usage().held == 1
    finally:
        a.close()
        b.close()


def test_the_keys_expire_after_the_last_lease(valkey: ValkeyServer) -> None:
    name = fresh_name()
    cap = RedisCapacity(valkey.url, name=name, limit=2, lease_ttl=TTL)
    plain = redis.Redis.from_url(valkey.url)
    try:
        assert cap.try_acquire(["x"]) == ["x"]
        ttls = [plain.pttl(key) for key in (cap.keys[0], cap.keys[1])]
        assert all(0 < ttl <= 2 * TTL * 1000 for ttl in ttls)
    finally:
        cap.close()


def test_a_different_limit_is_a_clear_error(valkey: ValkeyServer, fleet: Fleet) -> None:
    name = fresh_name()
    RedisCapacity(valkey.url, name=name, limit=3).check()
    other = RedisCapacity(valkey.url, name=name, limit=4, on_unavailable="open")
    with pytest.raises(ValueError, match=r"limit=4 but the fleet's stored limit is 3"):
        other.check()
    # Through a driver it fails closed, even with on_unavailable="open".
    rec = Recorder()
    fleet.driver(other, rec).reserve(1)
    wait_for(lambda: rec.outcome(1) is not None)
    kind, exc, _ = rec.outcome(1)  # type: ignore[misc]
    assert kind == "unavailable"
    assert isinstance(exc, CapacityUnavailable)
    assert isinstance(exc.__cause__, ValueError)


# -- the server paused, stopped, restarted -------------------------------------


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_a_paused_server_fails_new_reservations_within_the_socket_timeout(
    own_valkey: ValkeyServer,
    fleet: Fleet,
    mode: OnUnavailable,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = fresh_name()
    cap = RedisCapacity(
        own_valkey.url,
        name=name,
        limit=3,
        lease_ttl=5.0,  # the pause must not end the lease of rid 1
        on_unavailable=mode,
        socket_timeout=0.5,
    )
    rec = Recorder()
    driver = fleet.driver(cap, rec)
    driver.reserve(1)
    wait_for(lambda: rec.of("granted") == [1])
    own_valkey.pause()
    try:
        asked = time.monotonic()
        driver.reserve(2)
        wait_for(lambda: rec.outcome(2) is not None)
    finally:
        own_valkey.resume()
    kind, detail, at = rec.outcome(2)  # type: ignore[misc]
    report(capsys, f"paused server ({mode}): answer after {at - asked:.2f} s")
    if mode == "closed":
        assert kind == "unavailable"
        assert isinstance(detail, CapacityUnavailable)
        assert isinstance(detail.__cause__, redis.TimeoutError)
    else:
        assert (kind, detail) == ("granted", False)
    # Back: new reservations get slots, the one held all along kept its slot.
    reserve_until_granted(driver, rec, 3)
    assert rec.of("lost") == []
    wait_for(lambda: usage(own_valkey.url, name, 3).held == 2)


def test_a_stopped_server_fails_closed_and_a_restart_is_reconciled(
    own_valkey: ValkeyServer, fleet: Fleet
) -> None:
    name = fresh_name()
    cap = RedisCapacity(own_valkey.url, name=name, limit=2, lease_ttl=TTL)
    rec = Recorder()
    driver = fleet.driver(cap, rec)
    driver.reserve(1)
    wait_for(lambda: rec.of("granted") == [1])
    own_valkey.stop()
    driver.reserve(2)
    wait_for(lambda: rec.outcome(2) is not None)
    assert rec.outcome(2)[0] == "unavailable"  # type: ignore[index]
    own_valkey.start()  # same port, no data: renewal takes the slot again
    wait_for(lambda: usage(own_valkey.url, name, 2).held == 1)
    reserve_until_granted(driver, rec, 3)
    assert rec.of("lost") == []
    assert driver.held == 2


# -- construction ---------------------------------------------------------------


def test_an_unreachable_url_builds_and_fails_only_when_used() -> None:
    cap = RedisCapacity(f"redis://127.0.0.1:{free_port()}/0", name="n", limit=1)
    with pytest.raises(CapacityUnavailable, match="'n' unavailable") as caught:
        cap.check()
    assert isinstance(caught.value.__cause__, redis.ConnectionError)
    # No retry with backoff: one attempt per call, bounded by socket_timeout.
    retry = cap._redis().get_retry()
    assert retry is not None
    assert retry.get_retries() == 0
    cap.close()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"limit": 0}, "limit"),
        ({"limit": 2.0}, "limit"),
        ({"limit": True}, "limit"),
        ({"lease_ttl": 0}, "lease_ttl"),
        ({"lease_ttl": -1.0}, "lease_ttl"),
        ({"lease_ttl": math.inf}, "lease_ttl"),
        ({"lease_ttl": math.nan}, "lease_ttl"),
        ({"on_unavailable": "half-open"}, "on_unavailable"),
        ({"socket_timeout": 0}, "socket_timeout"),
        ({"socket_connect_timeout": -1}, "socket_connect_timeout"),
    ],
)
def test_bad_arguments_name_the_field(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"name": "n", "limit": 1, **kwargs}
    with pytest.raises(ValueError, match=field):
        RedisCapacity("redis://127.0.0.1:1/0", **args)  # type: ignore[arg-type]


def test_the_url_must_be_given() -> None:
    with pytest.raises(ValueError, match="url"):
        RedisCapacity("", name="n", limit=1)
