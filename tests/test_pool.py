"""One test (or a few) per rule of SPEC section 3, through Pool and the messages."""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Any

import pykka
import pytest
from conftest import pool_threads, wait_for

from pooler_actors import (
    Acquire,
    AcquireTimeout,
    Contains,
    FactoryError,
    GetStats,
    ListResources,
    Pool,
    PoolClosedError,
    Pooler,
    PoolOptions,
    PoolSupervisor,
    Release,
    ReleaseAll,
    Reusable,
    TooManyWaiters,
)


class Res:
    """A resource that records its life; ping/close can be made to fail or block."""

    def __init__(self, key: Hashable, log: Recorder) -> None:
        self.key = key
        self.log = log
        self.closed = 0
        self.healthy = True
        self.made_in = threading.current_thread().name

    def ping(self) -> None:
        if not self.healthy:
            raise RuntimeError(f"{self.key} unhealthy")

    def close(self) -> None:
        self.log.before_close(self)
        self.closed += 1
        self.log.closed.append(self.key)
        self.log.close_threads.append(threading.current_thread().name)

    def __repr__(self) -> str:
        return f"Res({self.key!r})"


class Recorder:
    """A factory that records calls and can be told to fail or wait per key."""

    def __init__(self) -> None:
        self.calls: list[Hashable] = []
        self.made: list[Res] = []
        self.closed: list[Hashable] = []
        self.close_threads: list[str] = []
        self.fail: set[Hashable] = set()
        self.gates: dict[Hashable, threading.Event] = {}
        self.close_gates: dict[Hashable, threading.Event] = {}
        self.entered: dict[Hashable, threading.Event] = {}

    def __call__(self, key: Hashable) -> Res:
        self.calls.append(key)
        self.entered.setdefault(key, threading.Event()).set()
        gate = self.gates.get(key)
        if gate is not None:
            assert gate.wait(30), "test gate never opened"
        if key in self.fail:
            raise ConnectionError(f"cannot open {key}")
        res = Res(key, self)
        self.made.append(res)
        return res

    def before_close(self, res: Res) -> None:
        gate = self.close_gates.get(res.key)
        if gate is not None:
            assert gate.wait(30), "test close gate never opened"
        if res.key in self.fail:
            raise OSError(f"close of {res.key} failed")

    def existing(self) -> int:
        return len(self.made) - len(self.closed)


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


def waiting(pool: Pool[Any, Any], n: int) -> None:
    wait_for(lambda: pool.stats().wait_count == n)


def start_acquire(pool: Pool[Any, Any], key: Hashable, **kw: Any) -> dict[str, Any]:
    """Acquire in a thread; the returned dict gets 'value' or 'error' and 'done'."""
    out: dict[str, Any] = {"done": threading.Event()}

    def run() -> None:
        try:
            out["value"] = pool.acquire(key, **kw)
        except BaseException as error:
            out["error"] = error
        finally:
            out["done"].set()

    threading.Thread(target=run, daemon=True).start()
    return out


# --- keys and factories ----------------------------------------------------


def test_any_hashable_key(rec: Recorder) -> None:
    with Pool(rec) as pool:
        for key in (1, ("tenant", 7), frozenset({"a"}), None, 2.5):
            assert pool.acquire(key).key == key
            assert pool.contains(key)


def test_unhashable_key_raises_in_caller_and_changes_nothing(rec: Recorder) -> None:
    with Pool(rec) as pool:
        before = pool.stats()
        for call in (pool.acquire, pool.release, pool.contains):
            with pytest.raises(TypeError, match="hashable"):
                call(["a", "list"])
        with pytest.raises(TypeError, match="hashable"):
            Acquire({"a": 1})
        assert pool.stats() == before
        assert rec.calls == []


def test_factory_gets_key_whenever_it_can_take_one() -> None:
    """SPEC 12: a parameter with a default gets the key too; only a factory
    that takes no argument is called without it."""
    seen: list[object] = []

    def with_key(key: Hashable) -> Res:
        seen.append(key)
        return Res(key, Recorder())

    def with_default(optional: str = "x") -> Res:
        seen.append(optional)
        return Res("k", Recorder())

    def without_key() -> Res:
        seen.append("none")
        return Res("k", Recorder())

    with Pool(with_key) as p1, Pool(with_default) as p2, Pool(without_key) as p3:
        p1.acquire("tenant-a")
        p2.acquire("tenant-b")
        p3.acquire("tenant-c")
    assert seen == ["tenant-a", "tenant-b", "none"]


