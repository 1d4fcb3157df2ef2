"""The pool supervisor: the one actor that owns the pool's state.

Only the supervisor's own thread reads or writes the key map, the capacity
count and the wait queue; everything reaches it as a message. It never runs
user code: factories, pings and closes run in each resource's own actor.

Replies are deferred where they must wait (a queued ``Acquire``, a ``Release``
waiting for its close): the supervisor runs its own receive loop (pykka's
``_start_actor_loop`` hook), so a handler sees the reply future and may keep
it instead of answering at once. The same loop waits on its mailbox with a
timeout equal to the nearest deadline, which drives acquire deadlines, ping
and close timeouts, and lifetime and idle expiry without any extra thread.
"""

from __future__ import annotations

import atexit
import contextlib
import heapq
import inspect
import itertools
import queue
import random
import sys
import threading
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from enum import Enum
from time import monotonic
from typing import Any, cast

import pykka
from pykka._envelope import Envelope

from pooler_actors._events import Events
from pooler_actors._executor import Executor
from pooler_actors._future import PoolFuture
from pooler_actors._messages import (
    Closed,
    Failed,
    HealthTick,
    Ping,
    PingResult,
    Ready,
    Withdraw,
)
from pooler_actors.errors import (
    AcquireTimeout,
    FactoryError,
    PoolClosedError,
    TooManyWaiters,
)
from pooler_actors.messages import (
    Acquire,
    Contains,
    GetStats,
    ListResources,
    PoolStopped,
    Prewarm,
    Refresh,
    Release,
    ReleaseAll,
    Unwatch,
    Watch,
)
from pooler_actors.options import PoolOptions
from pooler_actors.resource import BaseResourceActor, ResourceActor
from pooler_actors.stats import COUNTERS, Stats

__all__ = ["PoolRef", "PoolSupervisor"]

_DEFERRED: Any = object()  # a handler's "I keep the reply future" answer


class _State(Enum):
    CREATING = "creating"
    OPEN = "open"
    CLOSING = "closing"


@dataclass(eq=False)
class _Waiter:
    """A caller of ``Acquire`` not answered at once."""

    key: Hashable
    future: PoolFuture[Any]
    start: float
    deadline: float | None
    timeout: float | None
    context: dict[str, Any]
    queued: bool = False  # waited for a slot (counted in wait_count/wait_duration)
    wid: int = 0
    res: _Res | None = None  # the creation it joined, if any


@dataclass(eq=False)
class _Res:
    """One resource that exists (counts toward the cap) and its actor."""

    rid: int
    key: Hashable
    actor: BaseResourceActor
    state: _State = _State.CREATING
    resource: Any = None
    created_at: float = 0.0
    last_used: float = 0.0
    joiners: list[_Waiter] = field(default_factory=list)
    # Called with (res, ok) when the creation ends (prewarm, refresh).
    on_created: list[Callable[[_Res, bool], None]] = field(default_factory=list)
    close_replies: list[PoolFuture[Any]] = field(default_factory=list)
    close_reason: str = ""
    ping_seq: int | None = None
    context: dict[str, Any] = field(default_factory=dict)  # the creating caller's


@dataclass(eq=False)
class _Sweep:
    """One health check in progress."""

    seq: int
    started: float
    outstanding: set[int]
    pinged: int
    evicted: int = 0
    unsent: list[_Res] = field(default_factory=list)  # not pinged yet


@dataclass(frozen=True, slots=True)
class _PingMore:
    """Supervisor → itself: tell the next chunk of ``sweep``'s pings."""

    sweep: _Sweep


#: Pings told per supervisor message during a sweep (see ``_ping_some``).
_PING_CHUNK = 64


@dataclass(eq=False)
class _ReleaseAllJob:
    reply: PoolFuture[Any] | None
    rids: set[int]


class PoolRef(pykka.ActorRef["PoolSupervisor"]):
    """The supervisor's ``ActorRef``.

    Behaves as pykka's, with two additions: an ``ask(..., timeout=t)`` that
    gives up withdraws the caller (it is never granted a slot afterwards), and
    a stopped pool answers with :class:`PoolClosedError`.
    """

    pool_name: str
    #: The supervisor's thread, joined by ``Pool.close()`` so that no thread of
    #: the pool is left when it returns.
    thread: threading.Thread | None = None

    def join(self, timeout: float | None = None) -> None:
        """Wait for the supervisor's thread to end (after a stop)."""
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def ask(
        self, message: Any, *, block: bool = True, timeout: float | None = None
    ) -> Any:
        future: PoolFuture[Any] = PoolFuture()
        future.owner = self
        mailbox = cast(_Mailbox, self.actor_inbox)
        mailbox.put(Envelope(message, reply_to=future))
        if not block:
            return future
        try:
            return future.get(timeout=timeout)
        except pykka.Timeout:
            if future.withdraw(pykka.Timeout(f"{timeout} seconds")):
                raise
            return future.get(timeout=0)  # settled just before we gave up

    def tell(self, message: Any) -> None:
        if not self.is_alive():
            raise PoolClosedError(self.pool_name)
        self.actor_inbox.put(Envelope(message))


