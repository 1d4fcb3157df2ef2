"""One test (or more) per defect of issue 10, through the public API only.

Each test states the behaviour SPEC 3, 6 and 7 ("Hardening rules") require and
failed on the code the issue was filed against. Scenarios that used to kill
or deadlock the supervisor, deliver signals, fork, or reconfigure structlog
run in a fresh interpreter (`run_scenario`): a hang there is cut off by the
script's own budget, which reports the stage it hung in, so one broken pool
cannot leave dead actors or threads behind for the tests that follow.
"""

from __future__ import annotations

import gc
import json
import subprocess
import textwrap
import threading
import time
import weakref
from collections.abc import Hashable, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from conftest import pool_threads, run_python, wait_for
from structlog.testing import capture_logs

from pooler_actors import Acquire, FactoryError, Pool, Prewarm, Refresh

# --- running a scenario in a fresh interpreter -------------------------------

# The script's frame: `R` collects observations, `stage()` names the step in
# progress, and a daemon timer reports `hung_in` (the stage) once the budget
# is spent, then ends the process with os._exit (atexit hooks of a broken pool
# could hang the exit too). Uncaught exceptions of any thread are recorded.
_HEAD = """
import json, os, signal, sys, threading, time, traceback
import logging
import pykka
import structlog
from pooler_actors import (
    Acquire, AcquireTimeout, FactoryError, Pool, PoolClosedError, TooManyWaiters,
)

PARAMS = json.loads(sys.argv[1])
PARENT_PID = os.getpid()
# A shell that starts the suite in the background (`make test &`) makes
# SIGINT ignored, and the child inherits that: the scenarios that interrupt
# a caller with SIGINT want Python's own handler.
signal.signal(signal.SIGINT, signal.default_int_handler)
R = {"stage": "start"}
THREAD_ERRORS = []


def _thread_hook(args):
    name = args.thread.name if args.thread is not None else "?"
    THREAD_ERRORS.append(f"{name}: {args.exc_type.__name__}: {args.exc_value!r}")


threading.excepthook = _thread_hook
_emitted = threading.Lock()


def emit():
    if os.getpid() != PARENT_PID or not _emitted.acquire(blocking=False):
        return
    R["thread_errors"] = list(THREAD_ERRORS)
    sys.stdout.write("RESULT " + json.dumps(R, default=repr) + "\\n")
    sys.stdout.flush()
    os._exit(0)


def _bail():
    R["hung_in"] = R["stage"]
    emit()


_timer = threading.Timer(BUDGET, _bail)
_timer.daemon = True
_timer.start()


def stage(name):
    R["stage"] = name


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def answers_for(pool, seconds):
    # Liveness over a window: the pool answers stats() all along.
    end = time.monotonic() + seconds
    answers = 0
    while time.monotonic() < end:
        pool.stats()
        answers += 1
        time.sleep(0.02)
    return answers


def log_to_stderr(*processors):
    # Pool events at info and above go to stderr; stdout carries the result.
    structlog.configure(
        processors=[*processors, structlog.processors.KeyValueRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def pool_thread_names():
    return sorted(
        t.name for t in threading.enumerate()
        if t.name.startswith("pooler_actors:") and t.is_alive()
    )


class Res:
    def __init__(self, key):
        self.key = key
        self.pings = 0
        self.closes = 0

    def ping(self):
        self.pings += 1

    def close(self):
        self.closes += 1


log_to_stderr()
"""

_TAIL = """
try:
    main()
except BaseException as error:
    if os.getpid() != PARENT_PID:
        raise  # a forked child exits the normal way (atexit included)
    R["error"] = f"{type(error).__name__}: {error}"
    R["traceback"] = traceback.format_exc()
emit()
"""


def run_scenario(
    body: str, params: dict[str, Any] | None = None, *, budget: float = 15.0
) -> dict[str, Any]:
    """Run ``body`` (which defines ``main()``) in a fresh interpreter.

    Returns the script's observations ``R``; ``hung_in`` names the stage still
    running when the budget ran out.
    """
    code = f"BUDGET = {budget!r}\n" + _HEAD + textwrap.dedent(body) + _TAIL
    try:
        done = run_python("-c", code, json.dumps(params or {}), timeout=budget + 10)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the scenario outlived its own budget ({budget} s): {exc}")
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, (
        f"the scenario reported nothing (exit {done.returncode})\n"
        f"stdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-4000:]}"
    )
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    result["stderr_tail"] = done.stderr[-1500:]
    return result


def assert_ran_through(result: dict[str, Any]) -> None:
    """The scenario neither hung nor raised, and no thread died of an exception."""
    assert "hung_in" not in result, f"hung in stage {result['hung_in']!r}: {result}"
    assert "error" not in result, f"{result['error']}\n{result.get('traceback')}"
    assert result["thread_errors"] == [], f"a thread died: {result['thread_errors']}"


# --- in-process helpers ------------------------------------------------------