def test_factory_runs_in_the_resource_actor_thread(rec: Recorder) -> None:
    with Pool(rec, name="threads") as pool:
        res = pool.acquire("a")
        # A thread of the pool's resource actors: not the caller's, not the
        # supervisor's (a slow factory never blocks the supervisor).
        assert res.made_in.startswith("pooler_actors:threads:")
        assert res.made_in != threading.current_thread().name
        assert res.made_in != "pooler_actors:threads:supervisor"
        pool.release("a")
        [closed_in] = rec.close_threads
        assert closed_in.startswith("pooler_actors:threads:")
        assert closed_in != "pooler_actors:threads:supervisor"


def test_factory_error_carries_key_and_cause(rec: Recorder) -> None:
    rec.fail.add("bad")
    with Pool(rec) as pool:
        with pytest.raises(FactoryError) as info:
            pool.acquire("bad")
        assert info.value.key == "bad"
        assert isinstance(info.value.__cause__, ConnectionError)
        assert not pool.contains("bad")
        stats = pool.stats()
        assert stats.open_resources == 0
        assert stats.factory_errors == 1
        assert pool.acquire("good").key == "good"  # keeps serving


def test_factory_returning_non_reusable_is_factory_error() -> None:
    with Pool(object) as pool:
        with pytest.raises(FactoryError) as info:
            pool.acquire("k")
        assert isinstance(info.value.__cause__, TypeError)
        assert "Reusable" in str(info.value.__cause__)
        assert not pool.contains("k")
        assert pool.stats().open_resources == 0


# --- acquire -----------------------------------------------------------------


def test_open_key_returns_same_object(rec: Recorder) -> None:
    with Pool(rec) as pool:
        first = pool.acquire("a")
        assert pool.acquire("a") is first
        assert pool.actor_ref.ask(Acquire("a")) is first
        assert rec.calls == ["a"]
        stats = pool.stats()
        assert (stats.acquires, stats.hits, stats.created) == (3, 2, 1)


def test_ask_acquire_returns_the_resource_not_a_future(rec: Recorder) -> None:
    with Pool(rec) as pool:
        ref = pool.actor_ref
        res = ref.ask(Acquire("a"))
        assert isinstance(res, Res)
        future = ref.ask(Acquire("b"), block=False)
        assert isinstance(future, pykka.Future)
        assert future.get(timeout=10).key == "b"


def test_an_asks_future_works_with_pykkas_combinators(rec: Recorder) -> None:
    """A reply future keeps pykka's own `Future` fields (`_pykka.init_future`):
    `map`, `join` and `get_all` still answer, pending or settled."""
    with Pool(rec) as pool:
        ref = pool.actor_ref
        keys = ref.ask(Acquire("a"), block=False).map(lambda res: res.key)
        pair = ref.ask(Acquire("a"), block=False).join(
            ref.ask(Acquire("b"), block=False)
        )
        assert keys.get(timeout=10) == "a"
        assert [res.key for res in pair.get(timeout=10)] == ["a", "b"]
        futures = [ref.ask(Acquire(k), block=False) for k in ("c", "a")]
        assert [res.key for res in pykka.get_all(futures, timeout=10)] == ["c", "a"]


def test_supervisor_start_directly(rec: Recorder) -> None:
    ref = PoolSupervisor.start(rec, options=PoolOptions(max_open_resources=2))
    try:
        res = ref.ask(Acquire("a"))
        assert ref.ask(Contains("a")) is True
        assert ref.ask(ListResources()) == [("a", res)]
        assert ref.ask(GetStats()).max_open_resources == 2
        assert ref.ask(Release("a")) is True
        assert ref.ask(Release("a")) is False
        assert ref.ask(ReleaseAll()) is None
    finally:
        ref.stop()


