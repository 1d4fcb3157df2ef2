"""The pool supervisor: the actor shell around the pure core.

It feeds each message and each due timer to its
[PoolCore][pooler_actors._core.PoolCore] with the time, then carries out the
effects the core returns: replies, resource actors started, pinged, stopped,
events logged, fleet slots asked for. It decides nothing about the pool. Its
loop (pykka's `_start_actor_loop` hook) waits on the mailbox until the core's
next deadline, so deadlines, health checks and expiries need no other thread.
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import itertools
import os
import queue
import random
import threading
import weakref
from collections.abc import Callable
from time import monotonic
from typing import Any, cast

import pykka

from pooler_actors import _effects as fx
from pooler_actors import _messages as im
from pooler_actors import _pykka
from pooler_actors._core import NO_KEY, PoolCore
from pooler_actors._events import Events
from pooler_actors._executor import Executor
from pooler_actors._future import PoolFuture
from pooler_actors._ref import Mailbox, PoolRef
from pooler_actors.messages import (
    Acquire,
    Checkin,
    Checkout,
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
from pooler_actors.stats import Stats

__all__ = ["PoolRef", "PoolSupervisor"]

_MAX_WAIT = 3600.0  # longest single mailbox wait: any deadline, however far, fits
_live_pools: weakref.WeakSet[PoolRef] = weakref.WeakSet()


@atexit.register
def _close_forgotten_pools() -> None:
    """Close, at interpreter exit, every pool the program forgot to close."""
    for ref in list(_live_pools):
        with contextlib.suppress(Exception):
            ref.stop(block=True, timeout=30)


def _forget_pools_in_child() -> None:
    """After fork: the child has none of the pool's threads; close its copies."""
    for ref in list(_live_pools):
        cast(Mailbox, ref.actor_inbox).closed_as = ref.pool_name
        ref.actor_stopped.set()
    _live_pools.clear()


os.register_at_fork(after_in_child=_forget_pools_in_child)


