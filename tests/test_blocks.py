"""The block path (issue 20's target; `pooler_actors/_counter_blocks.py`):
`with pool.lease(key)` on a shared pool holds its place at the counter with
no `Lease` object and no note per cycle, and is the same holder for the pool
as a lease: counted in `stats()`, never closed under, retired when broken,
found when dropped. An interrupt at any point of a cycle loses nothing.
"""

from __future__ import annotations

import dis
import gc
import sys
import threading
import time
from collections.abc import Hashable
from types import FrameType
from typing import Any

import pytest
from conftest import wait_for
from structlog.testing import capture_logs

import pooler_actors.supervisor as sup
from pooler_actors import Pool
from pooler_actors._counter_blocks import Blocks
from pooler_actors.pool import LeaseBlock


class Conn:
    """A resource that records whether it was closed while a block used it."""

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.users = 0
        self.closed = 0
        self.closed_in_use = 0

    def ping(self) -> None:
        pass

    def close(self) -> None:
        self.closed += 1
        self.closed_in_use += self.users > 0


class Made:
    def __init__(self) -> None:
        self.conns: list[Conn] = []

    def __call__(self, key: Hashable) -> Conn:
        conn = Conn(key)
        self.conns.append(conn)
        return conn


def shared(**options: Any) -> Pool[Hashable, Conn]:
    options.setdefault("health_check_interval", None)
    return Pool(Made(), **options)


def blocks_of(pool: Pool[Any, Any]) -> list[int]:
    """Every block id the pool's resources count now."""
    return [lid for res in pool.actor_ref.counter.view.values() for lid in res.blocks]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The supervisor's clock, moved by the test (`clock[0] += s`)."""
    now = [1000.0]
    monkeypatch.setattr(sup, "monotonic", lambda: now[0])
    return now


def settle(pool: Pool[Any, Any]) -> None:
    """Return once the supervisor fired every timer due now (see `clock`)."""
    pool.stats()
    pool.stats()


# --- the path itself -------------------------------------------------------


def test_a_block_holds_its_place_without_a_lease_and_counts_as_one() -> None:
    with shared() as pool:
        pool.acquire("k")  # open: the counter can serve the block
        before = pool.stats()
        block = pool.lease("k")
        with block as conn:
            assert block.place is not None and block._lease is None
            assert blocks_of(pool) == [block.place[1]]
            stats = pool.stats()
            assert stats.holders == 1
            assert stats.acquires - before.acquires == 1
            assert stats.hits - before.hits == 1
            assert stats.checkouts - before.checkouts == 1
            assert conn is pool.acquire("k")
        assert block.place is None and blocks_of(pool) == []
        assert pool.stats().holders == 0
        # No note was left per cycle: only the block path's own count.
        counter = pool.actor_ref.counter
        for _ in range(100):
            with pool.lease("k"):
                pass
        assert not counter.notes and len(counter.used) <= 1


def test_a_key_the_counter_cannot_serve_takes_a_lease_then_the_block_path() -> None:
    with shared() as pool:
        first = pool.lease("k")
        with first:  # nothing open yet: a checkout creates it
            assert first.place is None and first._lease is not None
        second = pool.lease("k")
        with second:
            assert second.place is not None and second._lease is None
        assert pool.stats().holders == 0


@pytest.mark.parametrize(
    "option",
    [
        {"check": lambda conn: None},
        {"reset": lambda conn: None},
        {"leak_warning_after": 60.0},
        {"max_holders": 2},
        {"max_holders": 1},
    ],
    ids=["check", "reset", "leak_warning_after", "max_holders=2", "exclusive"],
)
def test_an_option_that_needs_a_lease_keeps_the_lease_path(
    option: dict[str, Any],
) -> None:
    with shared(**option) as pool:
        for _ in range(2):
            block = pool.lease("k")
            with block:
                assert block.place is None and block._lease is not None
        assert pool.stats().holders == 0


