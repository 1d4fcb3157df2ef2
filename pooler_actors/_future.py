"""A light reply future for the supervisor, settled once, possibly deferred.

pykka sets an ask's reply when ``on_receive`` returns; the supervisor instead
keeps the future of a queued ``Acquire`` and settles it when a slot frees.
A caller that gives up *withdraws* the future: settling and withdrawing race
through one small lock, so exactly one of them wins and a caller that gave up
is never handed a resource.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import sys
import threading
import traceback
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pykka

from pooler_actors import _pykka
from pooler_actors._effects import Fail, Reply

if TYPE_CHECKING:
    from pooler_actors._pykka import OptExcInfo

__all__ = ["PoolFuture", "Replies"]

T = TypeVar("T")

_TIMEOUT_MAX = threading.TIMEOUT_MAX
_PENDING = 0
_VALUE = 1
_ERROR = 2
_CLAIMED = 3  # a checkin on the hit path settles it next (`claim`)
_OPEN = (_PENDING, _CLAIMED)
_ANSWERS = (Reply, Fail)  # the effects that settle a request's reply


class PoolFuture(pykka.Future[T]):
    """A one-shot future: one ``Lock`` to wait on, one to make settling atomic.

    Lighter than pykka's ``Condition``-based future, awaitable without
    blocking the event loop, and withdrawable by a caller that gives up.
    """

    # Defaults a new future shares until set (a checkout that waits makes one).
    _state = _PENDING
    _value: Any = None
    _error: BaseException | None = None
    _callbacks: list[Callable[[PoolFuture[T]], None]] | None = None
    withdrawn = False
    #: Called once, with this future, when the caller gives up (set by the
    #: pool's ref: it tells the supervisor, which drops the caller from its
    #: queues). Given the future rather than closing over it: a future that
    #: refers to itself is a reference cycle, freed only by the garbage
    #: collector (a cycle per wait made the collector run every few dozen).
    on_withdraw: Callable[[PoolFuture[Any]], None] | None = None
    #: The supervisor's number for the request (set and read in its thread).
    cid = 0
    #: While its callbacks run: settled by a checkin that claimed it (`fulfil`).
    handing = False

    def __init__(self) -> None:  # (not pykka's: see `_pykka.init_future`)
        _pykka.init_future(self)
        self._guard = threading.Lock()
        self._done = threading.Lock()
        self._done.acquire()  # held until settled; get() waits on it

    def __repr__(self) -> str:
        state = ("pending", "value", "error", "claimed")[self._state]
        return f"<PoolFuture {state}{' withdrawn' if self.withdrawn else ''}>"

    @classmethod
    def done(cls, value: T) -> PoolFuture[T]:
        """A future already settled with `value`."""
        future: PoolFuture[T] = cls()
        future.try_set(value)
        return future

    @property
    def pending(self) -> bool:
        """Whether the future is neither settled nor withdrawn."""
        return self._state == _PENDING

    def get(self, *, timeout: float | None = None) -> T:
        """Wait for the value; raise the error, or ``pykka.Timeout``."""
        if _pykka.get_hook(self) is not None:
            return super().get(timeout=timeout)
        if self._state in _OPEN:
            # A lock wait overflows past TIMEOUT_MAX (~292 years); cap it there.
            wait = -1.0 if timeout is None else min(max(0.0, timeout), _TIMEOUT_MAX)
            if not self._done.acquire(timeout=wait):
                raise pykka.Timeout(f"{timeout} seconds")
            self._done.release()
        if self._error is not None:
            raise self._error
        return cast("T", self._value)

    def try_set(self, value: Any) -> bool:
        """Settle with ``value``; ``False`` if already settled or withdrawn."""
        return self._settle(_VALUE, value, None)

    def try_fail(self, error: BaseException) -> bool:
        """Settle with ``error``; ``False`` if already settled or withdrawn."""
        return self._settle(_ERROR, None, error)

    def set(self, value: Any | None = None) -> None:
        if not self._settle(_VALUE, value, None) and not self.withdrawn:
            raise queue.Full("future already settled")

    def set_exception(self, exc_info: OptExcInfo | None = None) -> None:
        if exc_info is None:
            exc_info = sys.exc_info()
        error = exc_info[1]
        if error is None:
            assert exc_info[0] is not None
            error = exc_info[0]()
        self._settle(_ERROR, None, error)

    def claim(self) -> bool:
        """Reserve the settling for the caller of `fulfil`, which must follow
        at once; `False` if settled, withdrawn or claimed already.

        A checkin on the hit path hands its resource straight to a caller
        queued for the key this way (`Counter._hand_on`): it claims the
        caller's future and notes the hand-over for the supervisor under the
        counter's lock, then fulfils it once the lock is released, so the
        caller's later notes follow that one. A withdrawal fails meanwhile;
        the caller then waits for the value, a moment away.
        """
        with self._guard:
            if self._state != _PENDING:
                return False
            self._state = _CLAIMED
            return True

    @property
    def claimed(self) -> bool:
        """Whether the future is claimed and not yet fulfilled."""
        return self._state == _CLAIMED

    def fulfil(self, value: Any) -> None:
        """Settle a future this thread claimed with `value`.

        A user's done-callback runs on a thread of its own: the claimer is a
        caller's checkin, which must not wait for it.
        """
        self._settle(_VALUE, value, None, claimed=True)

    def withdraw(self, error: BaseException) -> bool:
        """Give up: settle with ``error`` unless already settled.

        Returns ``True`` if the withdrawal won; ``on_withdraw`` is then
        called, so the supervisor drops the caller from its queue at once.
        """
        if not self._settle(_ERROR, None, error, withdraw=True):
            return False
        if self.on_withdraw is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                self.on_withdraw(self)
        return True

    def add_done_callback(self, fn: Callable[[PoolFuture[T]], None]) -> None:
        """Call `fn(self)` once settled (now, in this thread, if already done).

        A callback due when the pool settles the future runs on a thread of
        its own, never on the pool's: a callback that blocks, or that calls
        back into the pool, cannot stall or deadlock it.
        """
        self._on_done(lambda future: _off_pool_thread(fn, future))

    def _on_done(self, fn: Callable[[PoolFuture[T]], None]) -> None:
        """Call `fn(self)` once settled, in the settling thread: ours only,
        for callbacks that never block (waking an event loop)."""
        with self._guard:
            if self._state in _OPEN:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(fn)
                return
        fn(self)

    def _settle(
        self,
        state: int,
        value: Any,
        error: BaseException | None,
        withdraw: bool = False,
        claimed: bool = False,
    ) -> bool:
        with self._guard:
            if self._state != (_CLAIMED if claimed else _PENDING):
                return False
            self._value = value
            self._error = error
            self._state = state
            self.withdrawn = withdraw
            callbacks = self._callbacks
            self._callbacks = None
        self._done.release()
        if callbacks:
            self.handing = claimed  # (`_off_pool_thread` reads it)
            for fn in callbacks:
                _run_callback(fn, self)
            self.handing = False
        return True

    def __await__(self) -> Generator[Any, None, T]:
        """Await without blocking the event loop; cancelling withdraws."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()

        def wake(_: PoolFuture[T]) -> None:
            # The caller's loop may be closed by now (a task never awaited to
            # the end): nobody is left to wake.
            if not loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_resolve, waiter)

        self._on_done(wake)
        try:
            yield from waiter.__await__()
        except asyncio.CancelledError:
            self.withdraw(asyncio.CancelledError())
            raise
        return self.get(timeout=0)

    __iter__ = __await__