def _takes_key(factory: Callable[..., Any]) -> bool:
    """Whether `factory` has a required positional parameter (gets the key)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        for p in parameters
    )


class PoolSupervisor(pykka.ThreadingActor):
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
        ref.pool_name = options.name
        _pykka.set_ref(self, ref)
        self.options = options
        self.name = options.name
        self._factory = factory
        self._pass_key = _takes_key(factory)
        self._events = Events(options.name, logger)
        self._core = PoolCore(
            options, pool_id=self, rand=lambda: random.uniform(0.0, 1.0)
        )
        self._cids = itertools.count(1)
        # cid -> (reply future, whether an undelivered reply goes back to the core)
        self._replies: dict[int, tuple[PoolFuture[Any], bool]] = {}
        self._actors: dict[int, BaseResourceActor] = {}
        self._watchers: list[pykka.ActorRef[Any]] = []
        self._executor = Executor(options.name)
        self._capacity: Any = None  # the fleet-capacity driver, made on first use
        self._reason = ""
        self._on_message: dict[type, Callable[[float, Any, Any], None]] = {
            Acquire: lambda now, m, r: self._acquire(now, m, r, hold=False),
            Checkout: lambda now, m, r: self._acquire(now, m, r, hold=True),
            Checkin: lambda now, m, r: self._core.checkin(
                now, self._cid(r), m.lease, m.broken
            ),
            Release: lambda now, m, r: self._core.release(now, self._cid(r), m.key),
            ReleaseAll: lambda now, m, r: self._core.release_all(now, self._cid(r)),
            Contains: lambda now, m, r: self._core.contains(self._cid(r), m.key),
            GetStats: lambda now, m, r: self._core.stats(self._cid(r)),
            ListResources: lambda now, m, r: self._core.list_resources(self._cid(r)),
            Prewarm: lambda now, m, r: self._core.prewarm(now, self._cid(r), m.keys),
            Refresh: lambda now, m, r: self._core.refresh(now, self._cid(r), m.key),
            Watch: lambda now, m, r: self._watch(m.watcher, r),
            Unwatch: lambda now, m, r: self._unwatch(m.watcher, r),
            im.Withdraw: lambda now, m, r: self._core.give_up(now, m.future.cid),
            im.HealthTick: lambda now, m, r: self._core.health_check(now),
            im.Resume: lambda now, m, r: self._core.resume(now),
            im.Ready: lambda now, m, r: self._core.ready(
                now, m.rid, m.attempt, m.resource
            ),
            im.Failed: lambda now, m, r: self._core.failed(
                now, m.rid, m.attempt, m.error
            ),
            im.Closed: self._on_closed,
            im.PingResult: lambda now, m, r: self._core.ping_result(
                now, m.rid, m.seq, m.error
            ),
            im.GlobalGranted: lambda now, m, r: self._core.global_granted(
                now, m.rid, m.held
            ),
            im.GlobalUnavailable: lambda now, m, r: self._core.global_unavailable(
                now, m.rid, m.error
            ),
            im.GlobalLost: lambda now, m, r: self._core.global_lost(now, m.rid),
        }
        self._do: dict[type, Callable[[Any], None]] = {
            fx.Reply: self._reply,
            fx.Fail: self._fail,
            fx.Start: self._start,
            fx.Ping: lambda e: self._tell_actor(e.rid, im.Ping(e.seq)),
            fx.Close: self._stop_actor,
            fx.Abandon: self._abandon,
            fx.ReserveSlot: lambda e: self._fleet().reserve(e.rid),
            fx.CancelSlot: lambda e: self._fleet().cancel(e.rid),
            fx.ReturnSlot: lambda e: self._fleet().release(e.rid),
            fx.Resume: lambda e: self.actor_inbox.put(_pykka.Envelope(im.Resume())),
            fx.Log: self._log,
            fx.Stopped: self._stopped,
        }

    def __repr__(self) -> str:
        return f"<PoolSupervisor {self.name!r}>"

    def stats(self) -> Stats:
        """The pool's stats now, for a subclass's own handlers (its thread only)."""
        return self._core.snapshot()

    # --- the actor runtime: pykka's hooks for actor implementors -----------

    @staticmethod
    def _create_actor_inbox() -> Mailbox:
        return Mailbox()

    @staticmethod
    def _create_future() -> PoolFuture[Any]:
        return PoolFuture()

    def _start_actor_loop(self) -> None:
        ref = cast(PoolRef, self.actor_ref)
        _live_pools.add(ref)
        ref.thread = threading.Thread(
            target=self._run, name=f"pooler_actors:{self.name}:supervisor", daemon=True
        )
        ref.thread.start()

    def _run(self) -> None:
        """Receive messages until stopped, feeding due timers to the core."""
        self._step(self._core.start)
        inbox = cast(Mailbox, self.actor_inbox)
        while not self.actor_stopped.is_set():
            deadline = self._core.next_deadline()
            try:
                if deadline is None:
                    envelope = inbox.get()
                else:
                    delay = deadline - monotonic()
                    if delay <= 0:
                        self._step(self._core.advance)
                        continue
                    envelope = inbox.get(timeout=min(delay, _MAX_WAIT))
            except queue.Empty:
                continue
            self._dispatch(envelope.message, cast(Any, envelope.reply_to))

    def _dispatch(self, message: Any, reply: PoolFuture[Any] | None) -> None:
        handler = self._on_message.get(type(message))
        if handler is not None:
            self._step(lambda now: handler(now, message, reply))
        elif _pykka.is_stop(message):
            self._step(lambda now: self._core.close(now, self._cid(reply)))
        else:  # a message of a subclass's own (pykka's on_receive contract)
            try:
                result = self.on_receive(message)
            except Exception as error:
                if reply is None:  # a told message: our own failure
                    reason = f"failed: {error!r}"
                    return self._step(lambda now: self._core.close(now, 0, reason))
                _pykka.log_returned_exception(self)
                reply.try_fail(error)
                return None
            if reply is not None:
                reply.try_set(result)
        return None

    def _step(self, event: Callable[[float], None]) -> None:
        """Feed one event to the core and carry out its effects, in order."""
        try:
            event(monotonic())
            effects = self._core.effects
            while effects:
                effect = effects.pop(0)
                self._do[type(effect)](effect)
        except Exception as error:  # a bug of ours: stop, and nobody hangs
            self._crash(error)

    def _crash(self, error: Exception) -> None:
        self._events.error("pool.failed", error=repr(error))
        for future, _ in self._replies.values():
            future.try_fail(error)
        self._replies.clear()
        for actor in self._actors.values():
            with contextlib.suppress(Exception):
                actor.actor_ref.stop(block=False)
        self._stopped(fx.Stopped(f"failed: {error!r}"))

    # --- requests --------------------------------------------------------------

    def _cid(self, reply: PoolFuture[Any] | None, *, acquire: bool = False) -> int:
        cid = next(self._cids)
        if reply is not None:
            reply.cid = cid
            self._replies[cid] = (reply, acquire)
        return cid

    def _acquire(self, now: float, msg: Any, reply: Any, *, hold: bool) -> None:
        gone = reply is not None and not reply.pending  # gave up before we read it
        cid = self._cid(reply, acquire=True)
        self._core.acquire(
            now, cid, msg.key, msg.timeout, msg.context, hold=hold, gone=gone
        )

    def _watch(self, watcher: pykka.ActorRef[Any], reply: Any) -> None:
        if watcher not in self._watchers:
            self._watchers.append(watcher)
        if reply is not None:
            reply.try_set(None)

    def _unwatch(self, watcher: pykka.ActorRef[Any], reply: Any) -> None:
        with contextlib.suppress(ValueError):
            self._watchers.remove(watcher)
        if reply is not None:
            reply.try_set(None)

    def _on_closed(self, now: float, msg: im.Closed, _reply: object) -> None:
        actor = self._actors.get(msg.rid)
        if actor is not None and actor.attempt == msg.attempt:
            del self._actors[msg.rid]
        self._core.closed(now, msg.rid, msg.attempt, msg.error)

    # --- effects ----------------------------------------------------------------

    def _reply(self, effect: fx.Reply) -> None:
        future, acquire = self._replies.pop(effect.cid, (None, False))
        if future is not None and not future.try_set(effect.value) and acquire:
            self._core.undelivered(monotonic(), effect)

    def _fail(self, effect: fx.Fail) -> None:
        future, _ = self._replies.pop(effect.cid, (None, False))
        if future is not None:
            future.try_fail(effect.error)

    def _start(self, effect: fx.Start) -> None:
        actor = self.resource_actor_type(
            self.actor_ref,
            effect.rid,
            effect.key,
            self._factory,
            self._pass_key,
            attempt=effect.attempt,
            pool_name=self.name,
            executor=self._executor,
        )
        self._actors[effect.rid] = actor
        _pykka.register_before(actor.actor_ref, self.actor_ref)
        _pykka.start_loop(actor)

    def _tell_actor(self, rid: int, message: object) -> None:
        actor = self._actors.get(rid)
        if actor is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                actor.actor_ref.tell(message)

    def _stop_actor(self, effect: fx.Close) -> None:
        self._tell_actor(effect.rid, _pykka.stop_message())

    def _abandon(self, effect: fx.Abandon) -> None:
        actor = self._actors.get(effect.rid)
        abandon = getattr(actor, "abandon", None)
        if abandon is not None:
            abandon()

    def _fleet(self) -> Any:
        if self._capacity is None:
            from pooler_actors._capacity import CapacityDriver  # noqa: PLC0415

            def tell(message: object) -> None:
                with contextlib.suppress(pykka.ActorDeadError):
                    self.actor_ref.tell(message)

            self._capacity = CapacityDriver(
                self.options.global_capacity,
                pool_name=self.name,
                on_granted=lambda rid, held: tell(im.GlobalGranted(rid, held)),
                on_unavailable=lambda rid, e: tell(im.GlobalUnavailable(rid, e)),
                on_lost=lambda rid: tell(im.GlobalLost(rid)),
            )
        return self._capacity

    def _log(self, effect: fx.Log) -> None:
        key = effect.key
        emit = getattr(self._events, effect.level)
        if key is NO_KEY:
            emit(effect.event, context=effect.context, **effect.fields)
        else:
            emit(effect.event, key, effect.context, **effect.fields)

    def _stopped(self, effect: fx.Stopped) -> None:
        """The core has closed everything: end the actor, answer late comers."""
        if self.actor_stopped.is_set():
            return
        pykka.ActorRegistry.unregister(self.actor_ref)
        self.actor_stopped.set()
        inbox = cast(Mailbox, self.actor_inbox)
        inbox.closed_as = self.name
        inbox.drain()
        # Idle workers exit at once; one stuck in user code is not waited for.
        self._executor.shutdown(min(1.0, self.options.close_timeout))
        if self._capacity is not None:
            self._capacity.close(self.options.close_timeout)
        for watcher in self._watchers:
            with contextlib.suppress(pykka.ActorDeadError):
                watcher.tell(PoolStopped(self.name, effect.reason))
        _live_pools.discard(cast(PoolRef, self.actor_ref))
