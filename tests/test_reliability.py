"""Failure containment: stuck and failing user code, shutdown paths, overload.

Every hang here waits on the lab's ``gate`` (a ``threading.Event``) that the
test opens at the end, so no thread outlives the test. Tests wait on events
and counters, never on sleeps, and assert no timings.
"""

from __future__ import annotations

import asyncio
import textwrap
import threading
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest
from conftest import pool_threads, run_python, wait_for
from faults import HANG, RAISE, Boom, Lab, Plan
from resources import Crash, CrashingSupervisor, Factory, Res

from pooler_actors import (
    Acquire,
    AcquireTimeout,
    AsyncPool,
    FactoryError,
    GetStats,
    Pool,
    PoolClosedError,
    PoolOptions,
    TooManyWaiters,
)
from pooler_actors._messages import HealthTick
from pooler_actors.resource import ResourceActor

# Short enough to keep the tests fast, long enough that healthy user code on a
# loaded machine never hits them: only the code a test makes hang times out.
FAST = {"ping_timeout": 1.0, "close_timeout": 0.3, "create_timeout": 1.0}


def plans(**by_key: Plan) -> Callable[[Hashable, int], Plan]:
    return lambda key, _n: by_key.get(str(key), Plan())


@pytest.fixture
def lab_pool() -> Iterator[Callable[..., tuple[Lab, Pool[Any, Any]]]]:
    """Make ``(lab, pool)`` pairs; open every gate and close every pool at the end."""
    made: list[tuple[Lab, Pool[Any, Any]]] = []

    def make(
        cap: int = 2,
        plan: Callable[[Hashable, int], Plan] | None = None,
        **options: Any,
    ) -> tuple[Lab, Pool[Any, Any]]:
        lab = Lab(cap, plan or plans())
        options.setdefault("health_check_interval", None)
        pool: Pool[Any, Any] = Pool(
            lab.factory, max_open_resources=cap, logger=lab.recorder, **options
        )
        made.append((lab, pool))
        return lab, pool

    yield make
    for lab, pool in made:
        lab.gate.set()
        pool.close()
    for lab, _ in made:
        wait_for(lambda: not pool_threads())
        assert not lab.violations, lab.violations


def health_check(lab: Lab, pool: Pool[Any, Any]) -> dict[str, Any]:
    """Run one health check now and return its ``pool.health.finished`` fields."""
    before = len(lab.recorder.named("pool.health.finished"))
    pool.actor_ref.tell(HealthTick())
    wait_for(lambda: len(lab.recorder.named("pool.health.finished")) > before)
    return lab.recorder.named("pool.health.finished")[before]


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run ``fn`` in a thread; its result or exception lands in the list."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as error:
            out.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def queued(pool: Pool[Any, Any], n: int) -> None:
    wait_for(lambda: pool.stats().wait_count == n)


# --- health checks ------------------------------------------------------------


def test_ping_raising_evicts(lab_pool: Any) -> None:
    lab, pool = lab_pool(cap=2)
    bad = pool.acquire("bad")
    good = pool.acquire("good")
    bad.unhealthy = True

    finished = health_check(lab, pool)

    assert finished["pinged"] == 2
    assert finished["evicted"] == 1
    wait_for(lambda: bad.closes == 1)
    assert not pool.contains("bad")
    assert pool.acquire("good") is good
    stats = pool.stats()
    assert (stats.health_evictions, stats.open_resources) == (1, 1)
    (evicted,) = lab.recorder.named("pool.health.evicted")
    assert (evicted["key"], evicted["reason"]) == ("bad", "ping_failed")