def _run_callback(
    fn: Callable[[PoolFuture[Any]], None], future: PoolFuture[Any]
) -> None:
    """Run a done-callback; one that raises must not hurt the settling thread.

    Futures are settled in the supervisor's thread: an exception escaping a
    caller's callback would otherwise stop the pool for everyone.
    """
    try:
        fn(future)
    except Exception:
        with contextlib.suppress(Exception):
            sys.stderr.write(
                f"pooler_actors: a done-callback of {future!r} raised:\n"
                + traceback.format_exc()
            )


def _off_pool_thread(
    fn: Callable[[PoolFuture[Any]], None], future: PoolFuture[Any]
) -> None:
    """Run a user's callback, moving it off a pool thread (or a checkin
    handing its resource on) if it is on one."""
    if future.handing or threading.current_thread().name.startswith("pooler_actors:"):
        threading.Thread(
            target=_run_callback,
            args=(fn, future),
            name="pooler_actors-callback",
            daemon=True,
        ).start()
    else:
        _run_callback(fn, future)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Replies(dict[int, tuple[PoolFuture[Any], bool]]):
    """The supervisor's reply futures by request number (cid), each with
    whether a grant it could not deliver goes back to the core."""

    def __init__(self) -> None:
        super().__init__()
        #: Request numbers, taken by the supervisor and by checkouts that
        #: queue themselves; like the dict, used only under the counter's lock.
        self.cids = itertools.count(1)

    def register(
        self, withdraw: Callable[[PoolFuture[Any]], None]
    ) -> tuple[int, PoolFuture[Any]]:
        """`Published.register`: a new request number and its reply future,
        for a checkout that queues itself in its own thread (`Counter.enqueue`); the
        future calls `withdraw(future)` when its caller gives up."""
        future: PoolFuture[Any] = PoolFuture()
        future.cid = cid = next(self.cids)
        future.on_withdraw = withdraw
        self[cid] = (future, True)
        return cid, future

    def claim(self, cid: int) -> Callable[[Any], None] | None:
        """`Counter.claim`: the `fulfil` of request `cid`'s future, claimed;
        `None` if its caller gave up. Called in a caller's thread, under the
        counter's lock: a checkin handing its resource on. Claiming again
        before the fulfil (a checkin interrupted just after its claim) gives
        the same `fulfil`. The request is forgotten here once the core has
        read the checkin's note (`PoolCore.handed`)."""
        entry = self.get(cid)
        if entry is None:
            return None
        future = entry[0]
        if not (future.claim() or future.claimed):
            return None  # it gave up: the core may still grant it (undelivered)
        return future.fulfil

    def take_for(
        self,
        effects: list[Any],
        handed: list[int],
        taken: dict[int, tuple[PoolFuture[Any], bool]],
    ) -> None:
        """After a core event, under the counter's lock: forget the requests
        a checkin answered at the counter (`handed`, emptied), and move the
        reply of each `Reply` or `Fail` in `effects` into `taken`, for the
        shell to settle outside the lock."""
        for cid in handed:
            self.pop(cid, None)
        handed.clear()
        for effect in effects:
            if type(effect) in _ANSWERS and effect.cid in self:
                taken[effect.cid] = self.pop(effect.cid)

    def take_grants(self, *, every: bool = False) -> list[PoolFuture[Any]]:
        """Forget every request still waiting for a grant (or `every` one):
        their futures, to fail outside the counter's lock."""
        taken = [cid for cid, (_, grant) in self.items() if grant or every]
        return [self.pop(cid)[0] for cid in taken]