def test_creation_is_joined_not_repeated(rec: Recorder) -> None:
    rec.gates["slow"] = threading.Event()
    with Pool(rec) as pool:
        callers = [start_acquire(pool, "slow") for _ in range(5)]
        wait_for(lambda: pool.stats().joins == 4)
        assert pool.stats().wait_count == 0  # joiners are not queued
        rec.gates["slow"].set()
        for out in callers:
            assert out["done"].wait(10)
        assert rec.calls == ["slow"]
        assert len({id(out["value"]) for out in callers}) == 1


def test_queue_is_fifo(rec: Recorder) -> None:
    with Pool(rec, max_open_resources=1) as pool:
        pool.acquire("first")
        outs = []
        for key in ("q1", "q2", "q3"):
            outs.append(start_acquire(pool, key))
            waiting(pool, len(outs))
        for expected in ("q1", "q2", "q3"):
            current = rec.calls[-1]
            pool.release(current)
            wait_for(lambda: rec.calls[-1] == expected)  # noqa: B023
        assert rec.calls == ["first", "q1", "q2", "q3"]
        for out in outs:
            assert out["done"].wait(10)


def test_queued_caller_of_an_opened_key_takes_no_slot(rec: Recorder) -> None:
    rec.gates["a"] = threading.Event()
    with Pool(rec, max_open_resources=2) as pool:
        creator = start_acquire(pool, "a")
        wait_for(lambda: "a" in rec.calls)
        pool.acquire("b")  # the cap is now full: a creating, b open
        # A second caller of "a" joins the creation (no slot needed) ...
        joiner = start_acquire(pool, "a")
        # ... while a caller of "c" must queue.
        queued = start_acquire(pool, "c")
        waiting(pool, 1)
        rec.gates["a"].set()
        assert creator["done"].wait(10) and joiner["done"].wait(10)
        assert joiner["value"] is creator["value"]
        assert pool.stats().wait_count == 1
        assert "value" not in queued
        pool.release("b")
        assert queued["done"].wait(10)
        assert rec.calls == ["a", "b", "c"]


# --- the cap -------------------------------------------------------------------


def test_cap_counts_resources_being_closed(rec: Recorder) -> None:
    rec.close_gates["a"] = threading.Event()
    with Pool(rec, max_open_resources=1) as pool:
        pool.acquire("a")
        releaser = threading.Thread(target=pool.release, args=("a",))
        releaser.start()
        wait_for(lambda: not pool.contains("a"))  # removed at once ...
        out = start_acquire(pool, "b")
        waiting(pool, 1)
        stats = pool.stats()
        assert stats.closing == 1 and stats.open_resources == 1
        assert rec.calls == ["a"]  # ... but b waits until a's close returned
        rec.close_gates["a"].set()
        assert out["done"].wait(10)
        releaser.join(10)
        assert rec.calls == ["a", "b"]


def test_cap_counts_resources_being_created(rec: Recorder) -> None:
    rec.gates["a"] = threading.Event()
    with Pool(rec, max_open_resources=1) as pool:
        creating = start_acquire(pool, "a")
        wait_for(lambda: pool.stats().creating == 1)
        queued = start_acquire(pool, "b")
        waiting(pool, 1)
        assert rec.calls == ["a"]
        rec.gates["a"].set()
        assert creating["done"].wait(10)
        assert pool.stats().wait_count == 1
        pool.release("a")
        assert queued["done"].wait(10)


# --- waking --------------------------------------------------------------------


def test_release_all_wakes_as_many_waiters_as_slots(rec: Recorder) -> None:
    with Pool(rec, max_open_resources=3) as pool:
        for key in "abc":
            pool.acquire(key)
        outs = [start_acquire(pool, f"w{i}") for i in range(3)]
        waiting(pool, 3)
        pool.release_all()
        for out in outs:
            assert out["done"].wait(10)
            assert "error" not in out
        assert sorted(rec.closed) == ["a", "b", "c"]


def test_failed_factory_frees_the_slot_for_a_waiter(rec: Recorder) -> None:
    rec.gates["bad"] = threading.Event()
    rec.fail.add("bad")
    with Pool(rec, max_open_resources=1) as pool:
        bad = start_acquire(pool, "bad")
        wait_for(lambda: "bad" in rec.calls)
        good = start_acquire(pool, "good")
        waiting(pool, 1)
        rec.gates["bad"].set()
        assert bad["done"].wait(10) and isinstance(bad["error"], FactoryError)
        assert good["done"].wait(10) and good["value"].key == "good"


