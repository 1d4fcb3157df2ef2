"""The supervisor's ref and mailbox: where callers' threads meet the pool.

`PoolRef.ask` puts the request in the supervisor's mailbox with a
[PoolFuture][pooler_actors._future.PoolFuture] of its own; a caller that gives
up withdraws that future, which tells the supervisor. Once the pool has
stopped, the mailbox answers anything put in it at once, so nobody hangs.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import threading
import weakref
from collections.abc import Callable
from functools import partial
from time import monotonic
from typing import Any, cast

import pykka
from structlog.contextvars import get_contextvars

from pooler_actors._counter import MISS, Counter
from pooler_actors._future import PoolFuture, Replies
from pooler_actors._messages import LeaseLost, Notes, Shutdown, Withdraw
from pooler_actors._pykka import Envelope, is_stop
from pooler_actors.errors import PoolClosedError
from pooler_actors.messages import Acquire, Checkin

__all__ = ["Mailbox", "PoolActor", "PoolRef", "live_pools"]


class PoolRef(pykka.ActorRef[Any]):
    """The supervisor's `ActorRef`.

    Behaves as pykka's, with three additions: an `ask(..., timeout=t)` that
    gives up withdraws the caller (it is never granted anything afterwards),
    a stopped pool answers with [PoolClosedError][pooler_actors.PoolClosedError],
    and a blocking ask from the pool's own thread (a structlog processor, a
    callback) raises `RuntimeError` at once instead of deadlocking.
    """

    pool_name: str = "pool"
    #: The supervisor's thread, joined by `close()` so no thread is left.
    thread: threading.Thread | None = None
    #: What callers may take without a round trip (see `_counter`).
    counter: Counter
    #: The pool's event emitter (`debug_known` says whether debug is on).
    events: Any
    #: A `Checkin` made in the caller's thread, running the pool's sync
    #: `reset` first (set by the facade; `None`: the message goes as it is).
    reset: Callable[[Any, bool], bool] | None = None
    #: Once the pool stopped: reads the counter's notes in the caller's thread
    #: (a lease the close left out is checked in: its resource closes).
    late: Callable[[], None] | None = None
    #: The counter's lock.
    lock: threading.Lock

    def attach(self, counter: Counter, replies: Replies, events: Any) -> threading.Lock:
        """Give callers the counter, with its one lock and the hooks it calls
        (see `_counter`); the lock, for the shell."""
        self.counter, self.events = counter, events
        counter.lock = self.lock = lock = threading.Lock()
        counter.claim = replies.claim
        counter.register = partial(replies.register, self.withdraw)  # bound once
        counter.wake = self.wake
        counter.context = get_contextvars
        counter.on_lost = self.lost
        inbox = cast(Mailbox, self.actor_inbox)
        inbox.checkin, inbox.lost = counter.checkin, self.lost
        return lock

    def tell_quietly(self, message: object) -> None:
        """Tell the supervisor `message`, unless it is gone (never raises)."""
        with contextlib.suppress(pykka.ActorDeadError):
            self.tell(message)

    def lost(self, lease: Any) -> None:
        """A lease was collected while out: the supervisor checks it in
        (`LeaseLost`); once it stopped, a thread of its own does, as a
        checkin would (this may run inside the pool's locked code), so a
        resource the close left to that lease is closed (never raises)."""
        try:
            self.tell(LeaseLost(lease))
        except pykka.ActorDeadError:
            broken = self.counter.exclusive  # its state is unknown
            name = f"pooler_actors:{self.pool_name}:lost"
            checkin = self.counter.checkin
            with contextlib.suppress(Exception):  # at exit: no new thread
                threading.Thread(
                    target=checkin, args=(lease, broken), name=name, daemon=True
                ).start()

    def wake(self) -> None:
        """Tell the supervisor that hit-path notes wait (never raises); once
        it stopped, read them here."""
        late = self.late
        if late is None:
            self.tell_quietly(Notes())
        elif self.lock.locked():  # perhaps by this very thread (a checkin
            # interrupted at the counter): read them in a thread of their own
            name = f"pooler_actors:{self.pool_name}:late"
            threading.Thread(target=late, name=name, daemon=True).start()
        else:
            late()

    def stopped(self, late: Callable[[], None]) -> None:
        """The supervisor stopped: `late` reads the notes of checkins from
        now on (in the caller's thread), and reads those that came already."""
        live_pools.discard(self)
        lock = threading.Lock()  # one late reader at a time

        def read() -> None:
            with lock:
                late()

        self.late = read
        self.wake()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the supervisor's thread to end (after a stop)."""
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(
                None if timeout is None else min(timeout, threading.TIMEOUT_MAX)
            )

    def ask(
        self, message: Any, *, block: bool = True, timeout: float | None = None
    ) -> Any:
        if type(message) is Acquire:  # an open key answers without a round trip
            value = self.counter.hit(message.key)
            if value is not MISS:
                return value if block else PoolFuture.done(value)
        elif type(message) is Checkin and self.reset is not None:
            # The pool's `reset` runs in the caller's thread, never the
            # supervisor's: the checkin is made here, as `Pool.checkin` does.
            done = self.reset(message.lease, message.broken)
            return done if block else PoolFuture.done(done)
        if block and threading.current_thread() is self.thread:
            raise RuntimeError(
                f"pool {self.pool_name!r} was called from its own thread (a "
                "structlog processor or a callback run by the pool); it cannot "
                "answer itself: call it from another thread or use block=False"
            )
        future: PoolFuture[Any] = PoolFuture()
        future.on_withdraw = self.withdraw
        cast(Mailbox, self.actor_inbox).put(Envelope(message, reply_to=future))
        if not block:
            return future
        return self.wait(future, timeout)

    def withdraw(self, future: PoolFuture[Any]) -> None:
        """Tell the supervisor that `future`'s caller gave up."""
        self.tell(Withdraw(future))

    def withdrawable(self, future: PoolFuture[Any]) -> PoolFuture[Any]:
        """`future`, which tells the supervisor when its caller gives up."""
        if future.on_withdraw is None:
            future.on_withdraw = self.withdraw
        return future

    def wait(self, future: PoolFuture[Any], timeout: float | None = None) -> Any:
        """The answer to a request; a caller that gives up (a timeout, an
        interrupt) withdraws it and is never granted anything afterwards."""
        self.withdrawable(future)
        try:
            return future.get(timeout=timeout)
        except pykka.Timeout:
            if future.withdraw(pykka.Timeout(f"{timeout} seconds")):
                raise
            return future.get()  # settled (or claimed) just before we gave up
        except BaseException as interrupt:
            # KeyboardInterrupt (or any other) while waiting: the caller gave
            # up, so it must never be granted anything afterwards.
            if future.withdraw(interrupt):
                raise
            return future.get()

    def tell(self, message: Any) -> None:
        if not self.is_alive():
            raise PoolClosedError(self.pool_name)
        self.actor_inbox.put(Envelope(message))


class PoolActor(pykka.ThreadingActor):
    """The supervisor's base: `start()` returns a [PoolRef][pooler_actors.PoolRef].

    pykka types `start()` as returning a plain `ActorRef`, whose `ask()` a
    type-checker sees as `Any | Future[Any]`; a `PoolRef`'s is `Any`.
    """

    @classmethod
    def start(cls, *args: Any, **kwargs: Any) -> PoolRef:
        """Start the actor (as pykka's `start`); returns its `PoolRef`."""
        return cast(PoolRef, super().start(*args, **kwargs))

    # pykka's hooks for actor implementors: our mailbox and reply futures.

    @staticmethod
    def _create_actor_inbox() -> Mailbox:
        return Mailbox()

    @staticmethod
    def _create_future() -> PoolFuture[Any]:
        return PoolFuture()


class Mailbox(queue.SimpleQueue[Envelope[Any]]):
    """The supervisor's inbox. Once closed, anything put in is answered at once.

    This closes pykka's window between an ask's "is it alive?" check and its
    `put`: a message that lands after the supervisor drained its inbox is
    answered with `PoolClosedError` by the sender itself (a stop with `None`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.closed_as: str | None = None  # the pool's name once closed
        #: The counter's checkin: a `Checkin` after the stop still checks in,
        #: as `Pool.checkin` does (set by `PoolRef.attach`).
        self.checkin: Callable[[Any, bool], bool] | None = None
        #: `PoolRef.lost`: a `LeaseLost` told just before the stop is not lost.
        self.lost: Callable[[Any], None] | None = None

    def put(
        self, item: Envelope[Any], block: bool = True, timeout: float | None = None
    ) -> None:
        super().put(item)
        if self.closed_as is not None:
            self.drain()

    def drain(self) -> None:
        """Answer everything still queued (the pool is closed)."""
        assert self.closed_as is not None
        while True:
            try:
                envelope = self.get_nowait()
            except queue.Empty:
                return
            reply, message = envelope.reply_to, envelope.message
            if type(message) is LeaseLost and self.lost is not None:
                self.lost(message.lease)
            if not isinstance(reply, PoolFuture):
                continue
            if is_stop(message) or type(message) is Shutdown:
                reply.try_set(None)
            elif type(message) is Checkin and self.checkin is not None:
                try:
                    reply.try_set(self.checkin(message.lease, message.broken))
                except Exception as error:  # another pool's lease
                    reply.try_fail(error)
            else:
                reply.try_fail(PoolClosedError(self.closed_as))


#: Pools started and not yet stopped, closed at exit if the program forgot.
live_pools: weakref.WeakSet[PoolRef] = weakref.WeakSet()


#: How long the exit hook waits for forgotten pools to close their idle
#: resources (never for held ones).
EXIT_WAIT = 5.0


@atexit.register
def _close_forgotten_pools() -> None:
    """Close, at interpreter exit, every pool the program forgot to close.

    Leases still out are not waited for: each is left to its holder (a
    `pool.close.lease_out` warning names it); idle resources get up to
    `EXIT_WAIT` seconds in all to close."""
    asked = []
    for ref in list(live_pools):
        with contextlib.suppress(Exception):
            asked.append(ref.ask(Shutdown(0.0), block=False))
    deadline = monotonic() + EXIT_WAIT
    for future in asked:
        with contextlib.suppress(Exception):
            future.get(timeout=max(0.0, deadline - monotonic()))


def _forget_pools_in_child() -> None:
    """After fork: the child has none of the pools' threads; its copies are
    closed (every call fails at once) and the parent's resources untouched."""
    for ref in list(live_pools):
        cast(Mailbox, ref.actor_inbox).closed_as = ref.pool_name
        ref.actor_stopped.set()
        # The parent's resources are not the child's; the lock may have been
        # held by a thread the child does not have.
        ref.counter.lock = ref.lock = threading.Lock()
        ref.counter.forget()
    live_pools.clear()


os.register_at_fork(after_in_child=_forget_pools_in_child)