class _Mailbox(queue.SimpleQueue[Envelope[Any]]):
    """The supervisor's inbox. Once closed, anything put in is failed at once.

    This closes pykka's window between an ask's "is it alive?" check and its
    ``put``: a message that lands after the supervisor drained its inbox is
    answered with ``PoolClosedError`` by the sender itself, so nobody hangs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.closed_as: str | None = None  # the pool's name once closed

    def put(
        self, item: Envelope[Any], block: bool = True, timeout: float | None = None
    ) -> None:
        super().put(item)
        if self.closed_as is not None:
            self.drain()

    def drain(self) -> None:
        assert self.closed_as is not None
        while True:
            try:
                envelope = self.get_nowait()
            except queue.Empty:
                return
            reply = envelope.reply_to
            if reply is None:
                continue
            if isinstance(reply, PoolFuture):
                if isinstance(envelope.message, pykka.messages._ActorStop):
                    reply.try_set(None)
                else:
                    reply.try_fail(PoolClosedError(self.closed_as))
            else:  # pragma: no cover - only our own futures are ever used
                reply.set_exception(
                    (PoolClosedError, PoolClosedError(self.closed_as), None)
                )


def _takes_key(factory: Callable[..., Any]) -> bool:
    """Whether ``factory`` has a required positional parameter (gets the key)."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return False
    return any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        for p in signature.parameters.values()
    )


_live_pools: weakref.WeakSet[PoolRef] = weakref.WeakSet()


@atexit.register
def _close_forgotten_pools() -> None:
    """Close, at interpreter exit, every pool the program forgot to close."""
    for ref in list(_live_pools):
        with contextlib.suppress(Exception):
            ref.stop(block=True, timeout=30)