def test_ping_hanging_is_evicted_then_abandoned_and_waiters_woken(
    lab_pool: Any,
) -> None:
    lab, pool = lab_pool(cap=2, plan=plans(stuck=Plan(ping=HANG)), **FAST)
    stuck = pool.acquire("stuck")
    good = pool.acquire("good")
    waiter, got = in_thread(lambda: pool.acquire("next"))
    queued(pool, 1)

    finished = health_check(lab, pool)

    # The ping got no answer: evicted; its close cannot run (the actor is
    # stuck in ping), so the resource is abandoned and its slot frees.
    assert (finished["pinged"], finished["evicted"]) == (2, 1)
    (evicted,) = lab.recorder.named("pool.health.evicted")
    assert (evicted["key"], evicted["reason"]) == ("stuck", "ping_timeout")
    abandoned = lab.recorder.wait("pool.resource.abandoned")
    assert abandoned["key"] == "stuck"
    waiter.join(10)
    assert got and got[0].key == "next"
    assert pool.acquire("good") is good
    stats = pool.stats()
    assert (stats.abandoned, stats.open_resources, stats.wait_count) == (1, 2, 0)
    assert not pool.contains("stuck")
    assert stuck.closes == 0  # still stuck in ping

    lab.gate.set()
    wait_for(lambda: stuck.closes == 1)  # its actor closes it once unstuck


def test_close_raising_is_logged_and_frees_the_slot(lab_pool: Any) -> None:
    lab, pool = lab_pool(cap=1, plan=plans(a=Plan(close=RAISE)))
    res = pool.acquire("a")

    assert pool.release("a") is True

    assert res.closes == 1
    stats = pool.stats()
    assert (stats.close_errors, stats.open_resources) == (1, 0)
    (failed,) = lab.recorder.named("pool.close.failed")
    assert failed["key"] == "a" and "Boom" in failed["error"]
    assert pool.acquire("b").key == "b"  # the slot is free


def test_close_hanging_is_abandoned(lab_pool: Any) -> None:
    lab, pool = lab_pool(cap=1, plan=plans(a=Plan(close=HANG)), **FAST)
    res = pool.acquire("a")

    assert pool.release("a") is True  # replies once close_timeout passed

    assert res.closes == 0 and lab.hanging == 1
    (abandoned,) = lab.recorder.named("pool.resource.abandoned")
    assert abandoned["key"] == "a"
    assert pool.stats().abandoned == 1
    assert pool.acquire("b").key == "b"  # the slot is free, the pool serves
    lab.gate.set()
    wait_for(lambda: res.closes == 1)


def test_factory_hanging_is_abandoned_and_callers_get_factory_error(
    lab_pool: Any,
) -> None:
    lab, pool = lab_pool(cap=1, plan=plans(slow=Plan(factory=HANG)), **FAST)
    joiner, joined = in_thread(lambda: pool.acquire("slow"))

    with pytest.raises(FactoryError) as caught:
        pool.acquire("slow")

    assert isinstance(caught.value.__cause__, TimeoutError)
    joiner.join(10)
    assert joined and isinstance(joined[0], FactoryError)
    assert pool.acquire("other").key == "other"  # the slot was freed
    stats = pool.stats()
    assert (stats.abandoned, stats.factory_errors) == (1, 1)
    assert not pool.contains("slow")

    lab.gate.set()  # the factory returns late: its resource is closed, not kept
    wait_for(lambda: len(lab.created()) == 2)
    late = next(r for r in lab.created() if r.key == "slow")
    wait_for(lambda: late.closes == 1)
    assert not pool.contains("slow")
    assert dict(pool.all()) == {"other": pool.acquire("other")}


def test_factory_raising_does_not_stop_the_pool(lab_pool: Any) -> None:
    _, pool = lab_pool(cap=1, plan=plans(bad=Plan(factory=RAISE)))
    for _ in range(3):
        with pytest.raises(FactoryError) as caught:
            pool.acquire("bad")
        assert isinstance(caught.value.__cause__, Boom)
    assert pool.acquire("good").key == "good"
    assert pool.stats().factory_errors == 3


