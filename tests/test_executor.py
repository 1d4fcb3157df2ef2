"""ExecutorActor: pykka actor semantics on a shared, growable worker pool."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import pykka
import pytest
from conftest import pool_threads, wait_for

from pooler_actors import Pool, _executor, _pykka
from pooler_actors._executor import Executor, ExecutorActor
from pooler_actors._future import PoolFuture


class Recorder(ExecutorActor):
    """Records its life; ``("block", event)`` blocks until the event is set."""

    def __init__(self, executor: Executor, log: list[Any]) -> None:
        super().__init__(executor=executor)
        self.log = log

    def on_start(self) -> None:
        self.log.append("start")

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, tuple) and message[0] == "block":
            message[1].wait(10)
            return "unblocked"
        if message == "boom":
            raise ValueError("boom")
        self.log.append(message)
        return message

    def on_stop(self) -> None:
        self.log.append("stop")

    def on_failure(self, *exc_info: Any) -> None:
        self.log.append(("failure", type(exc_info[1]).__name__))


@pytest.fixture
def executor() -> Iterator[Executor]:
    ex = Executor("test", max_workers=2, stuck_after=0.02, idle_timeout=0.05)
    yield ex
    pykka.ActorRegistry.stop_all(timeout=10)
    ex.shutdown(timeout=10)


def test_messages_run_in_order_between_on_start_and_on_stop(
    executor: Executor,
) -> None:
    log: list[Any] = []
    ref = Recorder.start(executor, log)
    for i in range(100):
        ref.tell(i)
    assert ref.ask("last") == "last"
    ref.stop()
    assert log == ["start", *range(100), "last", "stop"]


def test_ask_error_goes_to_the_caller_and_the_actor_lives_on(
    executor: Executor,
) -> None:
    ref = Recorder.start(executor, [])
    with pytest.raises(ValueError, match="boom"):
        ref.ask("boom")
    assert ref.ask("still here") == "still here"


def test_unhandled_error_in_tell_calls_on_failure_and_stops(
    executor: Executor,
) -> None:
    log: list[Any] = []
    ref = Recorder.start(executor, log)
    ref.tell("boom")
    wait_for(lambda: not ref.is_alive())
    assert log == ["start", ("failure", "ValueError")]


def test_asks_left_in_the_mailbox_at_stop_get_actor_dead_error(
    executor: Executor,
) -> None:
    gate = threading.Event()
    ref = Recorder.start(executor, [])
    blocked = ref.ask(("block", gate), block=False)
    stopping = ref.stop(block=False)
    left = ref.ask("too late", block=False)
    gate.set()
    assert blocked.get(timeout=10) == "unblocked"
    assert stopping.get(timeout=10) is True
    with pytest.raises(pykka.ActorDeadError):
        left.get(timeout=10)


def test_one_actor_never_runs_two_messages_at_once(executor: Executor) -> None:
    class Counter(ExecutorActor):
        def __init__(self) -> None:
            super().__init__(executor=executor)
            self.inside = 0
            self.most = 0
            self.seen: list[int] = []

        def on_receive(self, message: Any) -> Any:
            self.inside += 1
            self.most = max(self.most, self.inside)
            time.sleep(0)  # let another worker in, if one could run this actor
            self.seen.append(message)
            self.inside -= 1
            return self.most

    refs = [Counter.start() for _ in range(4)]
    # Senders from several threads, so turns get scheduled concurrently.
    senders = [
        threading.Thread(target=lambda r=ref: [r.tell(i) for i in range(300)])
        for ref in refs
        for _ in range(2)
    ]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    assert [ref.ask(-1) for ref in refs] == [1, 1, 1, 1]


def test_a_stuck_worker_does_not_starve_other_actors(executor: Executor) -> None:
    gates = [threading.Event() for _ in range(3)]
    stuck = [Recorder.start(executor, []) for _ in gates]
    futures = [
        ref.ask(("block", gate), block=False)
        for ref, gate in zip(stuck, gates, strict=True)
    ]
    # More blocked actors than max_workers: the executor grows past them.
    other = Recorder.start(executor, [])
    assert other.ask("served", timeout=10) == "served"
    for gate in gates:
        gate.set()
    for future in futures:
        assert future.get(timeout=10) == "unblocked"


def test_idle_actors_hold_no_thread(executor: Executor) -> None:
    refs = [Recorder.start(executor, []) for _ in range(50)]
    for ref in refs:
        ref.ask("hello")
    wait_for(lambda: executor.worker_count == 0)
    assert not pool_threads()
    assert all(ref.is_alive() for ref in refs)
    assert refs[0].ask("again") == "again"  # a worker is started on demand


def test_shutdown_retires_idle_workers_and_later_work_still_runs(
    executor: Executor,
) -> None:
    ref = Recorder.start(executor, [])
    ref.ask("warm")
    executor.shutdown(timeout=10)
    assert executor.worker_count == 0
    assert ref.ask("after shutdown", timeout=10) == "after shutdown"
    wait_for(lambda: executor.worker_count == 0)


def test_message_put_just_before_unschedule_is_not_stranded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A sender's put that lands after a turn's last look at the mailbox, just
    # before the turn ends, must still be handled (no lost wake-up).
    executor = Executor("race")
    seen: list[Any] = []

    class Echo(ExecutorActor):
        def __init__(self) -> None:
            super().__init__(executor=executor)

        def on_receive(self, message: Any) -> Any:
            seen.append(message)

    ref = Echo.start()
    inject: list[Any] = ["late"]
    original = _executor._Inbox.unschedule

    def racy(self: Any) -> bool:
        while inject:
            ref.tell(inject.pop())
        return original(self)

    monkeypatch.setattr(_executor._Inbox, "unschedule", racy)
    ref.tell("first")
    wait_for(lambda: seen == ["first", "late"], timeout=10)
    ref.stop()
    executor.shutdown(5)


def test_an_ended_actor_is_freed_without_the_collector(executor: Executor) -> None:
    # Its mailbox holds it while it lives, and lets go of it at its end: no
    # reference cycle is left for the garbage collector (2 per new key).
    gc.disable()
    try:
        ref = Recorder.start(executor, [])
        actor = weakref.ref(_pykka.actor_of(ref))
        assert ref.ask("alive") == "alive"
        ref.stop()
        wait_for(lambda: actor() is None)
    finally:
        gc.enable()
    # A message that gets past the ref's "is it alive?" check is answered.
    late: PoolFuture[Any] = PoolFuture()
    ref.actor_inbox.put(_pykka.Envelope("late", reply_to=late))
    with pytest.raises(pykka.ActorDeadError, match="Recorder"):
        late.get(timeout=10)
    stop: PoolFuture[Any] = PoolFuture()
    ref.actor_inbox.put(_pykka.Envelope(_pykka.stop_message(), reply_to=stop))
    assert stop.get(timeout=10) is None


class _Plain:
    def ping(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_new_key_acquired_and_released_leaves_no_garbage() -> None:
    # Every object of a new key's way (its actor, mailbox, reply futures,
    # messages, effects) is freed by its last reference, not by the collector.
    with Pool(lambda _key: _Plain(), health_check_interval=None) as pool:
        pool.acquire("warm")
        pool.release("warm")
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for i in range(50):
                pool.acquire(i)
                pool.release(i)
            pool.stats()  # the last actor's turn has ended by now
            time.sleep(0.05)
            gc.collect()
            ours = [
                type(o).__qualname__
                for o in gc.garbage
                if type(o).__module__.startswith(("pooler_actors", "pykka"))
            ]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert ours == []