class PoolSupervisor(pykka.ThreadingActor):
    """Owns a keyed pool: the key map, the cap and the FIFO of waiting callers.

    Start it with ``PoolSupervisor.start(factory, options)``; the returned
    :class:`PoolRef` answers the messages of :mod:`pooler_actors.messages`.
    """

    use_daemon_thread = True

    #: The actor type of each resource (the benchmark swaps in the thread one).
    resource_actor_type: type[BaseResourceActor] = ResourceActor

    def __init__(
        self,
        factory: Callable[..., Any],
        options: PoolOptions | None = None,
        *,
        logger: Any = None,
    ) -> None:
        if not callable(factory):
            raise TypeError(f"factory must be callable, got {factory!r}")
        if options is None:
            options = PoolOptions()
        elif not isinstance(options, PoolOptions):
            raise TypeError(f"options must be a PoolOptions, got {options!r}")
        super().__init__()
        ref = PoolRef(self)
        ref.pool_name = options.name
        self._actor_ref = ref
        self.options = options
        self.name = options.name
        self._factory = factory
        self._pass_key = _takes_key(factory)
        self._ev = Events(options.name, logger)
        self._cap = options.max_open_resources

        self._entries: dict[Hashable, _Res] = {}  # key -> its resource, creation order
        self._live: dict[int, _Res] = {}  # rid -> every resource that counts toward cap
        self._queue: dict[int, _Waiter] = {}  # FIFO of callers waiting for a slot
        self._timers: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count(1)
        self._sweep: _Sweep | None = None
        self._release_jobs: list[_ReleaseAllJob] = []
        # Keys being refreshed at the cap: key -> the old resource now closing.
        self._refreshing: dict[Hashable, _Res] = {}
        self._watchers: list[pykka.ActorRef[Any]] = []
        self._closing = False
        self._ticker: _Ticker | None = None
        self._thread: threading.Thread | None = None
        # Runs the resource actors' turns (factory, ping, close) when they
        # are ExecutorActors; it starts no thread until a resource needs one.
        self._executor = Executor(options.name)

        self._n: dict[str, int] = dict.fromkeys(
            (name for name in COUNTERS if name != "wait_duration"), 0
        )
        self._wait_duration = 0.0
        self._max_wait = 0.0

        self._handlers: dict[type, Callable[[Any, PoolFuture[Any] | None], Any]] = {
            Acquire: self._on_acquire,
            Release: self._on_release,
            ReleaseAll: self._on_release_all,
            Contains: self._on_contains,
            GetStats: self._on_get_stats,
            ListResources: self._on_list,
            Prewarm: self._on_prewarm,
            Refresh: self._on_refresh,
            Watch: self._on_watch,
            Unwatch: self._on_unwatch,
            Ready: self._on_ready,
            Failed: self._on_failed,
            Closed: self._on_closed,
            PingResult: self._on_ping_result,
            HealthTick: self._on_health_tick,
            Withdraw: self._on_withdraw,
            _PingMore: self._on_ping_more,
        }

    def __repr__(self) -> str:
        return f"<PoolSupervisor {self.name!r}>"

    # --- the actor runtime ------------------------------------------------

    @staticmethod
    def _create_actor_inbox() -> _Mailbox:
        return _Mailbox()

    @staticmethod
    def _create_future() -> PoolFuture[Any]:
        return PoolFuture()

    def _start_actor_loop(self) -> None:
        _live_pools.add(cast(PoolRef, self.actor_ref))
        self._thread = threading.Thread(
            target=self._actor_loop,
            name=f"pooler_actors:{self.name}:supervisor",
            daemon=True,
        )
        cast(PoolRef, self.actor_ref).thread = self._thread
        self._thread.start()

    def _actor_loop_running(self) -> None:
        """Receive messages until stopped, firing due timers in between."""
        inbox = cast(_Mailbox, self.actor_inbox)
        timers = self._timers
        stopped = self.actor_stopped
        while not stopped.is_set():
            if timers:
                delay = timers[0][0] - monotonic()
                if delay <= 0:
                    self._fire_timers()
                    continue
                try:
                    envelope = inbox.get(timeout=delay)
                except queue.Empty:
                    continue
            else:
                envelope = inbox.get()
            self._dispatch(envelope)

    def _dispatch(self, envelope: Envelope[Any]) -> None:
        message = envelope.message
        reply = cast(PoolFuture[Any] | None, envelope.reply_to)
        try:
            handler = self._handlers.get(type(message))
            if handler is None:
                result = self._handle_receive(message)  # stop, proxy calls
            else:
                result = handler(message, reply)
                if result is _DEFERRED:
                    return
            if reply is not None:
                reply.try_set(result)
        except Exception as error:
            if reply is not None:
                reply.try_fail(error)
            else:
                self._handle_failure(*sys.exc_info())
                self.on_failure(*sys.exc_info())
        except BaseException:
            self._stop()
            pykka.ActorRegistry.stop_all()

    def _actor_loop_teardown(self) -> None:
        inbox = cast(_Mailbox, self.actor_inbox)
        inbox.closed_as = self.name
        inbox.drain()

    # --- timers -----------------------------------------------------------

    def _at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._timers, (when, next(self._seq), fn, args))

    def _fire_timers(self) -> None:
        """Run due timers; an exception is a supervisor failure, as in a handler."""
        try:
            self._run_due_timers()
        except Exception:
            self._handle_failure(*sys.exc_info())
            self.on_failure(*sys.exc_info())
        except BaseException:
            self._stop()
            pykka.ActorRegistry.stop_all()

    def _run_due_timers(self) -> None:
        now = monotonic()
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, fn, args = heapq.heappop(timers)
            fn(*args)

    # --- lifecycle --------------------------------------------------------

    def on_start(self) -> None:
        interval = self.options.health_check_interval
        if interval is not None:
            self._ticker = _Ticker(cast(PoolRef, self.actor_ref), interval, self.name)
            self._ticker.start()
        self._ev.info(
            "pool.started",
            max_open_resources=self._cap,
            health_check_interval=interval,
        )

    def on_stop(self) -> None:
        self._shutdown("closed")

    def on_failure(self, *exc_info: Any) -> None:
        self._shutdown(f"failed: {exc_info[1]!r}")

    def _shutdown(self, reason: str) -> None:
        """Fail waiters, close every resource, stop every actor, tell watchers."""
        if self._closing:
            return
        self._closing = True
        # Messages that arrive from now on are failed by the mailbox itself.
        cast(_Mailbox, self.actor_inbox).closed_as = self.name
        if self._ticker is not None:
            self._ticker.cancel()
        closed = PoolClosedError(self.name)
        for waiter in list(self._queue.values()):
            self._finish(waiter, error=closed)
        self._queue.clear()
        for res in self._live.values():
            for waiter in res.joiners:
                self._finish(waiter, error=closed)
            res.joiners.clear()
            for callback in res.on_created:
                callback(res, False)
            res.on_created.clear()
            _stop_actor(res)
        deadline = monotonic() + self.options.close_timeout
        for res in list(self._live.values()):
            remaining = deadline - monotonic()
            if not res.actor.finished.wait(max(0.0, remaining)):
                self._abandon(
                    res,
                    "close did not return at pool close",
                    close_timeout=self.options.close_timeout,
                )
                continue
            thread = res.actor.thread
            if thread is not None:
                thread.join(max(0.0, deadline - monotonic()))
        # Idle workers exit now; those stuck in an abandoned close stay.
        self._executor.shutdown(max(0.0, deadline - monotonic()))
        for res in self._live.values():
            for reply in res.close_replies:
                reply.try_set(True)
        self._live.clear()
        self._entries.clear()
        for job in self._release_jobs:
            if job.reply is not None:
                job.reply.try_set(None)
        self._release_jobs.clear()
        if self._ticker is not None:
            self._ticker.join(self.options.close_timeout)
        for watcher in self._watchers:
            with contextlib.suppress(pykka.ActorDeadError):
                watcher.tell(PoolStopped(self.name, reason))
        self._ev.info("pool.closed", reason=reason)

    # --- acquire ----------------------------------------------------------

    def _on_acquire(self, msg: Acquire, reply: PoolFuture[Any] | None) -> Any:
        self._n["acquires"] += 1
        res = self._entries.get(msg.key)
        if res is not None and res.state is _State.OPEN:
            # The hot path: an open key is answered at once.
            self._n["hits"] += 1
            res.last_used = monotonic()
            self._ev.debug("pool.acquire.hit", msg.key, msg.context)
            return res.resource
        if self._closing:
            raise PoolClosedError(self.name)
        if reply is not None and not reply.pending:
            # The caller gave up before this message was read: it must not get
            # a creation or a place in the queue (its Withdraw finds nothing).
            self._n["timeouts"] += 1
            return _DEFERRED
        now = monotonic()
        timeout = msg.timeout
        waiter = _Waiter(
            key=msg.key,
            future=reply if reply is not None else PoolFuture(),
            start=now,
            # timeout=0 never queues, but a creation it starts or joins is awaited.
            deadline=now + timeout if timeout else None,
            timeout=timeout,
            context=msg.context,
        )
        waiter.future.waiter = waiter
        if res is not None:  # being created: join it
            self._n["joins"] += 1
            self._join(res, waiter)
            self._ev.debug("pool.acquire.joined", msg.key, msg.context)
            return _DEFERRED
        if len(self._live) < self._cap:
            self._join(self._create(msg.key, msg.context), waiter)
            return _DEFERRED
        if timeout == 0:
            self._n["timeouts"] += 1
            self._ev.warning(
                "pool.acquire.timeout", msg.key, msg.context, timeout=0, wait_s=0.0
            )
            raise AcquireTimeout(msg.key, 0)
        limit = self.options.max_waiting
        if limit is not None and len(self._queue) >= limit:
            self._n["rejected"] += 1
            self._ev.warning(
                "pool.acquire.rejected", msg.key, msg.context, max_waiting=limit
            )
            raise TooManyWaiters(msg.key, limit)
        self._n["waits"] += 1
        waiter.queued = True
        waiter.wid = next(self._seq)
        self._queue[waiter.wid] = waiter
        if waiter.deadline is not None:
            self._at(waiter.deadline, self._on_deadline, waiter)
        self._ev.debug(
            "pool.acquire.queued", msg.key, msg.context, waiting=len(self._queue)
        )
        return _DEFERRED

    def _join(self, res: _Res, waiter: _Waiter) -> None:
        res.joiners.append(waiter)
        waiter.res = res
        if waiter.deadline is not None and not waiter.queued:
            self._at(waiter.deadline, self._on_deadline, waiter)

    def _create(self, key: Hashable, context: dict[str, Any] | None = None) -> _Res:
        """Start a resource actor for ``key``; it takes a slot at once."""
        rid = next(self._seq)
        actor = self.resource_actor_type(
            cast(PoolRef, self.actor_ref),
            rid,
            key,
            self._factory,
            self._pass_key,
            pool_name=self.name,
            executor=self._executor,
        )
        res = _Res(
            rid=rid, key=key, actor=actor, created_at=monotonic(), context=context or {}
        )
        self._entries[key] = res
        self._live[rid] = res
        _register_before(actor.actor_ref, self.actor_ref)
        actor._start_actor_loop()
        timeout = self.options.create_timeout
        if timeout is not None:
            self._at(res.created_at + timeout, self._on_create_timeout, res)
        self._ev.debug("pool.resource.creating", key, context)
        # Callers queued for the same key join this creation instead of waiting
        # for a slot: a queued caller whose key opens takes no slot (SPEC 3).
        if self._queue:
            for waiter in [w for w in self._queue.values() if w.key == key]:
                del self._queue[waiter.wid]
                self._join(res, waiter)
        return res

    def _finish(
        self,
        waiter: _Waiter,
        value: Any = None,
        error: BaseException | None = None,
    ) -> bool:
        """Answer one waiter; ``False`` if its caller already gave up."""
        future = waiter.future
        ok = future.try_fail(error) if error is not None else future.try_set(value)
        if waiter.queued and ok:  # one that gave up is counted in _on_withdraw
            waited = monotonic() - waiter.start
            self._wait_duration += waited
            self._max_wait = max(self._max_wait, waited)
            if error is None:
                self._ev.debug(
                    "pool.acquire.granted", waiter.key, waiter.context, wait_s=waited
                )
        return ok

    def _on_deadline(self, waiter: _Waiter) -> None:
        if not waiter.future.pending:
            return
        self._unqueue(waiter)
        self._n["timeouts"] += 1
        self._finish(waiter, error=AcquireTimeout(waiter.key, waiter.timeout))
        self._ev.warning(
            "pool.acquire.timeout",
            waiter.key,
            waiter.context,
            timeout=waiter.timeout,
            wait_s=monotonic() - waiter.start,
        )

    def _on_withdraw(self, msg: Withdraw, _reply: object) -> None:
        waiter = getattr(msg.future, "waiter", None)
        if waiter is None:
            return
        self._n["timeouts"] += 1
        self._unqueue(waiter)
        waited = monotonic() - waiter.start
        if waiter.queued:
            self._wait_duration += waited
            self._max_wait = max(self._max_wait, waited)
        self._ev.warning(
            "pool.acquire.withdrawn", waiter.key, waiter.context, wait_s=waited
        )

    def _unqueue(self, waiter: _Waiter) -> None:
        """Drop a caller that gave up from the queue or the creation it joined."""
        if waiter.queued:
            self._queue.pop(waiter.wid, None)
        res = waiter.res
        if res is not None and waiter in res.joiners:
            res.joiners.remove(waiter)

    def _wake(self) -> None:
        """Hand free slots to queued callers, oldest first."""
        queue_ = self._queue
        while queue_ and len(self._live) < self._cap and not self._closing:
            wid = next(iter(queue_))
            waiter = queue_.pop(wid)
            if not waiter.future.pending:
                continue  # gave up; the slot goes to the next one
            res = self._entries.get(waiter.key)
            if res is None:
                res = self._create(waiter.key, waiter.context)
            if res.state is _State.OPEN:
                self._finish(waiter, res.resource)
            else:
                self._join(res, waiter)

    # --- resource reports -------------------------------------------------

    def _on_ready(self, msg: Ready, _reply: object) -> None:
        res = self._live.get(msg.rid)
        if res is None or res.state is _State.OPEN:
            return  # stale: abandoned meanwhile; its actor closes the resource
        res.resource = msg.resource
        now = monotonic()
        res.last_used = now
        self._n["created"] += 1
        for waiter in res.joiners:
            self._finish(waiter, msg.resource)
        res.joiners.clear()
        self._ev.info(
            "pool.acquire.created", res.key, res.context, created_s=now - res.created_at
        )
        if res.state is _State.CLOSING:
            # Released while being created: its callers got it; close it now.
            self._at(now + self.options.close_timeout, self._on_close_timeout, res)
        else:
            # No queued caller of this key is left to answer here: _create
            # moved them all onto this creation when it started.
            res.state = _State.OPEN
            self._schedule_expiry(res)
        callbacks, res.on_created = res.on_created, []
        for callback in callbacks:
            callback(res, True)

    def _on_failed(self, msg: Failed, _reply: object) -> None:
        res = self._live.pop(msg.rid, None)
        if res is None:
            return
        self._unmap(res)
        self._n["factory_errors"] += 1
        for waiter in res.joiners:
            error = FactoryError(waiter.key)
            error.__cause__ = msg.error
            self._finish(waiter, error=error)
        res.joiners.clear()
        for reply in res.close_replies:
            reply.try_set(False)  # released while being created: nothing opened
        self._ev.warning(
            "pool.factory.failed", res.key, res.context, error=repr(msg.error)
        )
        callbacks, res.on_created = res.on_created, []
        for callback in callbacks:
            callback(res, False)
        self._after_gone(res)

    def _on_create_timeout(self, res: _Res) -> None:
        if self._live.get(res.rid) is not res or res.resource is not None:
            return
        if res.state is _State.OPEN:
            return
        del self._live[res.rid]
        self._unmap(res)
        self._n["factory_errors"] += 1
        timeout = self.options.create_timeout
        for waiter in res.joiners:
            error = FactoryError(waiter.key, "pool: factory timed out")
            error.__cause__ = TimeoutError(f"factory did not return within {timeout} s")
            self._finish(waiter, error=error)
        res.joiners.clear()
        for reply in res.close_replies:
            reply.try_set(True)
        _stop_actor(res)  # closes the resource if the factory ever returns
        self._ev.warning(
            "pool.factory.failed",
            res.key,
            res.context,
            error=repr(TimeoutError(f"factory did not return within {timeout} s")),
        )
        self._abandon(res, "factory did not return", create_timeout=timeout)
        callbacks, res.on_created = res.on_created, []
        for callback in callbacks:
            callback(res, False)
        self._after_gone(res)

    def _on_closed(self, msg: Closed, _reply: object) -> None:
        res = self._live.pop(msg.rid, None)
        if res is None:
            return  # abandoned earlier; the slot was already freed
        if res.state is not _State.CLOSING:
            # The actor stopped without being asked (stop_all, a crash).
            self._unmap(res)
            for waiter in res.joiners:
                self._finish(waiter, error=PoolClosedError(self.name))
            res.joiners.clear()
            res.close_reason = "lost"
            callbacks, res.on_created = res.on_created, []
            for callback in callbacks:
                callback(res, False)
            self._ev.warning("pool.resource.lost", res.key)
        if msg.error is not None:
            self._n["close_errors"] += 1
            self._ev.error("pool.close.failed", res.key, error=repr(msg.error))
        self._ev.debug("pool.resource.closed", res.key, reason=res.close_reason)
        for reply in res.close_replies:
            reply.try_set(True)
        self._after_gone(res)

    def _on_close_timeout(self, res: _Res) -> None:
        if self._live.get(res.rid) is not res:
            return
        del self._live[res.rid]
        self._abandon(
            res, "close did not return", close_timeout=self.options.close_timeout
        )
        for reply in res.close_replies:
            reply.try_set(True)
        self._after_gone(res)

    def _abandon(self, res: _Res, reason: str, **fields: Any) -> None:
        """Give up on a resource whose actor is stuck in user code.

        Its slot is freed by the caller. The actor is told to answer any later
        ask at once (so ``ActorRegistry.stop_all()`` does not wait on it); its
        resource is still closed if the stuck code ever returns.
        """
        self._n["abandoned"] += 1
        self._ev.error(
            "pool.resource.abandoned", res.key, reason=reason, rid=res.rid, **fields
        )
        abandon = getattr(res.actor, "abandon", None)
        if abandon is not None:
            abandon()

    def _after_gone(self, res: _Res) -> None:
        """A slot freed: finish release-all jobs and wake queued callers."""
        if self._release_jobs:
            for job in list(self._release_jobs):
                job.rids.discard(res.rid)
                if not job.rids:
                    self._release_jobs.remove(job)
                    if job.reply is not None:
                        job.reply.try_set(None)
        if self._sweep is not None:
            self._sweep_done(res.rid)
        self._wake()

    def _unmap(self, res: _Res) -> None:
        # Only if the key still maps to this resource: a refresh's replacement
        # (or a newer creation) may own the key now.
        if self._entries.get(res.key) is res:
            del self._entries[res.key]

    def _begin_close(self, res: _Res, reason: str) -> None:
        """Remove ``res`` from the key map now and close it in its actor."""
        self._unmap(res)
        if res.state is _State.CLOSING:
            return
        was_creating = res.state is _State.CREATING
        res.state = _State.CLOSING
        res.close_reason = reason
        _stop_actor(res)
        if not was_creating:  # a creation in flight is timed by create_timeout
            self._at(
                monotonic() + self.options.close_timeout, self._on_close_timeout, res
            )

    # --- release ----------------------------------------------------------

    def _on_release(self, msg: Release, reply: PoolFuture[Any] | None) -> Any:
        res = self._entries.get(msg.key)
        if res is None:
            # A key refreshed at the cap has no resource mapped while the old
            # one closes: releasing it cancels the refresh.
            res = self._refreshing.pop(msg.key, None)
            if res is None:
                return False
        self._n["releases"] += 1
        self._begin_close(res, "released")
        self._ev.info("pool.release", msg.key)
        if reply is None:
            return _DEFERRED
        res.close_replies.append(reply)
        return _DEFERRED

    def _on_release_all(self, _msg: ReleaseAll, reply: PoolFuture[Any] | None) -> Any:
        count = len(self._entries)
        self._n["releases"] += count
        for res in list(self._entries.values()):
            self._begin_close(res, "released")
        # Refreshes in flight are cancelled: no resource may outlive this reply.
        self._refreshing.clear()
        # Every mapped resource is closing now; what still creates is a
        # refresh's replacement, not mapped yet.
        for res in list(self._live.values()):
            if res.state is _State.CREATING:
                self._begin_close(res, "released")
        self._ev.info("pool.release_all", released=count)
        rids = set(self._live)
        if not rids:
            return None
        self._release_jobs.append(_ReleaseAllJob(reply, rids))
        return _DEFERRED

    # --- queries ----------------------------------------------------------

    def _on_contains(self, msg: Contains, _reply: object) -> bool:
        return msg.key in self._entries

    def _on_list(self, _msg: ListResources, _reply: object) -> list[tuple[Any, Any]]:
        return [
            (res.key, res.resource)
            for res in self._entries.values()
            if res.state is _State.OPEN
        ]

    def _on_get_stats(self, _msg: GetStats, _reply: object) -> Stats:
        states = [res.state for res in self._live.values()]
        return Stats(
            max_open_resources=self._cap,
            open_resources=len(self._live),
            wait_count=len(self._queue),
            wait_duration=self._wait_duration,
            creating=states.count(_State.CREATING),
            open=states.count(_State.OPEN),
            closing=states.count(_State.CLOSING),
            max_wait=self._max_wait,
            **self._n,
        )

    def _on_watch(self, msg: Watch, _reply: object) -> None:
        if msg.watcher not in self._watchers:
            self._watchers.append(msg.watcher)

    def _on_unwatch(self, msg: Unwatch, _reply: object) -> None:
        if msg.watcher in self._watchers:
            self._watchers.remove(msg.watcher)

    # --- health checks ----------------------------------------------------

    def _on_health_tick(self, _msg: HealthTick, _reply: object) -> Any:
        if self._sweep is not None or self._closing:
            return None  # the previous sweep has not finished; skip this tick
        seq = next(self._seq)
        targets = [r for r in self._entries.values() if r.state is _State.OPEN]
        self._n["health_checks"] += 1
        sweep = _Sweep(seq, monotonic(), {r.rid for r in targets}, len(targets))
        self._ev.debug("pool.health.started", pinged=len(targets))
        if not targets:
            self._ev.debug("pool.health.finished", pinged=0, evicted=0, took_s=0.0)
            return None
        self._sweep = sweep
        sweep.unsent = targets
        self._ping_some(sweep)
        self._at(
            sweep.started + self.options.ping_timeout, self._on_ping_timeout, sweep
        )
        return None

    def _ping_some(self, sweep: _Sweep) -> None:
        """Tell the next chunk of a sweep's pings; queue a note to do the rest.

        A sweep of many resources is told in chunks, each after the messages
        that queued meanwhile: an acquire waits for one chunk, not them all.
        """
        unsent = sweep.unsent
        chunk, sweep.unsent = unsent[:_PING_CHUNK], unsent[_PING_CHUNK:]
        ping = Ping(sweep.seq)
        for res in chunk:
            if res.state is _State.OPEN and res.rid in sweep.outstanding:
                res.ping_seq = sweep.seq
                res.actor.actor_ref.tell(ping)
        if sweep.unsent:
            self.actor_ref.tell(_PingMore(sweep))

    def _on_ping_more(self, msg: _PingMore, _reply: object) -> None:
        if self._sweep is msg.sweep:
            self._ping_some(msg.sweep)

    def _on_ping_result(self, msg: PingResult, _reply: object) -> None:
        res = self._live.get(msg.rid)
        if res is None or res.ping_seq != msg.seq:
            return  # stale
        res.ping_seq = None
        if msg.error is not None and res.state is _State.OPEN:
            self._evict(res, "ping_failed", repr(msg.error))
        if self._sweep is not None and self._sweep.seq == msg.seq:
            self._sweep_done(res.rid)

    def _on_ping_timeout(self, sweep: _Sweep) -> None:
        if self._sweep is not sweep:
            return
        for rid in list(sweep.outstanding):
            res = self._live.get(rid)
            # Only a ping that was sent and not answered counts against its
            # resource (a huge sweep's last chunks may not have gone out yet).
            if (
                res is not None
                and res.state is _State.OPEN
                and res.ping_seq == sweep.seq
            ):
                res.ping_seq = None
                self._evict(
                    res, "ping_timeout", f"no answer in {self.options.ping_timeout} s"
                )
        sweep.outstanding.clear()
        sweep.unsent = []
        self._sweep_done(None)

    def _evict(self, res: _Res, reason: str, error: str) -> None:
        self._n["health_evictions"] += 1
        if self._sweep is not None:
            self._sweep.evicted += 1
        self._ev.warning("pool.health.evicted", res.key, reason=reason, error=error)
        self._begin_close(res, reason)

    def _sweep_done(self, rid: int | None) -> None:
        sweep = self._sweep
        assert sweep is not None
        if rid is not None:
            sweep.outstanding.discard(rid)
        if not sweep.outstanding:
            self._sweep = None
            # Routine checks stay at debug; one that evicted something is news.
            emit = self._ev.info if sweep.evicted else self._ev.debug
            emit(
                "pool.health.finished",
                pinged=sweep.pinged,
                evicted=sweep.evicted,
                took_s=monotonic() - sweep.started,
            )

    # --- lifecycle policies -------------------------------------------------

    def _schedule_expiry(self, res: _Res) -> None:
        lifetime = self.options.max_lifetime
        if lifetime is not None:
            # Up to 5 % shorter, so resources made together do not expire together.
            jittered = lifetime * (1.0 - random.uniform(0.0, 0.05))
            self._at(res.created_at + jittered, self._on_lifetime, res)
        idle = self.options.max_idle_time
        if idle is not None:
            self._at(res.last_used + idle, self._on_idle_check, res)

    def _on_lifetime(self, res: _Res) -> None:
        if res.state is _State.OPEN and self._live.get(res.rid) is res:
            self._n["lifetime_expired"] += 1
            self._ev.info("pool.resource.expired", res.key, reason="max_lifetime")
            self._begin_close(res, "max_lifetime")

    def _on_idle_check(self, res: _Res) -> None:
        if res.state is not _State.OPEN or self._live.get(res.rid) is not res:
            return
        idle = self.options.max_idle_time
        assert idle is not None
        due = res.last_used + idle
        if monotonic() < due:
            self._at(due, self._on_idle_check, res)  # used meanwhile: look again
            return
        self._n["idle_expired"] += 1
        self._ev.info("pool.resource.expired", res.key, reason="max_idle_time")
        self._begin_close(res, "max_idle_time")

    def _on_prewarm(self, msg: Prewarm, reply: PoolFuture[Any] | None) -> Any:
        results: dict[Hashable, str] = {}
        pending: set[int] = set()

        def done(res: _Res, ok: bool) -> None:
            results[res.key] = "created" if ok else "failed"
            if ok:
                self._n["prewarmed"] += 1
            pending.discard(res.rid)
            if not pending:
                self._ev.info("pool.prewarm.finished", results=_printable(results))
                if reply is not None:
                    reply.try_set(results)

        for key in msg.keys:
            if key in results:
                continue
            if self._closing:
                raise PoolClosedError(self.name)
            if key in self._entries:
                results[key] = "open"
            elif len(self._live) < self._cap:
                res = self._create(key)
                res.on_created.append(done)
                results[key] = "creating"
                pending.add(res.rid)
            else:
                results[key] = "not_created"
        if not pending:
            self._ev.info("pool.prewarm.finished", results=_printable(results))
            return results
        return _DEFERRED

    def _on_refresh(self, msg: Refresh, reply: PoolFuture[Any] | None) -> Any:
        key = msg.key
        old = self._entries.get(key)
        if old is None or old.state is not _State.OPEN:
            return False
        if self._closing:
            raise PoolClosedError(self.name)
        self._n["refreshed"] += 1
        self._ev.info("pool.refresh", key)

        def answer(ok: bool) -> None:
            if reply is not None:
                reply.try_set(ok)

        if len(self._live) < self._cap:
            # Below the cap the old one keeps serving until the new one is ready.
            self._create_replacement(old, answer)
        else:
            # At the cap: close first; the new creation starts the moment the
            # old one's slot frees, before any queued caller can take it.
            self._refreshing[key] = old
            self._begin_close(old, "refreshed")
            old.close_replies.append(
                _CallbackFuture(lambda: self._refresh_after_close(old, answer))
            )
        return _DEFERRED

    def _create_replacement(self, old: _Res, answer: Callable[[bool], None]) -> None:
        """Create a new resource for ``old.key`` that takes over when ready."""
        key = old.key
        # _create maps the key to the new resource; keep the old one mapped
        # (and serving) until the new one is ready.
        new = self._create(key)
        self._entries[key] = old

        def take_over(res: _Res, ok: bool) -> None:
            if not ok:  # the factory failed: the old one keeps serving
                answer(False)
                return
            current = self._entries.get(key)
            if current is old:
                self._begin_close(old, "refreshed")
            elif current is not None or old.close_reason == "released":
                # Released meanwhile, or opened anew: this one is not wanted.
                self._begin_close(new, "released")
                answer(False)
                return
            # The old one is swapped out, or was evicted or expired meanwhile.
            self._entries[key] = new
            answer(True)

        new.on_created.append(take_over)

    def _refresh_after_close(self, old: _Res, answer: Callable[[bool], None]) -> None:
        """The old resource of a refresh at the cap is gone: create the new one."""
        key = old.key
        if self._refreshing.get(key) is not old or self._closing:
            answer(False)  # released (or the pool closed) while it was closing
            return
        del self._refreshing[key]
        if key in self._entries:  # someone opened the key meanwhile
            answer(True)
            return
        new = self._create(key)
        new.on_created.append(lambda _res, ok: answer(ok))