@pytest.mark.timeout(30)  # a hang guard, not a timing assertion
@pytest.mark.parametrize("where", ["ping", "close", "factory"])
@pytest.mark.parametrize("how", ["pool_close", "stop_all"])
def test_pool_close_returns_with_a_stuck_resource(
    lab_pool: Any, where: str, how: str
) -> None:
    plan = Plan(**{where: HANG})
    lab, pool = lab_pool(
        cap=2,
        plan=plans(stuck=plan),
        ping_timeout=60,
        close_timeout=1.0,
        create_timeout=None,
    )
    pool.acquire("fine")
    if where == "factory":
        in_thread(lambda: pool.acquire("stuck"))
    else:
        stuck = pool.acquire("stuck")
        if where == "ping":
            pool.actor_ref.tell(HealthTick())
        else:
            in_thread(lambda: pool.release("stuck"))
    wait_for(lambda: lab.hanging == 1)

    # Returns after about close_timeout despite the stuck actor. stop_all stops
    # the supervisor first, which abandons the stuck actor; its own stop of that
    # actor is then answered at once instead of waiting behind the stuck call.
    if how == "pool_close":
        pool.close()
    else:
        pykka.ActorRegistry.stop_all()

    assert pool.closed
    abandoned = lab.recorder.wait("pool.resource.abandoned")
    assert abandoned["key"] == "stuck"
    fine = next(r for r in lab.created() if r.key == "fine")
    assert fine.closes == 1
    lab.gate.set()
    wait_for(lambda: not pool_threads())
    assert lab.not_closed_once() == []
    if where != "factory":
        assert stuck.closes == 1


def test_health_checks_skip_resources_being_created_or_closed(lab_pool: Any) -> None:
    lab, pool = lab_pool(
        cap=3,
        plan=plans(new=Plan(factory=HANG), old=Plan(close=HANG)),
        create_timeout=None,
        close_timeout=60,
    )
    fine = pool.acquire("fine")
    old = pool.acquire("old")
    releaser, released = in_thread(lambda: pool.release("old"))
    creator, created = in_thread(lambda: pool.acquire("new"))
    wait_for(lambda: lab.hanging == 2)  # one close and one factory in progress
    assert pool.stats().closing == 1 and pool.stats().creating == 1

    finished = health_check(lab, pool)

    assert finished["pinged"] == 1
    lab.gate.set()
    releaser.join(10)
    creator.join(10)
    assert released == [True]
    new = created[0]
    assert new.key == "new"
    assert health_check(lab, pool)["pinged"] == 2  # fine and new, now open
    assert (fine.pings, new.pings, old.pings) == (2, 1, 0)


def test_health_sweep_over_thousands_does_not_stall_the_supervisor(
    lab_pool: Any,
) -> None:
    n = 2000
    lab, pool = lab_pool(cap=n, plan=lambda _k, _n: Plan(ping=HANG), ping_timeout=60)
    keys = [f"k{i}" for i in range(n)]
    assert set(pool.prewarm(keys).values()) == {"created"}

    pool.actor_ref.tell(HealthTick())
    started = lab.recorder.wait("pool.health.started")
    wait_for(lambda: lab.hanging >= 10)  # pings are stuck in their actors

    # The supervisor answers while the pings are outstanding.
    assert pool.contains("k0") and not pool.contains("nope")
    stats = pool.stats()
    assert (stats.open_resources, stats.health_checks) == (n, 1)
    first = pool.acquire("k0")
    assert first.key == "k0"
    assert lab.recorder.named("pool.health.finished") == []  # still outstanding

    lab.gate.set()
    finished = lab.recorder.wait("pool.health.finished")
    assert started["pinged"] == n
    assert (finished["pinged"], finished["evicted"]) == (n, 0)


# --- failure containment ------------------------------------------------------


def test_resource_actor_dying_frees_the_slot(lab_pool: Any) -> None:
    lab, pool = lab_pool(cap=1)
    res = pool.acquire("a")
    waiter, got = in_thread(lambda: pool.acquire("b"))
    queued(pool, 1)
    (actor_ref,) = pykka.ActorRegistry.get_by_class(ResourceActor)

    actor_ref.stop()  # killed from outside the pool

    waiter.join(10)
    assert got and got[0].key == "b"
    assert res.closes == 1
    assert not pool.contains("a")
    lost = lab.recorder.wait("pool.resource.lost")
    assert lost["key"] == "a"
    assert pool.stats().open_resources == 1


