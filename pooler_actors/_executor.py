"""An actor type whose mailbox is drained by a shared, growable thread pool.

A `pykka.ThreadingActor` owns an OS thread for its whole life, so a pool
with 10,000 open resources holds 10,000 mostly idle threads: each costs memory,
starting one costs a thread start per new key, and thread handoffs everywhere
in the process slow down as idle threads pile up. `ExecutorActor` keeps
pykka's one-actor-one-mailbox semantics (``on_start`` first, messages one at a
time in order, ``on_stop`` or ``on_failure`` last, leftover asks answered with
``ActorDeadError``) but owns no thread: when its mailbox gets a message, the
actor is handed to an `Executor`, whose worker runs a turn of it and
moves on. An idle actor costs a few small objects.

The executor is sized for blocking user code: it keeps up to ``max_workers``
workers making progress, but a worker busy on one turn for longer than
``stuck_after`` seconds (a ``ping()`` that hangs) no longer counts, so queued
actors are never starved by stuck ones; a watchdog thread, alive only while
work is queued, adds workers past stuck ones. Idle workers retire after
``idle_timeout`` seconds, and all of them at once on `Executor.shutdown`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import threading
from collections import deque
from collections.abc import Callable
from time import monotonic, sleep
from typing import Any

import pykka

from pooler_actors import _pykka
from pooler_actors._future import PoolFuture
from pooler_actors._pykka import Envelope, is_stop, log_returned_exception

__all__ = ["Executor", "ExecutorActor"]

Task = Callable[[], None]

_yield: Callable[[], None] = getattr(os, "sched_yield", lambda: sleep(0))

#: Messages one actor handles per turn before letting other actors run.
_BATCH = 32


class _Worker:
    """One worker thread and its handoff slot."""

    __slots__ = ("busy_since", "task", "thread", "wake")

    def __init__(self, task: Task | None) -> None:
        self.task = task
        self.wake = threading.Lock()
        self.wake.acquire()  # released by whoever hands this worker a task
        self.busy_since: float | None = None
        self.thread: threading.Thread | None = None


class Executor:
    """A growable pool of daemon worker threads that runs submitted tasks.

    Args:
        name: used in worker thread names (``pooler_actors:<name>:worker-N``).
        max_workers: how many workers may make progress at once; workers busy
            on one task for longer than ``stuck_after`` do not count.
        stuck_after: seconds after which a busy worker is written off as stuck.
        idle_timeout: seconds an idle worker waits for work before retiring.
    """

    def __init__(
        self,
        name: str,
        *,
        max_workers: int = 16,
        stuck_after: float = 0.05,
        idle_timeout: float = 2.0,
    ) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers!r}")
        self.name = name
        self.max_workers = max_workers
        self.stuck_after = stuck_after
        self.idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []  # LIFO: the warmest worker is reused first
        self._workers: set[_Worker] = set()
        self._backlog: deque[Task] = deque()
        self._watchdog: threading.Thread | None = None
        self._closed = False
        self._numbers = itertools.count(1)

    def __repr__(self) -> str:
        return (
            f"<Executor {self.name!r} workers={len(self._workers)} "
            f"idle={len(self._idle)} queued={len(self._backlog)}>"
        )

    @property
    def worker_count(self) -> int:
        """How many worker threads exist (idle, busy or stuck)."""
        return len(self._workers)

    def submit(self, task: Task) -> None:
        """Run ``task`` on a worker: an idle one, a new one, or the next free."""
        with self._lock:
            if self._idle:
                worker = self._idle.pop()
                worker.task = task
                worker.wake.release()
                return
            if self._may_grow(monotonic()):
                self._spawn(task)
                return
            self._backlog.append(task)
            if self._watchdog is None:
                self._watchdog = threading.Thread(
                    target=self._watch,
                    name=f"pooler_actors:{self.name}:executor-watchdog",
                    daemon=True,
                )
                self._watchdog.start()

    def shutdown(self, timeout: float | None = None) -> None:
        """Retire idle workers now and busy ones once the backlog is empty.

        Waits up to ``timeout`` seconds for the workers to exit; a worker stuck
        in user code is left to exit when that code returns. Tasks submitted
        later still run, on workers that exit when they run out of work.
        """
        with self._lock:
            self._closed = True
            for worker in self._idle:
                worker.task = None
                worker.wake.release()
            self._idle.clear()
            workers = list(self._workers)
            watchdog = self._watchdog
        deadline = None if timeout is None else monotonic() + timeout
        if watchdog is not None and watchdog is not threading.current_thread():
            # It exits within one stuck_after period once closed.
            watchdog.join(
                None if deadline is None else max(0.0, deadline - monotonic())
            )
        for worker in workers:
            thread = worker.thread
            if thread is None or thread is threading.current_thread():
                continue
            remaining = None if deadline is None else max(0.0, deadline - monotonic())
            thread.join(remaining)

    # --- under self._lock ---------------------------------------------------

    def _may_grow(self, now: float) -> bool:
        if len(self._workers) < self.max_workers:
            return True
        limit = now - self.stuck_after
        progressing = sum(
            1
            for w in self._workers
            if w.busy_since is None or w.busy_since > limit  # idle or not stuck
        )
        return progressing < self.max_workers

    def _spawn(self, task: Task) -> None:
        worker = _Worker(task)
        worker.busy_since = monotonic()
        worker.thread = threading.Thread(
            target=self._work,
            args=(worker,),
            name=f"pooler_actors:{self.name}:worker-{next(self._numbers)}",
            daemon=True,
        )
        self._workers.add(worker)
        worker.thread.start()

    # --- threads ------------------------------------------------------------

    def _work(self, worker: _Worker) -> None:
        task = worker.task
        lock = self._lock
        while True:
            if task is None:  # told to exit
                with lock:
                    self._workers.discard(worker)
                return
            worker.busy_since = monotonic()
            try:
                task()
            except BaseException:  # pragma: no cover - tasks handle their errors
                with contextlib.suppress(Exception):
                    sys.excepthook(*sys.exc_info())
            task = None
            with lock:
                if self._backlog:
                    task = self._backlog.popleft()
                else:  # idle: the next submit hands this worker its task
                    worker.busy_since = None
                    if self._closed:
                        self._workers.discard(worker)
                        return
                    worker.task = None
                    self._idle.append(worker)
            if task is not None:
                # Work is queued, so other threads may be waiting for the GIL
                # (a caller's acquire, the supervisor): let them run first.
                _yield()
                continue
            got = worker.wake.acquire(timeout=self.idle_timeout)
            if not got:
                with lock:
                    if worker in self._idle:  # nobody picked it: retire
                        self._idle.remove(worker)
                        self._workers.discard(worker)
                        return
                # A submitter picked it just as it timed out; its task is set.
                worker.wake.acquire()
            task = worker.task

    def _watch(self) -> None:
        """While work is queued, add workers past those stuck in user code."""
        while True:
            sleep(self.stuck_after)
            with self._lock:
                if not self._backlog or self._closed:
                    self._watchdog = None
                    return
                now = monotonic()
                while self._backlog and self._may_grow(now):
                    self._spawn(self._backlog.popleft())


class _Inbox:
    """An actor's mailbox: a deque, plus the flag saying a turn is scheduled.

    It holds its actor (which holds it) while the actor lives: nothing else
    keeps an idle `ExecutorActor` alive. The actor's last turn lets go of it
    (`ended`), so an ended actor is freed as soon as it is dropped, not by the
    garbage collector; a message that comes later is answered at once.
    """

    __slots__ = ("_lock", "_scheduled", "abandoned", "actor", "ended_as", "messages")

    def __init__(self) -> None:
        self.messages: deque[Envelope[Any]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self.actor: ExecutorActor | None = None
        #: The actor's name once it ended (`actor` is then `None`).
        self.ended_as = ""
        #: Set when the actor is written off as stuck: asks are answered at once.
        self.abandoned = False

    def put(self, envelope: Envelope[Any], /) -> None:
        if self.abandoned and envelope.reply_to is not None:
            _answer_dead(envelope, self.actor or self.ended_as)
            return
        self.messages.append(envelope)
        self.schedule()

    def get(self) -> Envelope[Any]:
        return self.messages.popleft()

    def empty(self) -> bool:
        return not self.messages

    def schedule(self) -> None:
        """Make sure a turn of the actor runs (now or after the current one)."""
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        actor = self.actor
        if actor is None:  # it ended: no turn runs any more, answer here
            while True:
                while self.messages:
                    _answer_dead(self.messages.popleft(), self.ended_as)
                if self.unschedule():
                    return
        actor.executor.submit(actor.run_turn)

    def ended(self, actor: ExecutorActor) -> None:
        """`actor` ran its last turn: let go of it (see the class docstring)."""
        if self.actor is not None:
            self.ended_as = str(actor)
            self.actor = None

    def unschedule(self) -> bool:
        """End a turn; ``False`` if messages came meanwhile (run another)."""
        with self._lock:
            if self.messages:
                return False
            self._scheduled = False
            return True


class ExecutorActor(pykka.Actor):
    """A pykka actor run by an `Executor` instead of its own thread.

    Subclass it as you would ``ThreadingActor`` and pass ``executor=`` to
    its ``__init__`` (or set `executor` before the actor starts).
    """

    #: Never set: the actor has no thread of its own (``ThreadingActor`` parity).
    thread: threading.Thread | None = None

    #: The executor that runs this actor's turns; set before the actor starts.
    executor: Executor

    def __init__(
        self, *args: Any, executor: Executor | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        if executor is not None:
            self.executor = executor
        inbox = self.actor_inbox
        assert isinstance(inbox, _Inbox)
        inbox.actor = self
        self._started = False

    @staticmethod
    def _create_actor_inbox() -> _Inbox:
        return _Inbox()

    @staticmethod
    def _create_future() -> PoolFuture[Any]:
        return PoolFuture()

    def abandon(self) -> None:
        """Write the actor off as stuck in user code: answer asks at once.

        Messages already queued (a stop, say) still run if the stuck code ever
        returns; a later ``ask`` — such as ``ActorRegistry.stop_all()``'s stop —
        is answered immediately instead of waiting behind the stuck turn.
        """
        inbox = self.actor_inbox
        assert isinstance(inbox, _Inbox)
        inbox.abandoned = True

    def _start_actor_loop(self) -> None:
        inbox = self.actor_inbox
        assert isinstance(inbox, _Inbox)
        inbox.schedule()

    def run_turn(self) -> None:
        """One turn on a worker: start if new, then handle a batch of messages."""
        inbox = self.actor_inbox
        assert isinstance(inbox, _Inbox)
        stopped = self.actor_stopped
        while True:
            if not self._started:
                self._started = True
                _pykka.loop_setup(self)
            handled = 0
            while handled < _BATCH and not stopped.is_set() and inbox.messages:
                self._handle_envelope(inbox.get())
                handled += 1
            if stopped.is_set():
                # Answer what is left, and anything that lands later, with
                # ActorDeadError, as pykka's own teardown does.
                _pykka.loop_teardown(self)
                inbox.ended(self)
            if handled == _BATCH and inbox.messages and not stopped.is_set():
                # Yield to other actors: resubmit behind them.
                self.executor.submit(self.run_turn)
                return
            if inbox.unschedule():
                return

    def _handle_envelope(self, envelope: Envelope[Any]) -> None:
        # The body of pykka's ThreadingActor receive loop.
        try:
            response = _pykka.handle_receive(self, envelope.message)
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)
        except Exception:
            if envelope.reply_to is not None:
                log_returned_exception(self)
                envelope.reply_to.set_exception()
            else:
                _pykka.handle_failure(self, *sys.exc_info())
                try:
                    self.on_failure(*sys.exc_info())
                except Exception:
                    _pykka.handle_failure(self, *sys.exc_info())
        except BaseException:
            # pykka stops every actor of the process here; one actor's
            # KeyboardInterrupt must not take other pools down: it just fails.
            _pykka.handle_failure(self, *sys.exc_info())
            with contextlib.suppress(Exception):
                self.on_failure(*sys.exc_info())

    def _actor_loop_teardown(self) -> None:
        inbox = self.actor_inbox
        assert isinstance(inbox, _Inbox)
        messages = inbox.messages  # popped by this turn only: no race to empty
        while messages:
            _answer_dead(messages.popleft(), self)


def _answer_dead(envelope: Envelope[Any], actor: object) -> None:
    """Answer an ask the actor will not handle: a stop succeeds, others fail."""
    reply = envelope.reply_to
    if reply is None:
        return
    if is_stop(envelope.message):
        reply.set(None)
    else:
        reply.set_exception(
            exc_info=(
                pykka.ActorDeadError,
                pykka.ActorDeadError(f"{actor} stopped before handling the message"),
                None,
            )
        )