def test_with_debug_events_a_block_takes_a_lease_named_in_its_events() -> None:
    """`pool.lease.checkout`/`checkin` name each lease and its hold time:
    with debug events on, the block path steps aside."""
    with capture_logs() as logs, shared() as pool:
        pool.acquire("k")
        block = pool.lease("k")
        with block:
            assert block.place is None and block._lease is not None
            lid = block._lease.lid
        wait_for(lambda: any(e["event"] == "pool.lease.checkin" for e in logs))
    checkout = [e for e in logs if e["event"] == "pool.lease.checkout"]
    checkin = [e for e in logs if e["event"] == "pool.lease.checkin"]
    assert [e["lease"] for e in checkout] == [lid]
    assert [e["lease"] for e in checkin] == [lid] and "held_s" in checkin[0]


def test_a_block_entered_twice_is_refused() -> None:
    with shared() as pool:
        pool.acquire("k")
        block = pool.lease("k")
        with block:
            with pytest.raises(RuntimeError, match="entered already"), block:
                pass
            assert pool.stats().holders == 1
        assert pool.stats().holders == 0


def test_a_bad_timeout_is_refused_on_the_block_path_too() -> None:
    with shared() as pool:
        pool.acquire("k")
        with pytest.raises(ValueError), pool.lease("k", timeout=-1):
            pass
        with pool.lease("k", timeout=float("inf")):
            pass
        assert pool.stats().holders == 0


# --- is_broken (SPEC 11): unchanged ---------------------------------------


def test_a_broken_block_retires_its_resource_and_says_which_block() -> None:
    def is_broken(error: BaseException) -> bool:
        return isinstance(error, ConnectionError)

    with shared(is_broken=is_broken) as pool:
        pool.acquire("k")
        block = pool.lease("k")
        with pytest.raises(ValueError), block as conn:
            raise ValueError("a bad query, not a bad connection")
        assert pool.stats().broken == 0 and conn.closed == 0
        block = pool.lease("k")
        with pytest.raises(ConnectionError), block as again:
            assert again is conn and block.place is not None
            raise ConnectionError("server closed the connection")
        wait_for(lambda: conn.closed == 1)
        stats = pool.stats()
        assert (stats.broken, stats.holders) == (1, 0)
        with pool.lease("k") as fresh:
            assert fresh is not conn


def test_a_broken_block_is_logged_with_its_id_and_reason() -> None:
    events: list[tuple[str, dict[str, Any]]] = []

    class Logger:  # info and up only: debug events off, the block path on
        def is_enabled_for(self, level: int) -> bool:
            return level >= 20

        def debug(self, event: str, **fields: Any) -> None:
            events.append((event, fields))

        info = warning = error = debug

    pool: Pool[Hashable, Conn] = Pool(
        Made(), logger=Logger(), is_broken=lambda e: True, health_check_interval=None
    )
    with pool:
        pool.acquire("k")
        block = pool.lease("k")
        with pytest.raises(ConnectionError), block:
            assert block.place is not None
            lid = block.place[1]
            raise ConnectionError("gone")
        wait_for(lambda: any(e == "pool.lease.broken" for e, _ in events))
    (broken,) = [f for e, f in events if e == "pool.lease.broken"]
    assert broken["lease"] == lid and "ConnectionError('gone')" in broken["reason"]


def test_an_is_broken_that_raises_still_leaves_as_broken() -> None:
    """SPEC 11: `is_broken` raising anything checks the block out as broken;
    the block's own error is the one the caller sees."""

    def is_broken(error: BaseException) -> bool:
        raise RuntimeError("bug in is_broken")

    with shared(is_broken=is_broken) as pool:
        pool.acquire("k")
        with pytest.raises(ConnectionError), pool.lease("k") as conn:
            raise ConnectionError
        wait_for(lambda: conn.closed == 1)
        assert pool.stats().broken == 1 and pool.stats().holders == 0