def test_health_eviction_wakes_a_waiter(rec: Recorder) -> None:
    with Pool(rec, max_open_resources=1, health_check_interval=0.05) as pool:
        res = pool.acquire("a")
        out = start_acquire(pool, "b")
        waiting(pool, 1)
        res.healthy = False
        assert out["done"].wait(10)
        assert out["value"].key == "b"
        assert pool.stats().health_evictions == 1
        assert rec.closed == ["a"]


# --- timeouts ----------------------------------------------------------------


def test_negative_or_bad_timeout_is_rejected() -> None:
    with pytest.raises(ValueError, match="timeout"):
        Acquire("k", -1)
    with pytest.raises(TypeError, match="timeout"):
        Acquire("k", "soon")  # type: ignore[arg-type]


def test_queue_timeout(rec: Recorder) -> None:
    with Pool(rec, max_open_resources=1) as pool:
        pool.acquire("a")
        with pytest.raises(AcquireTimeout) as info:
            pool.acquire("b", timeout=0.05)
        assert isinstance(info.value, TimeoutError)
        stats = pool.stats()
        assert (stats.wait_count, stats.timeouts, stats.waits) == (0, 1, 1)
        assert stats.wait_duration > 0
        pool.release("a")
        wait_for(lambda: pool.stats().open_resources == 0)
        assert rec.calls == ["a"]  # nobody created "b" for the caller who left


def test_zero_timeout_never_queues(rec: Recorder) -> None:
    with Pool(rec, max_open_resources=1) as pool:
        pool.acquire("a")
        with pytest.raises(AcquireTimeout):
            pool.acquire("b", timeout=0)
        assert pool.stats().waits == 0
        # ... but a creation it starts is awaited.
        pool.release("a")
        rec.gates["c"] = threading.Event()
        out = start_acquire(pool, "c", timeout=0)
        wait_for(lambda: "c" in rec.calls)
        rec.gates["c"].set()
        assert out["done"].wait(10) and out["value"].key == "c"


def test_timeout_bounds_creation_and_creation_stays(rec: Recorder) -> None:
    rec.gates["slow"] = threading.Event()
    with Pool(rec) as pool:
        with pytest.raises(AcquireTimeout):
            pool.acquire("slow", timeout=0.05)
        rec.gates["slow"].set()
        wait_for(lambda: pool.stats().created == 1)
        assert pool.contains("slow")
        assert pool.acquire("slow", timeout=0) is rec.made[0]


def test_caller_that_gave_up_is_never_granted(rec: Recorder) -> None:
    with Pool(rec, max_open_resources=1) as pool:
        pool.acquire("a")
        ref = pool.actor_ref
        with pytest.raises(pykka.Timeout):
            ref.ask(Acquire("gave-up"), timeout=0.05)
        wait_for(lambda: pool.stats().wait_count == 0)  # withdrawn at once
        follower = start_acquire(pool, "next")
        waiting(pool, 1)
        pool.release("a")
        assert follower["done"].wait(10)
        assert rec.calls == ["a", "next"]
        assert pool.stats().timeouts == 1


def test_future_get_timeout_is_not_giving_up(rec: Recorder) -> None:
    with Pool(rec, max_open_resources=1) as pool:
        pool.acquire("a")
        future = pool.actor_ref.ask(Acquire("b"), block=False)
        with pytest.raises(pykka.Timeout):
            future.get(timeout=0.01)
        assert pool.stats().wait_count == 1
        pool.release("a")
        assert future.get(timeout=10).key == "b"


def test_too_many_waiters(rec: Recorder) -> None:
    with Pool(rec, max_open_resources=1, max_waiting=1) as pool:
        pool.acquire("a")
        first = start_acquire(pool, "b")
        waiting(pool, 1)
        with pytest.raises(TooManyWaiters):
            pool.acquire("c")
        assert pool.stats().rejected == 1
        assert pool.stats().wait_count == 1
        pool.release("a")
        assert first["done"].wait(10)