class Conn:
    """A resource whose health can be switched off and whose close can be held."""

    def __init__(self, key: Hashable, gen: int, close_gate: threading.Event | None):
        self.key = key
        self.gen = gen
        self.healthy = True
        self.closed = False
        self.close_started = threading.Event()
        self._close_gate = close_gate

    def ping(self) -> None:
        if not self.healthy:
            raise ConnectionError(f"{self!r} is broken")

    def close(self) -> None:
        self.close_started.set()
        if self._close_gate is not None:
            self._close_gate.wait(30)
        self.closed = True

    def __repr__(self) -> str:
        return f"Conn({self.key!r}, gen={self.gen})"


class ConnFactory:
    """Counts calls per key; a key's gate, when set, holds its factory calls."""

    def __init__(self) -> None:
        self.entered: list[Hashable] = []
        self.made: list[Conn] = []
        self.gates: dict[Hashable, threading.Event] = {}
        self.close_gate: threading.Event | None = None

    def __call__(self, key: Hashable) -> Conn:
        self.entered.append(key)
        gate = self.gates.get(key)
        if gate is not None:
            gate.wait(30)
        conn = Conn(key, sum(c.key == key for c in self.made), self.close_gate)
        self.made.append(conn)
        return conn


class Plain:
    """A weakly referenceable resource that does nothing."""

    def ping(self) -> None:
        pass

    def close(self) -> None:
        pass


class Broken(Plain):
    """A resource whose every ping fails."""

    def ping(self) -> None:
        raise ConnectionError("broken")


# --- 1. timeouts and options of any size --------------------------------------

# A huge deadline must not hurt the pool even while it is the only timer
# pending: the scenarios keep every other timer short (or off) and then let the
# pool sit idle for a while, answering stats() all along.
_HUGE_ACQUIRE_TIMEOUT = """
def main():
    timeout = float(PARAMS["timeout"])
    checks = PARAMS["health_checks"]
    pool = Pool(
        Res,
        max_open_resources=1,
        health_check_interval=0.05 if checks else None,
        create_timeout=None,
        ping_timeout=0.2,
        close_timeout=0.2,
    )

    def pinged(res):
        if not checks:
            return True
        seen = res.pings
        return wait_until(lambda: res.pings >= seen + 2)

    stage("acquire a")
    a = pool.acquire("a")
    R["pinged_a"] = pinged(a)
    got = {}

    def waiter():
        try:
            got["b"] = pool.acquire("b", timeout=timeout).key
        except BaseException as error:
            got["b"] = f"{type(error).__name__}: {error}"

    caller = threading.Thread(target=waiter, daemon=True)
    stage("acquire b with a huge timeout on a full pool")
    caller.start()
    R["queued"] = wait_until(lambda: pool.stats().wait_count == 1)
    stage("health checks while b waits")
    R["pinged_while_waiting"] = pinged(a)
    stage("release a")
    R["released"] = pool.release("a")
    stage("b granted")
    caller.join(10)
    R["b"] = got.get("b", "not answered")
    R["wait_count_after"] = pool.stats().wait_count
    stage("release b")
    pool.release("b")
    stage("idle with nothing open")
    R["idle_answers"] = answers_for(pool, 0.6)
    stage("acquire c with a huge timeout on a free slot")
    c = pool.acquire("c", timeout=timeout)
    R["c"] = c.key
    stage("health checks after")
    R["pinged_c"] = pinged(c)
    stage("close")
    started = time.monotonic()
    pool.close()
    R["close_s"] = time.monotonic() - started
    R["threads_left"] = pool_thread_names()
"""


@pytest.mark.timeout(30)
@pytest.mark.parametrize("health_checks", [False, True], ids=["no_checks", "checks"])
@pytest.mark.parametrize("timeout", ["inf", "1e10"])
def test_huge_acquire_timeout_waits_and_keeps_the_supervisor_alive(
    timeout: str, health_checks: bool
) -> None:
    """Defect 1: `acquire(key, timeout=inf|1e10)` on a full pool waits for a slot.

    SPEC 7: a timeout of any size never kills the supervisor or its timers;
    `inf` means no deadline. The caller is granted when another thread
    releases; the pool keeps answering while the huge deadline is the only
    one pending; health checks keep running at their normal interval while
    the caller waits and after; `close()` returns promptly, no thread left.
    """
    result = run_scenario(
        _HUGE_ACQUIRE_TIMEOUT, {"timeout": timeout, "health_checks": health_checks}
    )
    assert_ran_through(result)
    assert result["pinged_a"] and result["queued"]
    assert result["pinged_while_waiting"], "health checks stopped while b waited"
    assert result["released"] is True
    assert result["b"] == "b"
    assert result["wait_count_after"] == 0
    assert result["idle_answers"] > 0
    assert result["c"] == "c"
    assert result["pinged_c"], "health checks stopped after a huge timeout"
    assert result["close_s"] < 5
    assert result["threads_left"] == []