def test_an_is_broken_interrupted_still_leaves_as_broken() -> None:
    def is_broken(error: BaseException) -> bool:
        raise KeyboardInterrupt

    with shared(is_broken=is_broken) as pool:
        pool.acquire("k")
        with pytest.raises(KeyboardInterrupt), pool.lease("k") as conn:
            raise ConnectionError
        wait_for(lambda: conn.closed == 1)
        assert pool.stats().holders == 0
        with pool.lease("k", timeout=5):  # the key serves again
            pass


# --- never closed under a block ---------------------------------------------


def test_release_and_refresh_never_close_a_resource_under_a_block() -> None:
    with shared() as pool:
        pool.acquire("k")
        with pool.lease("k") as conn:
            conn.users += 1
            assert pool.release("k") is True
            assert conn.closed == 0 and pool.stats().retiring == 1
            conn.users -= 1
        wait_for(lambda: conn.closed == 1)
        pool.acquire("k")
        with pool.lease("k") as conn:
            conn.users += 1
            assert pool.refresh("k") is True
            assert pool.acquire("k") is not conn  # the fresh one serves
            assert conn.closed == 0
            conn.users -= 1
        wait_for(lambda: conn.closed == 1)
        assert conn.closed_in_use == 0 and pool.stats().holders == 0


def test_a_reclaim_never_takes_a_resource_a_block_is_in() -> None:
    """A caller waits for a slot while the only resource has a block inside:
    it is not reclaimed until the block leaves."""
    with shared(max_open_resources=1, reclaim_idle=True) as pool:
        with pool.lease("a"):
            pass  # created by a checkout
        block = pool.lease("a")
        conn = block.__enter__()
        assert block.place is not None
        got: list[Conn] = []
        waiter = threading.Thread(target=lambda: got.append(pool.acquire("b", 10)))
        waiter.start()
        wait_for(lambda: pool.stats().wait_count == 1)
        time.sleep(0.05)
        assert conn.closed == 0 and not got
        block.__exit__(None, None, None)
        waiter.join(10)
        assert got and conn.closed == 1 and conn.closed_in_use == 0
        assert pool.stats().reclaimed == 1


def test_idle_expiry_waits_for_the_block_to_leave(clock: list[float]) -> None:
    with shared(max_idle_time=5.0) as pool:
        conn = pool.acquire("k")
        with pool.lease("k"):
            clock[0] += 60
            settle(pool)
            assert conn.closed == 0 and pool.stats().idle_expired == 0
        settle(pool)  # its exit read: idle since now
        clock[0] += 4
        settle(pool)
        assert pool.stats().idle_expired == 0
        clock[0] += 2
        settle(pool)
        wait_for(lambda: conn.closed == 1)
        assert pool.stats().idle_expired == 1


def test_a_close_leaves_a_resource_to_its_block_and_closes_it_at_its_exit() -> None:
    events: list[tuple[str, dict[str, Any]]] = []

    class Logger:
        def is_enabled_for(self, level: int) -> bool:
            return level >= 20

        def debug(self, event: str, **fields: Any) -> None:
            events.append((event, fields))

        info = warning = error = debug

    pool: Pool[Hashable, Conn] = Pool(
        Made(), logger=Logger(), health_check_interval=None
    )
    pool.acquire("k")
    block = pool.lease("k")
    conn = block.__enter__()
    assert block.place is not None
    lid = block.place[1]
    conn.users += 1
    pool.close(timeout=0.05)  # waits, then leaves it to the block
    assert pool.closed and conn.closed == 0
    out = [f["lease"] for e, f in events if e == "pool.close.lease_out"]
    assert out == [lid]
    conn.users -= 1
    block.__exit__(None, None, None)
    wait_for(lambda: conn.closed == 1)
    assert conn.closed_in_use == 0