# --- stats -------------------------------------------------------------------


def test_stats_as_the_seed_prints_them(rec: Recorder) -> None:
    with Pool(rec, max_open_resources=1) as pool:
        pool.acquire("key1")
        out = start_acquire(pool, "key2")
        waiting(pool, 1)
        assert pool.stats().open_resources == 1
        pool.release("key1")
        assert out["done"].wait(10)
        stats = pool.stats()
        assert (stats.open_resources, stats.wait_count) == (1, 0)
        assert stats.wait_duration > 0
        assert stats.max_wait <= stats.wait_duration
        assert stats.as_dict()["wait_count"] == 0


def test_counters_count_failed_calls(rec: Recorder) -> None:
    rec.fail.add("bad")
    with Pool(rec) as pool:
        for _ in range(2):
            with pytest.raises(FactoryError):
                pool.acquire("bad")
        stats = pool.stats()
        assert (stats.acquires, stats.factory_errors, stats.created) == (2, 2, 0)


# --- release -------------------------------------------------------------------


def test_release_closes_removes_and_replies_after_close(rec: Recorder) -> None:
    with Pool(rec) as pool:
        res = pool.acquire("a")
        assert pool.release("a") is True
        assert res.closed == 1  # the close finished before release replied
        assert not pool.contains("a")
        assert pool.release("a") is False
        assert pool.stats().releases == 1


def test_close_error_is_logged_not_raised_and_slot_frees(rec: Recorder) -> None:
    with Pool(rec, max_open_resources=1) as pool:
        pool.acquire("a")
        rec.fail.add("a")
        assert pool.release("a") is True
        stats = pool.stats()
        assert (stats.close_errors, stats.open_resources) == (1, 0)
        assert pool.acquire("b").key == "b"


def test_release_during_creation(rec: Recorder) -> None:
    rec.gates["a"] = threading.Event()
    with Pool(rec) as pool:
        out = start_acquire(pool, "a")
        wait_for(lambda: "a" in rec.calls)
        releaser = threading.Thread(target=pool.release, args=("a",))
        releaser.start()
        wait_for(lambda: not pool.contains("a"))  # removed at once
        rec.gates["a"].set()
        assert out["done"].wait(10)
        assert out["value"].key == "a"  # they asked first: they get it
        releaser.join(10)
        assert not releaser.is_alive()
        assert rec.closed == ["a"]  # ... and it is closed right after


def test_no_resource_exists_after_release_all(rec: Recorder) -> None:
    rec.close_gates["b"] = threading.Event()
    with Pool(rec) as pool:
        for key in "abc":
            pool.acquire(key)
        done = threading.Event()
        threading.Thread(target=lambda: (pool.release_all(), done.set())).start()
        wait_for(lambda: sorted(rec.closed) == ["a", "c"])
        assert not done.is_set()  # b's close has not returned yet
        rec.close_gates["b"].set()
        assert done.wait(10)
        assert rec.existing() == 0
        assert pool.stats().open_resources == 0


# --- iteration -----------------------------------------------------------------


def test_all_and_walk_in_creation_order(rec: Recorder) -> None:
    with Pool(rec) as pool:
        for key in ("k2", "k0", "k1"):
            pool.acquire(key)
        assert [k for k, _ in pool.all()] == ["k2", "k0", "k1"]
        next_, stop = pool.walk()
        got = []
        while True:
            key, value, ok = next_()
            if not ok:
                break
            got.append((key, value))
        assert got == list(pool.all())
        next_, stop = pool.walk()
        assert next_()[2] is True
        stop()
        assert next_() == (None, None, False)


# --- close -----------------------------------------------------------------------


def test_closed_pool(rec: Recorder) -> None:
    pool = Pool(rec, max_open_resources=1)
    pool.acquire("a")
    out = start_acquire(pool, "b")
    waiting(pool, 1)
    pool.close()
    assert out["done"].wait(10)
    assert isinstance(out["error"], PoolClosedError)
    assert rec.closed == ["a"]
    for call in (lambda: pool.acquire("a"), pool.stats, lambda: pool.release("a")):
        with pytest.raises(PoolClosedError):
            call()
    pool.close()  # idempotent
    assert pool.closed
    assert "closed" in repr(pool)


