"""The pool supervisor: the actor shell around the pure core.

It feeds each message, due timer and batch of counter notes to its
[PoolCore][pooler_actors._core.PoolCore] with the time, then carries out the
effects the core returns. It decides nothing about the pool; timers need no
other thread: its loop waits on the mailbox until the core's next deadline.
"""

from __future__ import annotations

import contextlib
import queue
import random
import threading
from collections.abc import Callable
from time import monotonic
from typing import Any, cast

import pykka

from pooler_actors import _counter_state, _pykka
from pooler_actors import _effects as fx
from pooler_actors import _messages as im
from pooler_actors import messages as pm
from pooler_actors._capacity import CapacityDriver
from pooler_actors._core import PoolCore
from pooler_actors._events import Events
from pooler_actors._future import PoolFuture, Replies
from pooler_actors._part import NO_KEY
from pooler_actors._ref import Mailbox, PoolActor, PoolRef, live_pools
from pooler_actors.errors import PoolClosedError
from pooler_actors.options import PoolOptions
from pooler_actors.resource import BaseResourceActor, ResourceActor, ResourceActors
from pooler_actors.stats import Stats

__all__ = ["PoolRef", "PoolSupervisor"]

_MAX_WAIT = 1.0  # the lag a caller interrupted before its wake-up costs at most


