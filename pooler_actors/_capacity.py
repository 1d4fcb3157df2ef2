"""A cap for a whole fleet: what a capacity engine offers, and the driver a pool runs.

Two halves, neither of which imports redis:

- [GlobalCapacity][pooler_actors.GlobalCapacity] is the small protocol an
  engine implements (one is [RedisCapacity][pooler_actors.redis.RedisCapacity]).
  Its calls block on the network and are made from one thread only.
- `CapacityDriver` is the side a pool talks to. Its methods never block: they
  record a request and wake the driver's own thread, which does every network
  call (the pool's supervisor thread never does network I/O) and reports the
  outcome through three callbacks, also on that thread.

A reservation's life in the driver: `reserve(rid)` puts it in `_new`; the
thread moves it to `_waiting` (its token is now, or soon, queued on the
server) and, when the engine grants the token, to `_held` and calls
`on_granted`. `cancel`/`release` take it out of whichever map holds it and
schedule the server-side withdrawal of its token. Every map is guarded by one
lock that is never held across an engine call or a callback.
"""

from __future__ import annotations

import math
import threading
import time
import traceback
import uuid
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from pooler_actors._events import Events
from pooler_actors.errors import CapacityUnavailable

__all__ = ["CapacityDriver", "GlobalCapacity", "OnUnavailable"]

OnUnavailable = Literal["closed", "open"]

# While reservations wait for a global slot, the driver's thread listens for a
# wake-up in slices this long, then looks at local requests again: the bound
# on how late a reserve, cancel or close is noticed.
_SLICE = 0.01

# A waiting reservation asks the engine again at least this often even without
# a wake-up (pub/sub delivers at most once; a lost message must not strand it).
_MAX_POLL = 1.0

# Capacities bound to a driver, by id: one engine serves one driver at a time
# (its calls are made from that driver's thread only). The driver holds its
# capacity, so while the weak reference is alive the id is that capacity's.
_BOUND: dict[int, weakref.ref[CapacityDriver]] = {}
_BOUND_LOCK = threading.Lock()


@runtime_checkable
class GlobalCapacity(Protocol):
    """A fleet-wide semaphore that a pool takes a slot from per resource.

    Implement it to put the cap of a pool fleet on an engine of your own;
    [RedisCapacity][pooler_actors.redis.RedisCapacity] is the implementation
    shipped with the `redis` extra.

    Slots are named by tokens, strings the caller makes unique across the
    fleet. A token is first *waiting* (in a FIFO queue shared by the fleet,
    under a short lease the caller keeps renewing) and then *held* (a slot,
    under a lease of `lease_ttl` seconds the caller keeps renewing). A lease
    that is not renewed in time ends: the slot or the place in the queue goes
    to the next token, so a process that dies gives its slots back on its own.

    Every method is blocking, is called from one thread at a time (the pool's
    capacity thread), and returns or raises within a bounded time (for Redis,
    about its socket timeout). A method raises
    [CapacityUnavailable][pooler_actors.CapacityUnavailable] when the engine
    cannot answer; any other exception means the request itself is wrong
    (for example a limit that differs from the fleet's) and always fails
    closed.
    """

    @property
    def name(self) -> str:
        """The semaphore's name, shared by every process of the fleet."""
        ...

    @property
    def lease_ttl(self) -> float:
        """Seconds a lease lasts unless renewed; renewed every third of it."""
        ...

    @property
    def on_unavailable(self) -> OnUnavailable:
        """While unreachable: `"closed"` fails creations, `"open"` lets them go."""
        ...

    def try_acquire(self, waiting: Sequence[str]) -> list[str]:
        """Queue new tokens, refresh the waiters' leases, grant from the head.

        Tokens not known to the engine join the back of the fleet's queue in
        the order given; known ones keep their place and get a fresh lease.
        The head of the queue is then granted while fewer than the limit
        hold a slot (also tokens of other processes, which learn of it
        through `wait_for_change`).

        Returns:
            The given tokens that hold a slot now.
        """
        ...

    def cancel(self, tokens: Sequence[str]) -> None:
        """Withdraw waiting tokens; a token granted meanwhile gives its slot back."""
        ...

    def release(self, tokens: Sequence[str]) -> None:
        """Give back the slots of held tokens (unknown tokens are ignored)."""
        ...

    def renew(self, held: Sequence[str], waiting: Sequence[str]) -> list[str]:
        """Extend the leases of held and waiting tokens, in one round trip.

        A held token whose lease already ended (the process was paused past
        it, or the server lost its data) takes a slot again if one is free;
        a waiting token the engine no longer knows joins the back of the
        queue again.

        Returns:
            The held tokens that lost their slot.
        """
        ...

    def wait_for_change(self, timeout: float) -> bool:
        """Block up to `timeout` s for news that a waiting token may be granted.

        Listens on a channel subscribed before the first `try_acquire`. When
        notifications are not available it sleeps and returns `False`: the
        caller polls `try_acquire` on its own schedule anyway.

        Returns:
            Whether `try_acquire` is worth calling now.
        """
        ...

    def close(self) -> None:
        """Drop connections; the engine reconnects lazily if used again."""
        ...