_HUGE_OPTION = """
def main():
    field = PARAMS["field"]
    # Every other timer short or off, so the huge one is soon the only one
    # (acquires without a timeout: their deadlines would be timers too).
    options = dict(
        health_check_interval=0.05,
        create_timeout=None,
        ping_timeout=0.2,
        close_timeout=0.2,
    )
    options[field] = float(PARAMS["value"])
    checks = field != "health_check_interval"
    stage("build")
    try:
        pool = Pool(Res, max_open_resources=2, **options)
    except (ValueError, TypeError) as error:
        R["rejected"] = f"{type(error).__name__}: {error}"
        return
    stage("acquire a")
    pool.acquire("a")
    stage("acquire b")
    b = pool.acquire("b")
    stage("release a")
    R["released"] = pool.release("a")
    stage("acquire c")
    c = pool.acquire("c")
    if checks:
        stage("health checks")
        R["pinged"] = wait_until(lambda: b.pings >= 2 and c.pings >= 2)
    stage("release all")
    pool.release_all()
    stage("idle with nothing open")
    R["idle_answers"] = answers_for(pool, 0.6)
    stage("acquire d")
    d = pool.acquire("d")
    if checks:
        stage("health checks after")
        R["pinged_d"] = wait_until(lambda: d.pings >= 2)
    stage("stats")
    R["open"] = pool.stats().open_resources
    stage("close")
    started = time.monotonic()
    pool.close()
    R["close_s"] = time.monotonic() - started
    R["threads_left"] = pool_thread_names()
"""