class PoolSupervisor(PoolActor):
    """Owns a keyed pool: feeds its messages to the core, carries out effects.

    Start it with `PoolSupervisor.start(factory, options)`; the returned
    [PoolRef][pooler_actors.PoolRef] answers the messages of
    `pooler_actors.messages`.
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
        ref.pool_name = self.name = options.name
        _pykka.set_ref(self, ref)
        self.options = options
        self._actors = a = ResourceActors(
            ref, factory, pool_name=self.name, actor_type=self.resource_actor_type
        )
        self._events = Events(options.name, logger)
        rand = lambda: random.uniform(0.0, 1.0)  # noqa: E731 - looked up per call
        self._core = c = PoolCore(options, pool_id=self, rand=rand)
        self._counter, self._replies = c.published, Replies()
        #: The replies of this step's effects, taken from `_replies` (`_step`).
        self._taken: dict[int, tuple[PoolFuture[Any], bool]] = {}
        self._lock = ref.attach(c.published, self._replies, self._events)
        self._watchers: list[pykka.ActorRef[Any]] = []
        self._fleet: Any = None
        if options.global_capacity is not None:  # a bad one fails here, not later
            tell = ref.tell_quietly
            self._fleet = CapacityDriver(
                options.global_capacity,
                pool_name=self.name,
                on_granted=lambda rid, held: tell(im.GlobalGranted(rid, held)),
                on_unavailable=lambda rid, e: tell(im.GlobalUnavailable(rid, e)),
                on_lost=lambda rid: tell(im.GlobalLost(rid)),
                events=self._events,
            )
        cid = self._cid
        self._on_message: dict[type, Callable[[float, Any, Any], None]] = {
            pm.Acquire: lambda t, m, r: self._acquire(t, m, r, hold=False),
            pm.Checkout: lambda t, m, r: self._acquire(t, m, r, hold=True),
            pm.Checkin: lambda t, m, r: c.checkin(t, cid(r), m.lease, m.broken),
            pm.Release: lambda t, m, r: c.release(t, cid(r), m.key),
            pm.ReleaseAll: lambda t, m, r: c.release_all(t, cid(r)),
            pm.Contains: lambda t, m, r: c.contains(cid(r), m.key),
            pm.GetStats: lambda t, m, r: c.stats(cid(r)),
            pm.ListResources: lambda t, m, r: c.list_resources(cid(r)),
            pm.Prewarm: lambda t, m, r: c.prewarm(t, cid(r), m.keys),
            pm.Refresh: lambda t, m, r: c.refresh(t, cid(r), m.key),
            pm.Resize: lambda t, m, r: c.resize(t, cid(r), m.max_open_resources),
            pm.PopStats: lambda t, m, r: c.pop_stats(cid(r)),
            pm.Watch: lambda t, m, r: self._watch(m.watcher, r, add=True),
            pm.Unwatch: lambda t, m, r: self._watch(m.watcher, r, add=False),
            im.Withdraw: lambda t, m, r: c.give_up(t, m.future.cid),
            im.HealthTick: lambda t, m, r: c.health_check(t),
            im.Notes: lambda t, m, r: self._notes(t, woken=True),  # (see _dispatch)
            im.LeaseLost: lambda t, m, r: c.lost(t, m.lease),
            im.Resume: lambda t, m, r: c.resume(t),
            im.Shutdown: lambda t, m, r: c.close(t, cid(r), wait=m.wait),
            im.Ready: lambda t, m, r: c.ready(t, m.rid, m.attempt, m.resource),
            im.Failed: lambda t, m, r: c.failed(t, m.rid, m.attempt, m.error),
            im.Closed: self._closed,
            im.PingResult: lambda t, m, r: c.ping_result(t, m.rid, m.seq, m.error),
            im.GlobalGranted: lambda t, m, r: c.global_granted(t, m.rid, m.held),
            im.GlobalUnavailable: lambda t, m, r: c.global_unavailable(
                t, m.rid, m.error
            ),
            im.GlobalLost: lambda t, m, r: c.global_lost(t, m.rid),
        }
        self._do: dict[type, Callable[[Any], None]] = {
            fx.Reply: self._reply,
            fx.Fail: self._reply,
            fx.Start: lambda e: a.start(e.rid, e.key, e.attempt),
            fx.Ping: lambda e: a.tell(e.rid, im.Ping(e.seq)),
            fx.Close: lambda e: a.stop(e.rid),
            fx.Abandon: lambda e: a.abandon(e.rid),
            fx.ReserveSlot: lambda e: self._fleet.reserve(e.rid),
            fx.CancelSlot: lambda e: self._fleet.cancel(e.rid),
            fx.ReturnSlot: lambda e: self._fleet.release(e.rid),
            fx.Resume: lambda e: self.actor_inbox.put(_pykka.Envelope(im.Resume())),
            fx.Log: self._log,
            fx.Stopped: self._stopped,
        }

    def __repr__(self) -> str:
        return f"<PoolSupervisor {self.name!r}>"

    def stats(self) -> Stats:
        """The pool's stats now, for a subclass's handlers (in its thread)."""
        return self._core.snapshot()  # the core's own state: no lock needed

    # --- the actor runtime: pykka's hooks for actor implementors -----------

    def _start_actor_loop(self) -> None:
        ref = cast(PoolRef, self.actor_ref)
        live_pools.add(ref)
        ref.thread = threading.Thread(
            target=self._run, name=f"pooler_actors:{self.name}:supervisor", daemon=True
        )
        ref.thread.start()

    def _run(self) -> None:
        """Receive messages until stopped, feeding due timers first (each step
        reads the callers' notes before its own event: see `_step`)."""
        self._step(self._core.start)
        inbox = cast(Mailbox, self.actor_inbox)
        counter = self._counter
        while not self.actor_stopped.is_set():
            deadline, now = self._core.next_deadline(), monotonic()
            if deadline is not None and deadline <= now:
                self._step(self._core.advance)
                continue
            wait = _MAX_WAIT if deadline is None else min(deadline - now, _MAX_WAIT)
            polling = counter.polling() or self._core.later  # read every POLL
            if polling:
                wait = min(wait, _counter_state.POLL)
            try:
                envelope = inbox.get(timeout=wait)
            except queue.Empty:
                if polling:
                    self._step(lambda now: self._notes(now, poll=True), notes=False)
                continue
            self._dispatch(envelope.message, cast(Any, envelope.reply_to))

    def _dispatch(self, message: Any, reply: PoolFuture[Any] | None) -> None:
        handler = self._on_message.get(type(message))
        if handler is not None:  # (a `Notes` message reads them itself)
            notes = type(message) is not im.Notes
            self._step(lambda now: handler(now, message, reply), notes=notes)
        elif _pykka.is_stop(message):
            self._step(lambda now: self._core.close(now, self._cid(reply)))
        else:  # a message of a subclass's own (pykka's on_receive contract)
            try:
                result = self.on_receive(message)
            except Exception as error:
                if reply is None:  # a told message: the supervisor fails
                    reason = f"failed: {error!r}"
                    self._step(lambda now: self._core.close(now, 0, reason))
                else:
                    _pykka.log_returned_exception(self)
                    reply.try_fail(error)
                return
            if reply is not None:
                reply.try_set(result)

    def _step(self, event: Callable[[float], None], *, notes: bool = True) -> None:
        """Feed one event to the core under the counter's lock, then its effects.

        In the same hold: the notes so far first (`notes`), so a caller's notes
        precede its later messages; after, the replies the effects settle are
        taken from `Replies` and those of `PoolCore.handed` forgotten."""
        debug = self._events.debug_known()  # debug events if logged
        core = self._core
        try:
            with self._lock:
                core.debug = debug  # (and the counter's, for callers)
                now = monotonic()
                if notes:
                    self._notes(now)
                event(now)
                self._replies.take_for(core.effects, core.handed, self._taken)
            effects = core.effects
            while effects:
                effect = effects.pop(0)
                self._do[type(effect)](effect)
        except Exception as error:  # a bug of ours: stop, and nobody hangs
            self._events.error("pool.failed", error=repr(error))
            with self._lock:
                futures = self._replies.take_grants(every=True)
            futures += [future for future, _ in self._taken.values()]
            self._taken.clear()
            for future in futures:
                future.try_fail(error)
            self._actors.stop_all()
            self._stopped(fx.Stopped(f"failed: {error!r}"))

    # --- requests --------------------------------------------------------------

    def _cid(self, reply: PoolFuture[Any] | None, *, acquire: bool = False) -> int:
        cid = next(self._replies.cids)
        if reply is not None:
            reply.cid = cid
            self._replies[cid] = (reply, acquire)
        return cid

    def _acquire(self, now: float, msg: Any, reply: Any, *, hold: bool) -> None:
        gone = reply is not None and not reply.pending  # gave up before we read it
        c, cid = self._core, self._cid(reply, acquire=True)
        c.acquire(now, cid, msg.key, msg.timeout, msg.context, hold=hold, gone=gone)

    def _watch(self, watcher: pykka.ActorRef[Any], reply: Any, *, add: bool) -> None:
        self._watchers = [w for w in self._watchers if w != watcher] + [watcher] * add
        if reply is not None:
            reply.try_set(None)

    def _notes(self, now: float, *, woken: bool = False, poll: bool = False) -> None:
        self._core.read_notes(now, woken=woken, poll=poll)

    def _closed(self, now: float, msg: im.Closed, _reply: object) -> None:
        self._actors.ended(msg.rid, msg.attempt)
        self._core.closed(now, msg.rid, msg.attempt, msg.error)

    # --- effects ----------------------------------------------------------------

    def _reply(self, effect: fx.Reply | fx.Fail) -> None:
        future, acquire = self._taken.pop(effect.cid, (None, False))
        if future is None:
            return
        if isinstance(effect, fx.Fail):
            future.try_fail(effect.error)
        elif not future.try_set(effect.value) and acquire:
            self._step(lambda now: self._core.undelivered(now, effect))

    def _log(self, effect: fx.Log) -> None:
        emit = getattr(self._events, effect.level)
        if effect.key is NO_KEY:
            emit(effect.event, context=effect.context, **effect.fields)
        else:
            emit(effect.event, effect.key, effect.context, **effect.fields)

    def _stopped(self, effect: fx.Stopped) -> None:
        """The core has closed everything: end the actor, answer late comers."""
        if self.actor_stopped.is_set():
            return
        pykka.ActorRegistry.unregister(self.actor_ref)
        self.actor_stopped.set()
        inbox = cast(Mailbox, self.actor_inbox)
        inbox.closed_as = self.name
        inbox.drain()
        with self._lock:  # then the checkouts that queued themselves, unread
            self._counter.shut(self.name)
            grants = self._replies.take_grants()
        for future in grants:
            future.try_fail(PoolClosedError(self.name))
        # Idle workers exit at once; one stuck in user code is not waited for.
        self._actors.executor.shutdown(min(1.0, self.options.close_timeout))
        if self._fleet is not None:
            self._fleet.close(self.options.close_timeout)
        for watcher in self._watchers:
            with contextlib.suppress(pykka.ActorDeadError):
                watcher.tell(pm.PoolStopped(self.name, effect.reason))
        late = self._core.late_notes
        cast(PoolRef, self.actor_ref).stopped(lambda: self._step(late, notes=False))