class CapacityDriver:
    """Runs a pool's side of a [GlobalCapacity][pooler_actors.GlobalCapacity].

    The pool calls the non-blocking methods from any thread; the driver's own
    thread (started on the first `reserve`, named
    `pooler_actors:<pool_name>:capacity`) talks to the engine and calls back:

    - `on_granted(rid, held)`: the reservation `rid` may create its
      resource. `held` is `False` when the engine was unreachable and its
      `on_unavailable` is `"open"`: no global slot was taken, none needs
      giving back (`release(rid)` is still harmless).
    - `on_unavailable(rid, exc)`: the engine was unreachable (or refused, for
      example over a limit mismatch) and the reservation failed closed;
      `exc` is a fresh [CapacityUnavailable][pooler_actors.CapacityUnavailable]
      whose `__cause__` is the engine's error.
    - `on_lost(rid)`: the global lease of a held `rid` ended (the process was
      paused past `lease_ttl`, or the server lost its data and the slot was
      taken meanwhile). The driver forgets `rid`.

    Exactly one of `on_granted`/`on_unavailable` follows each `reserve`,
    unless `cancel` came first. A callback may still arrive for a rid just
    cancelled or released, if the engine answered as the pool withdrew it:
    the driver has already given the slot back, so the pool ignores it.
    No callback starts once `close` was called. A callback may call the
    driver's methods (no lock is held while it runs).

    Tokens are `<driver uuid>:<rid>`: rids of several processes never clash;
    a rid must not be reserved again while it is reserved or held.
    """

    def __init__(
        self,
        capacity: GlobalCapacity,
        *,
        pool_name: str,
        on_granted: Callable[[int, bool], None],
        on_unavailable: Callable[[int, BaseException], None],
        on_lost: Callable[[int], None],
        events: Any = None,
    ) -> None:
        ttl = capacity.lease_ttl
        if not (isinstance(ttl, int | float) and math.isfinite(ttl) and ttl > 0):
            raise ValueError(f"capacity lease_ttl must be > 0 and finite, not {ttl!r}")
        if capacity.on_unavailable not in ("closed", "open"):
            raise ValueError(
                "capacity on_unavailable must be 'closed' or 'open', "
                f"not {capacity.on_unavailable!r}"
            )
        with _BOUND_LOCK:
            ref = _BOUND.get(id(capacity))
            user = None if ref is None else ref()
            if user is not None:
                raise ValueError(
                    f"global capacity {capacity.name!r} already serves pool "
                    f"{user.pool_name!r}; give each pool its own capacity object "
                    "(the same name and limit share one global cap)"
                )
            _BOUND[id(capacity)] = weakref.ref(self)
        self._cap = capacity
        self.pool_name: str = pool_name
        self._on_granted = on_granted
        self._on_unavailable = on_unavailable
        self._on_lost = on_lost
        self._prefix = f"{uuid.uuid4().hex}:"
        self._period = float(ttl) / 3
        self._poll = min(self._period, _MAX_POLL)
        # While the engine is down a new reservation fails at once, unless a
        # probe (any engine call) is this old: it then tries the engine.
        self._probe = self._poll
        self._cond = threading.Condition(threading.Lock())
        self._new: dict[int, None] = {}
        self._waiting: dict[int, str] = {}
        self._held: dict[int, str] = {}
        # Tokens to withdraw from the server, each with the time after which
        # its lease has surely ended and retrying is pointless.
        self._cancels: dict[str, float] = {}
        self._releases: dict[str, float] = {}
        self._closing = False
        self._thread: threading.Thread | None = None
        # The pool's own emitter: quiet by default like every pool event.
        self._log = events if events is not None else Events(pool_name)

    # -- the pool's side: never blocks --------------------------------------

    @property
    def held(self) -> int:
        """Global slots this driver holds.

        Safe from any thread: read under the driver's lock, which is never
        held across network I/O or a callback, so this waits microseconds.
        """
        with self._cond:
            return len(self._held)

    @property
    def waiting(self) -> int:
        """Reservations waiting for a global slot (read like `held`)."""
        with self._cond:
            return len(self._new) + len(self._waiting)

    def reserve(self, rid: int) -> None:
        """Ask for a global slot for `rid` (FIFO, fleet-wide); returns at once.

        Raises:
            ValueError: `rid` is already reserved or held.
            RuntimeError: The driver is closed.
        """
        with self._cond:
            if self._closing:
                raise RuntimeError(
                    f"capacity driver of pool {self.pool_name!r} is closed"
                )
            if rid in self._new or rid in self._waiting or rid in self._held:
                raise ValueError(f"rid {rid} is already reserved or holds a slot")
            self._new[rid] = None
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run,
                    name=f"pooler_actors:{self.pool_name}:capacity",
                    daemon=True,
                )
                self._thread.start()
            self._cond.notify_all()

    def cancel(self, rid: int) -> None:
        """Withdraw `rid`'s reservation; if granted meanwhile, give the slot back.

        Idempotent; returns at once.
        """
        self._forget(rid)

    def release(self, rid: int) -> None:
        """Give back `rid`'s slot. Idempotent; fine for an unknown rid.

        A rid still waiting is withdrawn, as by `cancel`.
        """
        self._forget(rid)

    def close(self, timeout: float) -> None:
        """Give back every slot, withdraw every reservation, end the thread.

        Returns within `timeout` s: if the engine is slow to answer, the
        thread finishes giving back in the background (what it cannot give
        back expires with its lease).
        """
        with self._cond:
            self._closing = True
            thread = self._thread
            self._cond.notify_all()
        if thread is None:
            self._unbind()
        else:
            thread.join(max(0.0, timeout))

    # -- internals ------------------------------------------------------------

    def _forget(self, rid: int) -> None:
        deadline = time.monotonic() + self._cap.lease_ttl
        with self._cond:
            if rid in self._new:
                del self._new[rid]  # it never reached the engine
                return
            token = self._waiting.pop(rid, None)
            if token is not None:
                self._cancels[token] = deadline
            token = self._held.pop(rid, None)
            if token is not None:
                self._releases[token] = deadline
            self._cond.notify_all()

    def _unbind(self) -> None:
        with _BOUND_LOCK:
            ref = _BOUND.get(id(self._cap))
            if ref is not None and ref() is self:
                del _BOUND[id(self._cap)]

    def _rid(self, token: str) -> int | None:
        if not token.startswith(self._prefix):
            return None
        try:
            return int(token[len(self._prefix) :])
        except ValueError:
            return None

    def _call(self, callback: Callable[..., None], *args: object) -> None:
        if self._closing:
            return  # the pool no longer listens
        try:
            callback(*args)
        except Exception:
            self._log.error(
                "pool.global.callback_failed", error=traceback.format_exc(), args=args
            )

    def _unavailable(self, error: BaseException) -> CapacityUnavailable:
        """A fresh exception per reservation, so callers never share a traceback."""
        if isinstance(error, CapacityUnavailable):
            fresh = CapacityUnavailable(error.capacity, error.reason)
            fresh.__cause__ = error.__cause__ or error
        else:
            fresh = CapacityUnavailable(
                self._cap.name, f"{type(error).__name__}: {error}"
            )
            fresh.__cause__ = error
        return fresh

    def _fail_waiting(self, error: BaseException) -> None:
        """The engine failed: every waiting reservation gets its answer now."""
        # Fail open only when the engine was unreachable, never over a refusal
        # such as a limit mismatch (a configuration error stays an error).
        fail_open = self._cap.on_unavailable == "open" and isinstance(
            error, CapacityUnavailable
        )
        deadline = time.monotonic() + self._cap.lease_ttl
        with self._cond:
            failed = list(self._waiting.items())
            self._waiting.clear()
            # The server may still have queued (or, for a request that timed
            # out, may yet queue) these tokens: withdraw them once it answers.
            for _rid, token in failed:
                self._cancels[token] = deadline
        for rid, _token in failed:
            if fail_open:
                self._call(self._on_granted, rid, False)
            else:
                self._call(self._on_unavailable, rid, self._unavailable(error))

    def _granted(self, tokens: list[str]) -> None:
        deadline = time.monotonic() + self._cap.lease_ttl
        granted = []
        with self._cond:
            for token in tokens:
                rid = self._rid(token)
                if rid is not None and self._waiting.get(rid) == token:
                    del self._waiting[rid]
                    self._held[rid] = token
                    granted.append(rid)
                elif token not in self._cancels:
                    # A stale grant (the rid was withdrawn as it came): give it back.
                    self._releases[token] = deadline
        for rid in granted:
            self._call(self._on_granted, rid, True)

    def _lost(self, tokens: list[str]) -> None:
        lost = []
        with self._cond:
            for token in tokens:
                rid = self._rid(token)
                if rid is not None and self._held.get(rid) == token:
                    del self._held[rid]
                    lost.append(rid)
        for rid in lost:
            self._call(self._on_lost, rid)

    def _run(self) -> None:
        cap = self._cap
        down: BaseException | None = None  # the last engine call's failure
        last_attempt = -math.inf
        next_renew = time.monotonic() + self._period
        next_poll = 0.0
        woken = False
        try:
            while True:
                with self._cond:
                    if self._closing:
                        break
                    now = time.monotonic()
                    new = bool(self._new)
                    for rid in self._new:
                        self._waiting[rid] = f"{self._prefix}{rid}"
                    self._new.clear()
                    cancels = _due(self._cancels, now)
                    releases = _due(self._releases, now)
                    waiting = list(self._waiting.values())
                probe_due = down is None or now - last_attempt >= self._probe

                # 1. Give back. Before trying, so a freed slot serves the queue.
                if (cancels or releases) and probe_due:
                    last_attempt = now
                    try:
                        if releases:
                            cap.release(releases)
                        if cancels:
                            cap.cancel(cancels)
                    except Exception as exc:
                        down = exc
                        self._fail_waiting(exc)
                        waiting = []
                    else:
                        down = None
                        with self._cond:
                            for token in releases:
                                self._releases.pop(token, None)
                            for token in cancels:
                                self._cancels.pop(token, None)

                # 2. Ask for slots: for new reservations, on a wake-up, or on
                # the polling schedule.
                now = time.monotonic()
                if waiting and (new or woken or now >= next_poll):
                    woken = False
                    if down is not None and now - last_attempt < self._probe:
                        self._fail_waiting(down)  # no new attempt this soon
                    else:
                        last_attempt = now
                        try:
                            granted = cap.try_acquire(waiting)
                        except Exception as exc:
                            down = exc
                            self._fail_waiting(exc)
                        else:
                            down = None
                            self._granted(granted)
                        next_poll = time.monotonic() + self._poll

                # 3. Renew every lease, held and waiting, in one batch.
                now = time.monotonic()
                if now >= next_renew:
                    with self._cond:
                        held = list(self._held.values())
                        waiting = list(self._waiting.values())
                    if not (held or waiting):
                        next_renew = now + self._period
                    elif down is not None and now - last_attempt < self._probe:
                        next_renew = last_attempt + self._probe
                    else:
                        last_attempt = now
                        try:
                            lost = cap.renew(held, waiting)
                        except Exception as exc:
                            # Open resources keep serving; a later renewal
                            # finds out whether their slots survived.
                            down = exc
                            self._fail_waiting(exc)
                            next_renew = time.monotonic() + self._probe
                        else:
                            down = None
                            self._lost(lost)
                            next_renew = time.monotonic() + self._period

                # 4. Sleep until the next thing to do, or a local request.
                with self._cond:
                    if self._closing or self._new:
                        continue
                    now = time.monotonic()
                    wake = next_renew if (self._held or self._waiting) else math.inf
                    if self._cancels or self._releases:
                        wake = (
                            now
                            if down is None
                            else min(wake, last_attempt + self._probe)
                        )
                    if wake <= now:
                        continue
                    if not self._waiting:
                        self._cond.wait(None if wake == math.inf else wake - now)
                        continue
                    wake = min(wake, next_poll)
                # Reservations wait: listen for the engine's news in short
                # slices, so local requests are seen within _SLICE.
                slice_ = max(0.0, min(_SLICE, wake - now))
                try:
                    woken = cap.wait_for_change(slice_) or woken
                except Exception:
                    woken = True
                    time.sleep(slice_)
        except BaseException:
            self._log.error("pool.global.driver_failed", error=traceback.format_exc())
            raise
        finally:
            self._shut_down()

    def _shut_down(self) -> None:
        """Give back whatever is held or queued; bounded by the engine's timeouts."""
        with self._cond:
            self._closing = True
            release = [*self._held.values(), *self._releases]
            cancel = [*self._waiting.values(), *self._cancels]
            self._new.clear()
            self._waiting.clear()
            self._held.clear()
            self._releases.clear()
            self._cancels.clear()
        cap = self._cap
        try:
            if release:
                cap.release(release)
            if cancel:
                cap.cancel(cancel)
        except Exception as exc:
            # Unreachable: the leases end on their own within lease_ttl.
            self._log.warning("pool.global.close_incomplete", error=repr(exc))
        try:
            cap.close()
        except Exception:
            self._log.error("pool.global.close_failed", error=traceback.format_exc())
        self._unbind()


def _due(pending: dict[str, float], now: float) -> list[str]:
    """The tokens of `pending` still to send, those whose lease ended dropped."""
    for token in [t for t, until in pending.items() if until <= now]:
        del pending[token]  # its lease has ended on the server by now
    return list(pending)