def _register_before(ref: pykka.ActorRef[Any], supervisor: pykka.ActorRef[Any]) -> None:
    """Register a resource actor in pykka's registry just before its supervisor.

    ``ActorRegistry.stop_all()`` stops the newest actors first. Listed as older
    than their supervisor, a pool's resource actors are stopped after it, so
    the supervisor shuts its pool down in its own order: its waiters get
    ``PoolClosedError`` instead of a fresh resource for the slot that
    ``stop_all`` just freed by stopping a resource actor.
    """
    registry = pykka.ActorRegistry
    with registry._actor_refs_lock:
        refs = registry._actor_refs
        for index in range(len(refs) - 1, -1, -1):
            if refs[index] is supervisor:
                refs.insert(index, ref)
                return
        refs.append(ref)  # the supervisor is stopping: it stops this actor itself


def _printable(results: dict[Hashable, str]) -> dict[str, str]:
    """Per-key results with string keys, so any renderer (JSON too) can log them."""
    return {key if isinstance(key, str) else repr(key): v for key, v in results.items()}


def _stop_actor(res: _Res) -> None:
    """Ask a resource actor to stop (and so close its resource), if it lives."""
    with contextlib.suppress(pykka.ActorDeadError):
        res.actor.stop()


class _CallbackFuture(PoolFuture[Any]):
    """A reply slot that runs a callback in the supervisor when settled."""

    def __init__(self, callback: Callable[[], None]) -> None:
        super().__init__()
        self._callback = callback

    def try_set(self, value: Any) -> bool:
        if super().try_set(value):
            self._callback()
            return True
        return False


class _Ticker(threading.Thread):
    """Tells the supervisor ``HealthTick`` every ``interval`` seconds."""

    def __init__(self, ref: PoolRef, interval: float, name: str) -> None:
        super().__init__(name=f"pooler_actors:{name}:ticker", daemon=True)
        self._ref = ref
        self._interval = interval
        self._stop_event = threading.Event()

    def cancel(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        tick = HealthTick()
        while not self._stop_event.wait(self._interval):
            try:
                self._ref.tell(tick)
            except pykka.ActorDeadError:
                return