def test_supervisor_failure_closes_resources_and_fails_waiters() -> None:
    lab = Lab(2)
    ref = CrashingSupervisor.start(
        lab.factory,
        PoolOptions(max_open_resources=2, health_check_interval=None),
        logger=lab.recorder,
    )
    try:
        held = [ref.ask(Acquire("a")), ref.ask(Acquire("b"))]
        waiters = [in_thread(lambda k=k: ref.ask(Acquire(k))) for k in "cd"]
        wait_for(lambda: ref.ask(GetStats()).wait_count == 2)

        ref.tell(Crash())  # the supervisor fails handling it

        for thread, out in waiters:
            thread.join(10)
            assert out and isinstance(out[0], PoolClosedError), out
        wait_for(lambda: not pool_threads())
        assert [r.closes for r in held] == [1, 1]
        with pytest.raises(PoolClosedError):
            ref.ask(Acquire("a"))
    finally:
        lab.gate.set()
        ref.stop()


class _BrokenLogger:
    """A logger that raises on every event, as a broken processor would."""

    def __init__(self) -> None:
        self.calls = 0

    def _log(self, event: str, **fields: Any) -> None:
        self.calls += 1
        raise RuntimeError("logging is broken")

    debug = info = warning = error = critical = _log


def test_broken_logging_never_stops_the_pool(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger = _BrokenLogger()
    lab = Lab(2)
    with Pool(lab.factory, max_open_resources=1, logger=logger) as pool:
        first = pool.acquire("a")
        assert pool.acquire("a") is first
        assert pool.release("a") is True
        assert pool.acquire("b") is not first
        assert pool.stats().created == 2
    assert logger.calls > 0
    assert "logging is broken" in capsys.readouterr().err


# --- shutdown paths -------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("how", ["pool_close", "ref_stop", "stop_all"])
def test_shutdown_closes_everything_once_and_fails_waiters(how: str) -> None:
    lab = Lab(2)
    pool: Pool[Any, Any] = Pool(
        lab.factory,
        max_open_resources=2,
        health_check_interval=0.05,  # the ticker runs too
        logger=lab.recorder,
    )
    pool.acquire("a")
    pool.acquire("b")
    waiters = [in_thread(lambda k=k: pool.acquire(k)) for k in ("c", "d", "e")]
    queued(pool, 3)

    if how == "pool_close":
        pool.close()
    elif how == "ref_stop":
        pool.actor_ref.stop()
    else:
        pykka.ActorRegistry.stop_all()

    for thread, out in waiters:
        thread.join(10)
        assert out and isinstance(out[0], PoolClosedError), out
    wait_for(lambda: not pool_threads())
    assert lab.factory_calls == ["a", "b"]
    assert lab.not_closed_once() == []
    with pytest.raises(PoolClosedError):
        pool.acquire("a")
    pool.close()  # idempotent
    assert not lab.violations


# --- overload and callers that gave up --------------------------------------------


def test_callers_that_gave_up_are_never_granted(lab_pool: Any) -> None:
    lab, pool = lab_pool(cap=1)
    pool.acquire("a")
    ref = pool.actor_ref

    # Gives up through its own ask timeout.
    with pytest.raises(pykka.Timeout):
        ref.ask(Acquire("asked"), timeout=0.05)
    # Gives up through the acquire deadline.
    with pytest.raises(AcquireTimeout):
        pool.acquire("deadline", timeout=0.05)
    # A future polled with a timeout has NOT given up: it stays queued.
    future = ref.ask(Acquire("polled"), block=False)
    with pytest.raises(pykka.Timeout):
        future.get(timeout=0.05)
    last, got = in_thread(lambda: pool.acquire("last"))
    queued(pool, 2)  # "polled" and "last"; the two that gave up left the queue

    assert pool.release("a")
    assert future.get(timeout=10).key == "polled"
    assert pool.release("polled")
    last.join(10)
    assert got and got[0].key == "last"
    assert lab.factory_calls == ["a", "polled", "last"]
    assert pool.stats().timeouts == 2


def test_cancelled_async_acquire_is_never_granted() -> None:
    lab = Lab(1)

    async def scenario() -> None:
        async with AsyncPool(
            lab.factory, max_open_resources=1, health_check_interval=None
        ) as pool:
            await pool.acquire("a")
            cancelled = asyncio.create_task(pool.acquire("cancelled"))
            while (await pool.stats()).wait_count < 1:
                await asyncio.sleep(0.001)
            last = asyncio.create_task(pool.acquire("last"))
            while (await pool.stats()).wait_count < 2:
                await asyncio.sleep(0.001)
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            while (await pool.stats()).wait_count > 1:
                await asyncio.sleep(0.001)
            assert await pool.release("a")
            assert (await last).key == "last"

    asyncio.run(scenario())
    assert lab.factory_calls == ["a", "last"]


def test_max_waiting_sheds_load(lab_pool: Any) -> None:
    lab, pool = lab_pool(cap=1, max_waiting=2)
    pool.acquire("a")
    waiters = [in_thread(lambda k=k: pool.acquire(k)) for k in ("b",)]
    queued(pool, 1)
    waiters.append(in_thread(lambda: pool.acquire("c")))
    queued(pool, 2)

    with pytest.raises(TooManyWaiters):
        pool.acquire("d")
    with pytest.raises(TooManyWaiters):
        pool.acquire("e", timeout=5)

    assert pool.stats().rejected == 2
    assert pool.acquire("a").key == "a"  # an open key is still served at once
    pool.release("a")
    waiters[0][0].join(10)
    pool.release("b")
    waiters[1][0].join(10)
    assert [out[0].key for _, out in waiters] == ["b", "c"]
    assert lab.factory_calls == ["a", "b", "c"]


# --- interpreter exit ------------------------------------------------------------

_FORGETFUL = textwrap.dedent(
    """
    import sys
    from pooler_actors import Pool

    def note(line):
        with open(sys.argv[1], "a") as out:
            out.write(line + "\\n")

    class Conn:
        def __init__(self, key):
            self.key = key
        def ping(self):
            pass
        def close(self):
            note(f"closed {self.key}")

    pool = Pool(Conn, max_open_resources=2, health_check_interval=0.05)
    pool.acquire("a")
    pool.acquire("b")
    note("acquired")
    # exits without pool.close()
    """
)


@pytest.mark.timeout(60)
def test_forgotten_pool_is_closed_at_interpreter_exit(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    # The timeout is a hang guard: exiting promptly is the point.
    child = run_python("-c", _FORGETFUL, str(notes), timeout=30)
    assert child.returncode == 0, child.stderr
    lines = notes.read_text().splitlines()
    assert lines[0] == "acquired", lines
    assert sorted(lines[1:]) == ["closed a", "closed b"], child.stdout


def test_late_ready_of_an_abandoned_creation_never_reaches_a_newer_one() -> None:
    # Creation 1 hangs and is abandoned; creation 2 of the same key starts; then
    # creation 1 returns: its stale Ready must not answer creation 2's caller.
    gates = [threading.Event(), threading.Event()]
    entered: list[int] = []
    made: list[Res] = []

    def factory(key: Hashable) -> Res:
        n = len(entered)
        entered.append(n)
        assert gates[n].wait(30)
        res = Res(key)
        res.generation = n + 1  # type: ignore[attr-defined]
        made.append(res)
        return res

    with Pool(factory, max_open_resources=2, create_timeout=0.2) as pool:
        with pytest.raises(FactoryError):
            pool.acquire("k")  # creation 1 hangs and is abandoned
        second = in_thread(lambda: pool.acquire("k"))
        wait_for(lambda: len(entered) == 2)  # creation 2 is in flight
        gates[0].set()  # creation 1 returns late: a stale Ready
        wait_for(lambda: bool(made) and made[0].closes == 1)
        gates[1].set()
        thread, out = second
        thread.join(10)
        assert out[0].generation == 2 and out[0].closes == 0


def test_raising_done_callback_never_stops_the_pool(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Futures are settled in the supervisor's thread; a caller's callback runs
    # off it, and one that raises must hurt nobody else.
    with Pool(Factory(), max_open_resources=1) as pool:
        pool.acquire("a")
        future = pool.actor_ref.ask(Acquire("b"), block=False)
        future.add_done_callback(lambda _f: 1 / 0)
        queued(pool, 1)
        assert pool.release("a")
        assert future.get(timeout=10).key == "b"
        assert pool.acquire("b") is future.get()  # still serving
        assert pool.stats().created == 2
    err: list[str] = []
    wait_for(
        lambda: (
            err.append(capsys.readouterr().err) or "ZeroDivisionError" in "".join(err)
        )
    )