def test_pool_close_leaves_no_thread(rec: Recorder) -> None:
    pool = Pool(rec, health_check_interval=0.01)
    for key in range(5):
        pool.acquire(key)
    assert pool_threads()
    pool.close()
    assert pool_threads() == []
    assert sorted(rec.closed) == list(range(5))


def test_stop_all_closes_every_resource_once(rec: Recorder) -> None:
    pool = Pool(rec)
    for key in range(4):
        pool.acquire(key)
    pykka.ActorRegistry.stop_all()
    assert sorted(rec.closed) == [0, 1, 2, 3]
    assert pool.closed


# --- configuration ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("max_open_resources", 0, ValueError),
        ("max_open_resources", 1.5, TypeError),
        ("health_check_interval", 0, ValueError),
        ("health_check_interval", -1.0, ValueError),
        ("ping_timeout", 0, ValueError),
        ("close_timeout", float("inf"), ValueError),
        ("create_timeout", -2, ValueError),
        ("max_waiting", -1, ValueError),
        ("max_lifetime", 0, ValueError),
        ("max_idle_time", -5, ValueError),
        ("name", "", TypeError),
    ],
)
def test_bad_configuration_names_the_field(field: str, value: Any, error: type) -> None:
    with pytest.raises(error, match=field):
        PoolOptions(**{field: value})
    with pytest.raises(error, match=field):
        Pool(Recorder(), **{field: value})


def test_bad_factory_and_unknown_option() -> None:
    with pytest.raises(TypeError, match="factory"):
        Pool(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="max_open"):
        Pool(Recorder(), max_open=3)
    assert pykka.ActorRegistry.get_all() == []  # nothing half-started


def test_protocols(rec: Recorder) -> None:
    with Pool(rec, name="proto") as pool:
        assert isinstance(pool, Pooler)
        assert isinstance(pool.acquire("a"), Reusable)
        assert repr(pool) == "<Pool 'proto' (open)>"


def test_default_names_are_numbered() -> None:
    a, b = PoolOptions(), PoolOptions()
    assert a.name.startswith("pool-") and b.name.startswith("pool-")
    assert a.name != b.name


def test_withdrawn_waiter_still_in_queue_is_skipped_by_wake(rec: Recorder) -> None:
    # The caller gave up, but its Withdraw notice has not reached the supervisor
    # when the slot frees: waking must skip it, and the slot goes to the next.
    with Pool(rec, max_open_resources=1) as pool:
        pool.acquire("a")
        ref = pool.actor_ref
        gave_up = ref.ask(Acquire("gave-up"), block=False)
        follower = ref.ask(Acquire("next"), block=False)
        waiting(pool, 2)
        gave_up.owner = None  # the notice is "still in flight": never sent
        assert gave_up.withdraw(pykka.Timeout("gave up"))
        assert pool.release("a")
        assert follower.get(timeout=10).key == "next"
        assert rec.calls == ["a", "next"]


def test_caller_who_gave_up_before_being_read_gets_nothing(rec: Recorder) -> None:
    # Hold the supervisor inside a log call, so the caller gives up while its
    # Acquire still sits unread in the mailbox: no creation may start for it.
    entered, gate = threading.Event(), threading.Event()

    class SlowLogger:
        def _log(self, event: str, **fields: Any) -> None:
            if event == "pool.acquire.hit" and fields.get("key") == "held":
                entered.set()
                assert gate.wait(30)

        debug = info = warning = error = _log

        def is_enabled_for(self, _level: int) -> bool:
            return True

    with Pool(rec, logger=SlowLogger()) as pool:
        pool.acquire("held")
        threading.Thread(target=pool.acquire, args=("held",), daemon=True).start()
        assert entered.wait(10)  # the supervisor is busy logging that hit
        with pytest.raises(pykka.Timeout):
            pool.actor_ref.ask(Acquire("ghost"), timeout=0.01)
        gate.set()
        wait_for(lambda: pool.stats().timeouts == 1)
        assert rec.calls == ["held"]
        assert not pool.contains("ghost")