_HUGE_FIELDS = [
    "create_timeout",
    "close_timeout",
    "ping_timeout",
    "max_lifetime",
    "max_idle_time",
    "health_check_interval",
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("field", _HUGE_FIELDS)
def test_option_of_1e10_seconds_is_accepted_and_the_pool_works(field: str) -> None:
    """Defect 1: an option of 1e10 s (about 317 years) is a valid "practically never".

    SPEC 7: absurd option values never kill the supervisor or a timer. The
    pool is built, serves, releases, keeps answering while the huge timer is
    the only one pending, keeps its health checks running, and `close()`
    returns promptly with no pool thread left; no thread dies of an exception
    (the old ticker did, on `health_check_interval=1e10`).
    """
    result = run_scenario(_HUGE_OPTION, {"field": field, "value": "1e10"})
    assert "rejected" not in result, f"1e10 s must be accepted: {result['rejected']}"
    assert_ran_through(result)
    assert result["released"] is True
    if field != "health_check_interval":
        assert result["pinged"] and result["pinged_d"], "health checks stopped"
    assert result["idle_answers"] > 0
    assert result["open"] == 1
    assert result["close_s"] < 5
    assert result["threads_left"] == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize("field", _HUGE_FIELDS)
def test_option_of_infinite_seconds_is_never_or_rejected(field: str) -> None:
    """Defect 1: `float('inf')` options mean "never" or are rejected when built.

    SPEC 7: either is fine, but a rejection is a `ValueError` that names the
    field, and an accepted pool must never hang. (The old code rejects inf, so
    this guards the rewrite rather than reproducing a failure.)
    """
    result = run_scenario(_HUGE_OPTION, {"field": field, "value": "inf"})
    if "rejected" in result:
        assert result["rejected"].startswith("ValueError"), result["rejected"]
        assert field in result["rejected"]
        return
    assert_ran_through(result)
    assert result["released"] is True
    if field != "health_check_interval":
        assert result["pinged"] and result["pinged_d"], "health checks stopped"
    assert result["open"] == 1
    assert result["close_s"] < 5
    assert result["threads_left"] == []


# --- 2. refresh while the old resource is evicted ------------------------------


@pytest.mark.timeout(30)
def test_refresh_with_old_evicted_meanwhile_makes_one_replacement() -> None:
    """Defect 2: a refresh below the cap whose old resource a health check evicts.

    SPEC 7: the refresh still ends with exactly one factory call for the new
    resource and replies `True`; a caller acquiring the key meanwhile joins
    that creation (no second factory call) and gets the new resource.
    """
    factory = ConnFactory()
    with Pool(factory, max_open_resources=2, health_check_interval=0.05) as pool:
        old = pool.acquire("db")
        gate = factory.gates["db"] = threading.Event()
        try:
            refresh = pool.actor_ref.ask(Refresh("db"), block=False)
            wait_for(lambda: factory.entered.count("db") == 2)
            old.healthy = False  # the next health check evicts it
            wait_for(lambda: old.closed)
            caller = pool.actor_ref.ask(Acquire("db", timeout=10), block=False)
            pool.stats()  # the caller's Acquire has been handled by now
            assert factory.entered.count("db") == 2, "a second replacement started"
        finally:
            gate.set()
        assert refresh.get(timeout=10) is True
        new = caller.get(timeout=10)
        assert new is not old and new.gen == 1
        assert pool.acquire("db", timeout=5) is new
        assert factory.entered == ["db", "db"]


@pytest.mark.timeout(30)
def test_refresh_with_old_evicted_answers_a_queued_caller_when_new_opens() -> None:
    """Defect 2: a caller queued for the key is woken by the new resource.

    The old resource is evicted during the refresh and its close is slow, so
    the pool is at its cap and a caller of the key queues. SPEC 3/7: a queued
    caller whose key opens is answered at once, without a slot, so it gets
    the new resource while the old one is still closing (not a timeout).
    """
    factory = ConnFactory()
    close_gate = factory.close_gate = threading.Event()
    # The old one's close outlasts the caller's timeout: only the new resource
    # opening can answer the caller in time.
    with Pool(
        factory, max_open_resources=2, health_check_interval=0.05, close_timeout=20
    ) as pool:
        old = pool.acquire("db")
        gate = factory.gates["db"] = threading.Event()
        try:
            refresh = pool.actor_ref.ask(Refresh("db"), block=False)
            wait_for(lambda: factory.entered.count("db") == 2)
            old.healthy = False
            assert old.close_started.wait(10), "the health check did not evict it"
            caller = pool.actor_ref.ask(Acquire("db", timeout=3), block=False)
            pool.stats()  # the caller's Acquire has been handled by now
            gate.set()
            assert refresh.get(timeout=10) is True
            new = caller.get(timeout=10)  # AcquireTimeout: never woken
            assert new is not old and new.gen == 1
            assert not old.closed  # answered while the old one still closes
        finally:
            gate.set()
            close_gate.set()
        assert factory.entered == ["db", "db"]


# --- 3. KeyboardInterrupt while acquire waits ----------------------------------

_INTERRUPTED_ACQUIRE = """
def main():
    calls = []

    def factory(key):
        calls.append(key)
        return Res(key)

    pool = Pool(
        factory, max_open_resources=1, max_waiting=1, health_check_interval=None
    )
    stage("acquire a")
    pool.acquire("a")
    main_id = threading.main_thread().ident

    def interrupt():
        if wait_until(lambda: pool.stats().wait_count == 1):
            signal.pthread_kill(main_id, signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    stage("acquire b, interrupted")
    try:
        pool.acquire("b")
        R["b"] = "granted"
    except KeyboardInterrupt:
        R["b"] = "interrupted"
    stage("withdrawn")
    R["withdrawn"] = wait_until(lambda: pool.stats().wait_count == 0, 5)
    R["wait_count"] = pool.stats().wait_count
    got = {}

    def second():
        try:
            got["c"] = pool.acquire("c", timeout=10).key
        except BaseException as error:
            got["c"] = type(error).__name__

    stage("another caller queues")
    other = threading.Thread(target=second, daemon=True)
    other.start()
    R["c_queued"] = wait_until(lambda: pool.stats().wait_count == 1 or "c" in got, 5)
    R["c_early"] = got.get("c")
    stage("release a")
    pool.release("a")
    other.join(10)
    R["c"] = got.get("c", "not answered")
    stage("factory calls")
    # Had b not been withdrawn, it was ahead of c in the queue: its creation
    # would have taken the freed slot before c's.
    R["calls"] = list(calls)
    stage("close")
    pool.close()
"""


@pytest.mark.timeout(45)
def test_keyboard_interrupt_in_acquire_withdraws_the_caller() -> None:
    """Defect 3: a caller interrupted while it waits has given up.

    SPEC 7: it is withdrawn at once (`wait_count` back to 0, so another caller
    may queue despite `max_waiting=1`) and never granted: when the slot frees
    it goes to the other caller, and no factory runs for the interrupted key.
    """
    result = run_scenario(_INTERRUPTED_ACQUIRE, budget=25)
    assert_ran_through(result)
    assert result["b"] == "interrupted"
    assert result["withdrawn"], f"still queued: wait_count={result['wait_count']}"
    assert result["c_early"] is None, f"second caller: {result['c_early']}"
    assert result["c_queued"]
    assert result["c"] == "c"
    assert result["calls"] == ["a", "c"]


# --- 4. BaseException from factory, ping or close ------------------------------

_BASE_EXCEPTION = """
class Bystander(pykka.ThreadingActor):
    def on_receive(self, message):
        return "pong"


def main():
    where = PARAMS["where"]
    kind = {
        "KeyboardInterrupt": KeyboardInterrupt,
        "SystemExit": SystemExit,
        "GeneratorExit": GeneratorExit,
    }[PARAMS["kind"]]
    raised = []
    events = []

    def collect(_logger, _method, event_dict):
        events.append(repr(event_dict))
        return event_dict

    log_to_stderr(collect)

    class Bad(Res):
        def ping(self):
            if where == "ping":
                raised.append(kind("from ping"))
                raise raised[-1]

        def close(self):
            if where == "close":
                raised.append(kind("from close"))
                raise raised[-1]

    def factory(key):
        if key == "bad":
            if where == "factory":
                raised.append(kind("from factory"))
                raise raised[-1]
            return Bad(key)
        return Res(key)

    bystander = Bystander.start()
    other = Pool(Res, name="other", health_check_interval=None)
    pool = Pool(
        factory,
        name="hit",
        max_open_resources=1,
        health_check_interval=0.05 if where == "ping" else None,
        create_timeout=8,
    )
    stage("other pool serves")
    x = other.acquire("x", timeout=5)
    if where == "factory":
        stage("acquire bad")
        started = time.monotonic()
        try:
            pool.acquire("bad", timeout=None)
            R["outcome"] = "returned"
        except BaseException as error:
            R["outcome"] = type(error).__name__
            cause = error.__cause__
            R["cause"] = type(cause).__name__ if cause is not None else None
            R["cause_is_raised"] = bool(raised) and cause is raised[0]
        R["acquire_s"] = time.monotonic() - started
    elif where == "ping":
        stage("acquire bad")
        pool.acquire("bad", timeout=5)
        stage("evicted")
        R["evicted"] = wait_until(lambda: bool(raised) and not pool.contains("bad"))
    else:
        stage("acquire bad")
        pool.acquire("bad", timeout=5)
        stage("release bad")
        R["released"] = pool.release("bad")
        R["logged"] = wait_until(
            lambda: any("'bad'" in e and kind.__name__ in e for e in events), 5
        )
    stage("the pool still serves (its slot is free)")
    R["next"] = pool.acquire("next", timeout=5).key
    stage("the other pool still serves")
    R["other_same"] = other.acquire("x", timeout=5) is x
    R["other_new"] = other.acquire("y", timeout=5).key
    stage("bystander")
    R["bystander_alive"] = bystander.is_alive()
    R["bystander_answers"] = bystander.ask("ping", timeout=5)
    refs = pykka.ActorRegistry.get_all()
    R["registered"] = [
        name for name, ref in
        [("bystander", bystander), ("pool", pool.actor_ref), ("other", other.actor_ref)]
        if ref in refs
    ]
    stage("close")
    pool.close()
    other.close()
    bystander.stop(timeout=5)
"""

_KINDS = ["KeyboardInterrupt", "SystemExit", "GeneratorExit"]


def _assert_others_untouched(result: dict[str, Any]) -> None:
    assert result["next"] == "next"
    assert result["other_same"] is True and result["other_new"] == "y"
    assert result["bystander_alive"] is True
    assert result["bystander_answers"] == "pong"
    assert result["registered"] == ["bystander", "pool", "other"]


@pytest.mark.timeout(45)
@pytest.mark.parametrize("kind", _KINDS)
def test_base_exception_from_ping_evicts_only_that_resource(kind: str) -> None:
    """Defect 4: a `BaseException` from `ping()` is contained like an `Exception`.

    SPEC 7: the resource is evicted; the pool, another pool and an unrelated
    actor keep working (the old code ran `ActorRegistry.stop_all()`).
    """
    result = run_scenario(_BASE_EXCEPTION, {"where": "ping", "kind": kind}, budget=25)
    assert_ran_through(result)
    assert result["evicted"]
    _assert_others_untouched(result)


@pytest.mark.timeout(45)
@pytest.mark.parametrize("kind", _KINDS)
def test_base_exception_from_close_is_logged_and_frees_the_slot(kind: str) -> None:
    """Defect 4: a `BaseException` from `close()` is logged; the slot frees.

    SPEC 3/7: `release` replies, the pool (capped at 1) serves another key,
    and other pools and actors are untouched.
    """
    result = run_scenario(_BASE_EXCEPTION, {"where": "close", "kind": kind}, budget=25)
    assert_ran_through(result)
    assert result["released"] is True
    assert result["logged"], "no event about the failed close"
    _assert_others_untouched(result)


@pytest.mark.timeout(45)
@pytest.mark.parametrize("kind", _KINDS)
def test_base_exception_from_factory_is_the_factory_error_cause(kind: str) -> None:
    """Defect 4: a `BaseException` from the factory fails the caller at once.

    SPEC 7: the caller gets `FactoryError` whose `__cause__` is that very
    exception, not a `TimeoutError` after `create_timeout` (8 s here).
    """
    result = run_scenario(
        _BASE_EXCEPTION, {"where": "factory", "kind": kind}, budget=25
    )
    assert_ran_through(result)
    assert result["outcome"] == "FactoryError"
    assert result["cause"] == kind
    assert result["cause_is_raised"] is True
    _assert_others_untouched(result)


# --- 5. released, expired and evicted resources are not kept alive -------------

_CYCLES = 3000
_MAX_ALIVE = 20  # the last few may still be referenced by a finishing turn


def _alive_after_gc(refs: list[weakref.ref[Any]], limit: int) -> int:
    """How many of ``refs`` are alive, waiting up to 5 s for it to reach ``limit``."""
    deadline = time.monotonic() + 5
    while True:
        gc.collect()
        alive = sum(ref() is not None for ref in refs)
        if alive <= limit or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


@pytest.mark.timeout(40)
@pytest.mark.parametrize(
    "options",
    [{"max_lifetime": 1800.0}, {}],
    ids=["max_lifetime", "defaults"],
)
def test_released_resources_are_not_kept_alive(options: dict[str, Any]) -> None:
    """Defect 5: acquire/release cycles of distinct keys do not accumulate.

    SPEC 7: memory is proportional to what exists: a released resource is
    not held by a lifetime timer (`max_lifetime=1800`) or by the create
    timer (defaults).
    """
    refs: list[weakref.ref[Any]] = []
    with Pool(Plain, **options) as pool:
        for i in range(_CYCLES):
            res = pool.acquire(("k", i), timeout=5)
            refs.append(weakref.ref(res))
            del res
            assert pool.release(("k", i)) is True
        alive = _alive_after_gc(refs, _MAX_ALIVE)
        assert alive <= _MAX_ALIVE, f"{alive} of {_CYCLES} released resources alive"


@pytest.mark.timeout(40)
@pytest.mark.parametrize("how", ["expired", "evicted"])
def test_expired_and_evicted_resources_are_not_kept_alive(how: str) -> None:
    """Defect 5 (SPEC 7): resources closed by idle expiry or a health check are
    not held by the pool's timers or bookkeeping either."""
    count = 300
    if how == "expired":
        pool: Pool[str, Plain] = Pool(
            Plain,
            max_open_resources=count,
            max_idle_time=0.05,
            health_check_interval=None,
        )
    else:
        pool = Pool(Broken, max_open_resources=count, health_check_interval=0.05)
    refs: list[weakref.ref[Any]] = []
    with pool:
        for i in range(count):
            res = pool.acquire(("k", i), timeout=5)
            refs.append(weakref.ref(res))
            del res
        wait_for(lambda: pool.stats().open_resources == 0, timeout=15)
        alive = _alive_after_gc(refs, _MAX_ALIVE)
        assert alive <= _MAX_ALIVE, f"{alive} of {count} {how} resources alive"


# --- 6. os.fork() ---------------------------------------------------------------

_FORK = """
import select


def main():
    mode = PARAMS["mode"]
    marker = PARAMS["marker"]

    class Marked(Res):
        def close(self):
            with open(marker, "a") as out:
                out.write(f"{os.getpid()}\\n")

    pool = Pool(Marked, max_open_resources=3, health_check_interval=None)
    stage("acquire a")
    a = pool.acquire("a", timeout=5)
    pool.stats()  # quiescent: nothing in flight when we fork
    read_end, write_end = os.pipe()
    stage("fork")
    pid = os.fork()
    if pid == 0:
        os.close(read_end)

        def tell(report):
            os.write(write_end, (json.dumps(report) + "\\n").encode())

        if mode == "idle":
            sys.exit(0)  # never touches the pool; atexit hooks run
        if mode == "calls":
            report = {}
            calls = [
                ("acquire", lambda: pool.acquire("a", timeout=1)),
                ("stats", pool.stats),
                ("contains", lambda: pool.contains("a")),
                ("release", lambda: pool.release("a")),
            ]
            for name, call in calls:
                started = time.monotonic()
                try:
                    call()
                    report[name] = "returned"
                except BaseException as error:
                    closed = isinstance(error, PoolClosedError)
                    report[name] = "PoolClosedError" if closed else repr(error)
                report[name + "_s"] = time.monotonic() - started
                tell(report)
            os._exit(0)
        started = time.monotonic()
        pool.close()
        tell({"close": "returned", "close_s": time.monotonic() - started})
        sys.exit(0)
    os.close(write_end)
    stage("wait for the child")
    started = time.monotonic()
    buffer = b""
    status = None
    while time.monotonic() - started < 10:
        ready, _, _ = select.select([read_end], [], [], 0.05)
        if ready:
            buffer += os.read(read_end, 65536)
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            status = code
            break
    R["child_exit_s"] = time.monotonic() - started if status is not None else None
    if status is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    else:
        R["child_exit_code"] = os.waitstatus_to_exitcode(status)
    lines = [ln for ln in buffer.decode().splitlines() if ln.strip()]
    R["child_report"] = json.loads(lines[-1]) if lines else None
    stage("the parent still uses its resources")
    R["parent_same"] = pool.acquire("a", timeout=5) is a
    R["parent_new"] = pool.acquire("b", timeout=5).key

    def closes_by(who):
        if not os.path.exists(marker):
            return 0
        with open(marker) as src:
            return sum(line.strip() == str(who) for line in src)

    R["closes_by_child"] = closes_by(pid)
    stage("the parent releases")
    R["released"] = pool.release("a")
    R["closes_by_parent"] = closes_by(os.getpid())
    stage("close")
    pool.close()
"""


def _fork_scenario(mode: str, tmp_path: Path) -> dict[str, Any]:
    marker = str(tmp_path / "closes.txt")
    result = run_scenario(_FORK, {"mode": mode, "marker": marker}, budget=20)
    assert_ran_through(result)
    return result


def _assert_parent_untouched(result: dict[str, Any]) -> None:
    assert result["parent_same"] is True and result["parent_new"] == "b"
    assert result["closes_by_child"] == 0, "the child closed the parent's resources"
    assert result["released"] is True and result["closes_by_parent"] == 1


@pytest.mark.timeout(45)
def test_forked_child_that_ignores_the_pool_exits_promptly(tmp_path: Path) -> None:
    """Defect 6: a child that never touches an inherited pool exits at once.

    SPEC 7: the inherited pool is closed in the child, so its exit does not
    wait (the old atexit hook waited 30 s for a thread that does not exist in
    the child).
    """
    result = _fork_scenario("idle", tmp_path)
    assert result["child_exit_s"] is not None, "the child did not exit within 10 s"
    assert result["child_exit_s"] < 5
    assert result["child_exit_code"] == 0
    _assert_parent_untouched(result)


@pytest.mark.timeout(45)
def test_inherited_pool_raises_pool_closed_in_the_child(tmp_path: Path) -> None:
    """Defect 6: every call on an inherited pool raises `PoolClosedError` at once.

    SPEC 7: `acquire(timeout=1)`, `stats()`, `contains()` and `release()` in
    the child all raise `PoolClosedError` without waiting; the parent's pool
    and resources are unaffected.
    """
    result = _fork_scenario("calls", tmp_path)
    report = result["child_report"]
    assert report is not None, "the child's acquire never returned"
    for name in ("acquire", "stats", "contains", "release"):
        assert report.get(name) == "PoolClosedError", f"{name}: {report}"
        assert report[name + "_s"] < 5
    _assert_parent_untouched(result)


@pytest.mark.timeout(45)
def test_closing_an_inherited_pool_leaves_the_parents_resources(
    tmp_path: Path,
) -> None:
    """Defect 6: `close()` in the child returns at once and closes nothing.

    SPEC 7: the parent's resources are not touched by the child (no `close()`
    of theirs runs in the child); the parent keeps using them.
    """
    result = _fork_scenario("close", tmp_path)
    report = result["child_report"]
    assert report is not None, "the child's close() never returned"
    assert report["close"] == "returned" and report["close_s"] < 5
    assert result["child_exit_s"] is not None and result["child_exit_code"] == 0
    _assert_parent_untouched(result)


# --- 7. user code on the supervisor's thread ------------------------------------

_REENTRANT_PROCESSOR = """
def main():
    armed = threading.Event()
    probe = {}
    holder = {}

    def reenter(_logger, _method, event_dict):
        # Only the pool's own threads: an event emitted on the main thread
        # would legitimately be answered.
        if armed.is_set() and threading.current_thread() is not threading.main_thread():
            armed.clear()
            probe["event"] = event_dict.get("event")
            try:
                holder["pool"].stats()
                probe["outcome"] = "returned"
            except BaseException as error:
                probe["outcome"] = type(error).__name__
                probe["mro"] = [cls.__name__ for cls in type(error).__mro__]
        return event_dict

    log_to_stderr(reenter)
    pool = holder["pool"] = Pool(Res, health_check_interval=None)
    armed.set()
    stage("acquire a (its events reach the processor)")
    pool.acquire("a", timeout=5)
    stage("the processor's call")
    R["answered"] = wait_until(lambda: "outcome" in probe, 5)
    R["probe"] = probe
    stage("the pool still serves")
    R["b"] = pool.acquire("b", timeout=5).key
    R["open"] = pool.stats().open_resources
    stage("close")
    started = time.monotonic()
    pool.close()
    R["close_s"] = time.monotonic() - started
"""


@pytest.mark.timeout(45)
def test_structlog_processor_calling_back_into_the_pool_gets_an_error() -> None:
    """Defect 7: a processor (user code on the supervisor's thread) that calls
    `pool.stats()` gets a clear `RuntimeError` at once instead of a deadlock.

    SPEC 7: the pool then keeps serving and closes promptly.
    """
    result = run_scenario(_REENTRANT_PROCESSOR, budget=20)
    assert_ran_through(result)
    assert result["answered"]
    probe = result["probe"]
    assert "RuntimeError" in probe.get("mro", []), f"the call gave {probe}"
    assert result["b"] == "b" and result["open"] == 2
    assert result["close_s"] < 5


_BLOCKING_CALLBACK = """
def main():
    release_callback = threading.Event()
    release_factory = threading.Event()
    in_callback = threading.Event()

    def factory():
        release_factory.wait(10)
        return Res("a")

    def blocking(_future):
        in_callback.set()
        release_callback.wait(12)

    pool = Pool(factory, close_timeout=2, health_check_interval=None)
    future = pool.actor_ref.ask(Acquire("a"), block=False)
    future.add_done_callback(blocking)  # attached before the future settles
    release_factory.set()
    stage("the callback runs")
    R["callback_ran"] = in_callback.wait(10)
    stage("close")
    started = time.monotonic()
    pool.close()
    R["close_s"] = time.monotonic() - started
    stage("acquire after close")
    try:
        pool.acquire("b", timeout=1)
        R["after"] = "returned"
    except BaseException as error:
        R["after"] = type(error).__name__
    release_callback.set()
"""


@pytest.mark.timeout(45)
def test_blocking_done_callback_does_not_delay_close() -> None:
    """Defect 7: a done-callback that blocks, on an `ask(..., block=False)` future,
    does not make `close()` take longer than `close_timeout` (2 s) + 1 s.

    SPEC 7: `Pool.close()` returns within `close_timeout` in every case; the
    pool then answers `PoolClosedError`.
    """
    result = run_scenario(_BLOCKING_CALLBACK, budget=25)
    assert_ran_through(result)
    assert result["callback_ran"]
    assert result["close_s"] < 2 + 1, f"close() took {result['close_s']:.1f} s"
    assert result["after"] == "PoolClosedError"


# --- 8. no pool thread after close ----------------------------------------------


class SlowToMake(Plain):
    def __init__(self) -> None:
        time.sleep(0.01)


@pytest.mark.timeout(30)
def test_close_returns_with_no_pool_thread_left() -> None:
    """Defect 8: after `close()` no `pooler_actors:` thread is alive.

    Many slow factories queue work (the old executor's watchdog ran), and the
    pool is closed right after. SPEC 3/7: `close()` returns with no thread of
    the pool left (none is stuck in user code here).
    """
    count = 200
    pool = Pool(SlowToMake, max_open_resources=count, health_check_interval=None)
    pool.prewarm([f"k{i}" for i in range(count)])
    assert pool.stats().open_resources == count
    pool.close()
    left = [t.name for t in pool_threads()]
    assert left == [], f"alive after close(): {left}"


# --- 9. caller context variables named like logging parameters ------------------


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", ["event", "self"])
def test_context_var_named_like_a_log_parameter_keeps_pool_events(name: str) -> None:
    """Defect 9: a caller's `structlog` context variable `event` or `self` does
    not drop the pool's events about that caller.

    SPEC 4/7: the caller's variables travel as fields and the pool's own
    fields win: `pool.acquire.created` is logged with the pool's event name,
    pool and key (and the caller's other variables).
    """
    with (
        capture_logs() as logs,
        Pool(Plain, name="ctx", health_check_interval=None) as pool,
    ):
        with structlog.contextvars.bound_contextvars(
            **{name: "from-the-caller", "request_id": "r-1"}
        ):
            pool.acquire("a", timeout=5)

        def created() -> list[MutableMapping[str, Any]]:
            return [e for e in logs if e.get("event") == "pool.acquire.created"]

        deadline = time.monotonic() + 5
        while not created() and time.monotonic() < deadline:
            time.sleep(0.01)
        events = created()
        assert events, f"pool.acquire.created was dropped; got {logs}"
        assert events[0]["pool"] == "ctx"
        assert events[0]["key"] == "a"
        assert events[0]["request_id"] == "r-1"


# --- 10. hostile inputs: a string of keys, a class for a resource ----------------


@pytest.mark.timeout(20)
def test_prewarm_of_a_string_is_a_type_error_and_creates_nothing() -> None:
    """Defect 10: `prewarm("abc")` is a `TypeError` (a string is not a list of keys).

    The old code created keys `'a'`, `'b'`, `'c'`. Nothing may be created,
    whether the pool is asked through `Pool.prewarm` or a `Prewarm` message.
    """
    calls: list[Hashable] = []

    def factory(key: Hashable) -> Plain:
        calls.append(key)
        return Plain()

    with Pool(factory, health_check_interval=None) as pool:
        with pytest.raises(TypeError):
            pool.prewarm("abc")
        with pytest.raises(TypeError):
            pool.actor_ref.ask(Prewarm("abc"))
        assert pool.stats().open_resources == 0
        assert calls == []
        assert not any(pool.contains(k) for k in ("a", "b", "c", "abc"))


class ClassWithMethods:
    """A class (not an instance) has `close` and `ping` attributes."""

    def close(self) -> None:
        pass

    def ping(self) -> None:
        pass


@pytest.mark.timeout(20)
def test_factory_returning_a_class_is_a_factory_error() -> None:
    """Defect 10: a factory that returns a class is not `Reusable`.

    SPEC 3: the caller gets `FactoryError` with a `TypeError` cause, and
    nothing is kept.
    """

    def make() -> type[ClassWithMethods]:
        return ClassWithMethods

    with Pool(make, health_check_interval=None) as pool:
        with pytest.raises(FactoryError) as info:
            pool.acquire("a", timeout=5)
        assert isinstance(info.value.__cause__, TypeError)
        assert not pool.contains("a")
        wait_for(lambda: pool.stats().open_resources == 0, timeout=5)
        assert list(pool.all()) == []