def test_a_drain_timeout_closes_under_a_block_whose_exit_then_does_nothing(
    clock: list[float],
) -> None:
    with shared(drain_timeout=2.0) as pool:
        pool.acquire("k")
        block = pool.lease("k")
        conn = block.__enter__()
        pool.release("k")
        clock[0] += 3
        settle(pool)
        wait_for(lambda: conn.closed == 1)
        assert pool.stats().drain_timeouts == 1
        block.__exit__(None, None, None)
        assert block.place is None
        settle(pool)
        assert pool.stats().holders == 0
        with pool.lease("k"):
            pass


# --- nothing lost to an interrupt -------------------------------------------


def test_a_dropped_block_comes_back_when_it_is_collected() -> None:
    """An interrupt that keeps `__exit__` from running (it lands as
    `__exit__` starts) leaves the block to the collector: its place comes
    back, and `pool.lease.lost` names the key and the block."""
    events: list[tuple[str, dict[str, Any]]] = []

    class Logger:
        def is_enabled_for(self, level: int) -> bool:
            return level >= 20

        def debug(self, event: str, **fields: Any) -> None:
            events.append((event, {"key": fields.get("key"), **fields}))

        info = warning = error = debug

    pool: Pool[Hashable, Conn] = Pool(
        Made(), logger=Logger(), health_check_interval=None
    )
    with pool:
        pool.acquire("k")
        block = pool.lease("k")
        block.__enter__()
        assert block.place is not None
        lid = block.place[1]
        del block
        gc.collect()
        wait_for(lambda: pool.stats().holders == 0)
        assert blocks_of(pool) == []
        lost = [f for e, f in events if e == "pool.lease.lost"]
        assert [f["lease"] for f in lost] == [lid]
        with pool.lease("k", timeout=5):
            pass


#: The frames of a block cycle an interrupt is injected in (the caller's
#: `with` statement, the block's methods, the counter's).
_CYCLE_CODE = {
    LeaseBlock.__init__.__code__,
    LeaseBlock.__enter__.__code__,
    LeaseBlock.__exit__.__code__,
    LeaseBlock._give_back.__code__,
    LeaseBlock.__del__.__code__,
    Pool.lease.__code__,
}


#: The opcodes after which CPython looks for an asynchronous exception (its
#: "eval breaker"): a call (after it returns) and a backward jump. It also
#: looks as a function starts (its `RESUME`: the tracer's "call" event).
_BREAKERS = {dis.opmap[name] for name in ("CALL", "CALL_FUNCTION_EX", "JUMP_BACKWARD")}


