"""Embedding a pool in an actor tree: an application actor owns a
``PoolSupervisor``, watches it, restarts it when it fails, and
``ActorRegistry.stop_all()`` shuts the whole tree down cleanly."""

from __future__ import annotations

import queue
from typing import Any

import pykka
import pytest
from conftest import wait_for
from resources import Crash, CrashingSupervisor, Factory

from pooler_actors import (
    Acquire,
    GetStats,
    PoolClosedError,
    PoolOptions,
    PoolRef,
    PoolStopped,
    PoolSupervisor,
    Unwatch,
    Watch,
)


class Recorder(pykka.ThreadingActor):
    """Records every message it is told; the test reads them from a queue."""

    def __init__(self) -> None:
        super().__init__()
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.seen: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        if message == "seen":
            return list(self.seen)
        self.seen.append(message)
        self.inbox.put(message)
        return None


def options(**fields: Any) -> PoolOptions:
    fields.setdefault("health_check_interval", None)
    return PoolOptions(**fields)


class App(pykka.ThreadingActor):
    """An application actor that owns a pool and restarts it when it fails."""

    def __init__(
        self,
        factory: Factory,
        events: queue.Queue[tuple[str, str]],
        supervisor: type[PoolSupervisor] = PoolSupervisor,
    ) -> None:
        super().__init__()
        self.factory = factory
        self.events = events
        self.supervisor = supervisor
        self.pool: PoolRef | None = None
        self.restarts = 0

    def _start_pool(self) -> None:
        opts = options(max_open_resources=2, name=f"app-pool-{self.restarts}")
        self.pool = self.supervisor.start(self.factory, opts)  # type: ignore[assignment]
        assert self.pool is not None
        self.pool.tell(Watch(self.actor_ref))

    def on_start(self) -> None:
        self._start_pool()

    def on_stop(self) -> None:
        assert self.pool is not None
        self.pool.stop()
        self.events.put(("app_stopped", ""))

    def on_receive(self, message: Any) -> Any:
        assert self.pool is not None
        match message:
            case PoolStopped(name=name, reason=reason):
                if name != self.pool.pool_name:
                    return None  # news about a pool replaced earlier
                self.events.put(("pool_stopped", reason))
                if reason.startswith("failed"):
                    self.restarts += 1
                    self._start_pool()
                    self.events.put(("restarted", self.pool.pool_name))
            case ("get", key):
                return self.pool.ask(Acquire(key, timeout=10))
            case "crash":
                self.pool.tell(Crash())
            case "pool":
                return self.pool
        return None


def next_event(events: queue.Queue[tuple[str, str]]) -> tuple[str, str]:
    return events.get(timeout=10)


# --- the supervisor's side ---------------------------------------------------


def test_watcher_is_told_when_the_pool_closes() -> None:
    recorder = Recorder.start()
    pool = PoolSupervisor.start(Factory(), options(name="watched"))
    pool.tell(Watch(recorder))
    pool.stop()
    inbox = recorder.proxy().inbox.get()
    assert inbox.get(timeout=10) == PoolStopped("watched", "closed")


def test_unwatch_stops_the_notices() -> None:
    gone = Recorder.start()
    stays = Recorder.start()
    pool = PoolSupervisor.start(Factory(), options(name="p"))
    pool.tell(Watch(gone))
    pool.tell(Watch(stays))
    pool.tell(Watch(stays))  # watching twice still tells once
    pool.tell(Unwatch(gone))
    pool.stop()
    assert stays.proxy().inbox.get().get(timeout=10) == PoolStopped("p", "closed")
    # ``gone`` would have been told before ``stays``; asking flushes its inbox.
    assert gone.ask("seen") == []
    assert stays.ask("seen") == [PoolStopped("p", "closed")]


def test_error_in_an_asked_handler_goes_to_the_caller_only() -> None:
    factory = Factory()
    pool = CrashingSupervisor.start(factory, options())
    with pytest.raises(RuntimeError, match="a bug"):
        pool.ask(Crash())
    assert pool.is_alive()
    assert pool.ask(Acquire("a")).key == "a"
    pool.stop()


def test_failed_supervisor_closes_resources_fails_waiters_and_tells_watchers() -> None:
    factory = Factory()
    recorder = Recorder.start()
    pool = CrashingSupervisor.start(factory, options(max_open_resources=1, name="f"))
    pool.tell(Watch(recorder))
    held = pool.ask(Acquire("held"))
    waiting = pool.ask(Acquire("queued"), block=False)
    wait_for(lambda: pool.ask(GetStats()).wait_count == 1)

    pool.tell(Crash())  # told, not asked: the supervisor fails

    with pytest.raises(PoolClosedError):
        waiting.get(timeout=10)
    notice = recorder.proxy().inbox.get().get(timeout=10)
    assert notice.name == "f"
    assert notice.reason.startswith("failed: ")
    assert "a bug in the supervisor" in notice.reason
    assert held.closes == 1
    assert [r.key for r in factory.made] == ["held"]
    wait_for(lambda: not pool.is_alive())
    with pytest.raises(PoolClosedError):
        pool.ask(Acquire("after"))


# --- an application actor that owns its pool ---------------------------------


def test_app_actor_asks_its_pool_and_stops_it_on_stop() -> None:
    factory = Factory()
    events: queue.Queue[tuple[str, str]] = queue.Queue()
    app = App.start(factory, events)
    res = app.ask(("get", "a"))
    assert res.key == "a"
    assert app.ask(("get", "a")) is res
    pool = app.ask("pool")
    app.stop()
    assert next_event(events) == ("app_stopped", "")
    assert not pool.is_alive()
    assert res.closes == 1


def test_app_actor_restarts_its_pool_after_a_failure() -> None:
    factory = Factory()
    events: queue.Queue[tuple[str, str]] = queue.Queue()
    app = App.start(factory, events, CrashingSupervisor)
    first = app.ask(("get", "a"))
    old_pool = app.ask("pool")

    app.tell("crash")

    kind, reason = next_event(events)
    assert kind == "pool_stopped"
    assert reason.startswith("failed: ")
    assert next_event(events) == ("restarted", "app-pool-1")
    assert not old_pool.is_alive()
    assert first.closes == 1
    # The app survived and serves from the new pool.
    second = app.ask(("get", "a"))
    assert second is not first
    assert app.ask("pool").pool_name == "app-pool-1"
    app.stop()
    assert next_event(events) == ("app_stopped", "")
    assert second.closes == 1


def test_stop_all_shuts_the_whole_tree_down_once() -> None:
    factory = Factory()
    events: queue.Queue[tuple[str, str]] = queue.Queue()
    app = App.start(factory, events)
    for key in ("a", "b"):
        app.ask(("get", key))
    pool = app.ask("pool")
    other = PoolSupervisor.start(factory, options(name="standalone"))
    other.ask(Acquire("c"))

    pykka.ActorRegistry.stop_all()

    assert pykka.ActorRegistry.get_all() == []
    assert not pool.is_alive()
    assert not other.is_alive()
    assert sorted(r.key for r in factory.made) == ["a", "b", "c"]
    assert [r.closes for r in factory.made] == [1, 1, 1]
    # The pool was closed, not failed: the app saw it and did not restart it.
    seen = []
    while not events.empty():
        seen.append(events.get_nowait())
    assert ("app_stopped", "") in seen
    assert all(kind != "restarted" for kind, _ in seen)