class _Injector:
    """A tracer that raises `KeyboardInterrupt` at the `at`-th point of the
    block cycle's frames in this thread where CPython may deliver an
    asynchronous exception: as each function starts, and after each call
    returns (a Python function's return included: more points than CPython
    has). Not at any opcode: an interrupt cannot land between the last
    opcodes of a `with` block and its `__exit__`, and Python's own `with
    lock:` would leave the lock held if it did."""

    def __init__(self, at: int, codes: set[Any]) -> None:
        self.at = at
        self.codes = codes
        self.seen = 0
        self.fired = False
        self.after: dict[int, bool] = {}  # frame -> its last opcode a breaker

    def __call__(self, frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code not in self.codes:
            return None
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        self.after[id(frame)] = False
        self._point(frame)
        return self._local

    def _local(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "opcode":
            if self.after.get(id(frame)):
                self.after[id(frame)] = False
                self._point(frame)
            opcode = frame.f_code.co_code[frame.f_lasti]
            self.after[id(frame)] = opcode in _BREAKERS
        return self._local

    def _point(self, frame: FrameType) -> None:
        self.seen += 1
        if self.seen == self.at and not self.fired:
            self.fired = True
            where = f"{frame.f_code.co_name}:{frame.f_lineno}"
            raise KeyboardInterrupt(f"injected at point {self.at}, {where}")


@pytest.fixture
def cycle_codes() -> set[Any]:
    return _CYCLE_CODE | {
        Blocks.enter.__code__,
        Blocks.leave.__code__,
        Blocks._spoil.__code__,
        Blocks.dropped.__code__,
    }


def _injected(at: int, codes: set[Any], body: Any) -> str:
    """Run `body` with an interrupt at point `at`: where it landed, or ''."""
    injector = _Injector(at, codes)
    sys.settrace(injector)
    try:
        body()
    except KeyboardInterrupt as error:
        return str(error)
    except ConnectionError:  # the block's own (its exit was not interrupted)
        pass
    finally:
        sys.settrace(None)
    return "(swallowed in __del__)" if injector.fired else ""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("broken", [False, True], ids=["ok", "broken"])
def test_an_interrupt_at_every_point_of_a_block_cycle_loses_nothing(
    broken: bool, cycle_codes: set[Any]
) -> None:
    """A `KeyboardInterrupt` at each point of a cycle where one may land,
    one per cycle, from `pool.lease(key)` to the block's collection (the
    caller's `with` statement, the block's methods, the counter's; see
    `_Injector`): afterwards
    the pool counts no holder (at once, or once the dropped block is
    collected), its resources count no block, and the key serves."""
    pool = shared(is_broken=lambda error: True)
    points = 0

    def cycle() -> None:
        with pool.lease("k") as conn:
            if broken:
                raise ConnectionError(f"broken {conn!r}")

    cycle_codes = cycle_codes | {cycle.__code__}  # the caller's `with`, too
    try:
        pool.acquire("k")
        with pool.lease("k") as conn:  # the block path, not a lease
            assert blocks_of(pool)
        for at in range(1, 10_000):
            where = _injected(at, cycle_codes, cycle)
            if not where:
                break  # past the cycle's last point: none left to try
            print(where)  # (pytest -s shows where each one landed)
            points += 1
            gc.collect()  # a block dropped with its place set comes back
            wait_for(lambda: pool.stats().holders == 0, timeout=10)
            assert blocks_of(pool) == [], where
            with pool.lease("k", timeout=5):  # the key serves
                pass
        assert points >= 15  # every point of the cycle was tried
        assert pool.stats().holders == 0
        if not broken:
            assert pool.acquire("k") is conn  # never retired
    finally:
        pool.close()


@pytest.mark.parametrize("broken", [False, True], ids=["ok", "broken"])
def test_a_storm_of_blocks_while_the_pool_retires_closes_nothing_in_use(
    broken: bool,
) -> None:
    """Threads cycle blocks while others release and refresh the keys and
    idle expiry runs: no resource is closed with a user, and once quiet the
    pool counts no holder."""
    keys = [f"k{i}" for i in range(3)]
    made = Made()
    pool: Pool[Hashable, Conn] = Pool(
        made,
        max_open_resources=4,
        max_idle_time=0.02,
        health_check_interval=None,
        is_broken=lambda error: True,
    )
    stop = threading.Event()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def user(i: int) -> None:
        n = 0
        try:
            while not stop.is_set():
                key = keys[(i + n) % len(keys)]
                n += 1
                try:
                    with pool.lease(key, timeout=10) as conn:
                        with lock:
                            conn.users += 1
                        time.sleep(0)
                        with lock:
                            conn.users -= 1
                        if broken and n % 7 == 0:
                            raise ConnectionError("broken")
                except ConnectionError:
                    pass
        except BaseException as error:  # pragma: no cover - shown below
            errors.append(error)

    def disturber() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            (pool.release if n % 2 else pool.refresh)(keys[n % len(keys)])
            time.sleep(0.002)

    threads = [threading.Thread(target=user, args=(i,)) for i in range(4)]
    threads.append(threading.Thread(target=disturber))
    try:
        for thread in threads:
            thread.start()
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    try:
        assert not errors
        assert not any(conn.closed_in_use for conn in made.conns)
        wait_for(lambda: pool.stats().holders == 0)
        assert blocks_of(pool) == []
    finally:
        pool.close()
    assert all(conn.closed == 1 for conn in made.conns)
