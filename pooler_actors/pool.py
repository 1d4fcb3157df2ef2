"""`Pool`: the synchronous facade with the Go package's method set, and leases.

It holds no pool state of its own; every call is one message to the
supervisor, whose `ActorRef` is [Pool.actor_ref][pooler_actors.Pool.actor_ref].
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Generic, Self, cast, overload

from pooler_actors._counter import MISS, Counter
from pooler_actors._facade import FacadeBase, K, T
from pooler_actors._loop import is_async_callable
from pooler_actors.lease import Lease
from pooler_actors.messages import (
    Acquire,
    Checkout,
    Contains,
    GetStats,
    ListResources,
    PopStats,
    Prewarm,
    Refresh,
    Release,
    ReleaseAll,
    Resize,
    check_timeout,
)
from pooler_actors.options import PoolOptions, build_options
from pooler_actors.stats import Stats

__all__ = ["Pool"]


class Pool(FacadeBase[K, T]):
    """A keyed pool of resources, safe to use from any number of threads.

    `Pool(factory, max_open_resources=3, health_check_interval=30)` starts a
    [PoolSupervisor][pooler_actors.PoolSupervisor]; the options are those of
    [PoolOptions][pooler_actors.PoolOptions]. `acquire` shares one resource
    per key among all callers (the Go model); `lease` holds one for a block.
    The factory and the resources are sync: an `async def` factory is a
    `TypeError` here (use [AsyncPool][pooler_actors.AsyncPool]).

    Example:
        ```python
        with Pool(connect, max_open_resources=5, max_holders=1) as pool:
            with pool.lease("tenant-a", timeout=2.0) as conn:
                conn.execute("SELECT 1")
        ```
    """

    @overload
    def __init__(
        self: Pool[K, T],
        factory: Callable[[K], T],
        *,
        options: PoolOptions | None = None,
        logger: Any = None,
        **option_fields: Any,
    ) -> None: ...

    @overload
    def __init__(
        self: Pool[K, T],
        factory: Callable[[], T],
        *,
        options: PoolOptions | None = None,
        logger: Any = None,
        **option_fields: Any,
    ) -> None: ...

    def __init__(
        self,
        factory: Callable[[K], T] | Callable[[], T],
        *,
        options: PoolOptions | None = None,
        logger: Any = None,
        **option_fields: Any,
    ) -> None:
        opts = build_options(options, option_fields)
        for name in ("reset", "check"):
            hook = getattr(opts, name)
            if hook is not None and is_async_callable(hook):
                raise TypeError(
                    f"{name}={hook!r} is async def: Pool runs it in the "
                    "caller's thread, so use AsyncPool (or a sync one)"
                )
        super().__init__(factory, options=opts, logger=logger)
        if opts.reset is not None:  # actors' `Checkin` messages run it too
            self._ref.reset = self.checkin
        #: The counter, if a lease block may take the block path (no lease:
        #: `_counter_blocks`): a shared pool with no option that needs one.
        needs_lease = (opts.check, opts.reset, opts.leak_warning_after) != (None,) * 3
        self._blocks = None if needs_lease or not opts.shared else self._counter

    def acquire(self, key: K, timeout: float | None = None) -> T:
        """Return the shared resource for `key`, creating it or waiting for a slot.

        Allowed when `max_holders is None` and `max_per_key == 1`; otherwise
        use [lease][pooler_actors.Pool.lease].

        Raises:
            AcquireTimeout: `timeout` seconds passed first.
            FactoryError: the factory failed (`__cause__` says why).
            TooManyWaiters: `max_waiting` callers already wait.
            PoolClosedError: the pool is closed.
            TypeError: an unhashable key, or a pool of leases.
            ValueError: a negative timeout.
        """
        value: T = self._counter.hit(key)  # (typed here: no cast call on a hit)
        if value is MISS:
            message = Acquire(key, timeout)  # checks the key and the timeout
            future = self._ref.ask(message, block=False)
            value = self._grant(future, key, self._timeout(message.timeout))
        elif timeout is not None:
            check_timeout(timeout)  # a bad one is an error, hit or not
        return value

    def checkout(self, key: K, timeout: float | None = None) -> Lease[K, T]:
        """Hold one resource of `key` until [checkin][pooler_actors.Pool.checkin].

        With the `check` option, the resource is checked first (here, in
        this thread); one that fails is discarded and another taken, within
        `timeout`.

        Raises as [acquire][pooler_actors.Pool.acquire] does.
        """
        options = self.options
        wait = options.acquire_timeout if timeout is None else self._timeout(timeout)
        check = options.check
        if check is None and options.leak_warning_after is None:
            return self._checkout(key, timeout, wait)  # (the common case)
        tries = self._checks(key, timeout, wait)
        while True:
            lease = self._checkout(key, timeout, next(tries))
            try:
                if check is not None:
                    check(lease.resource)
            except BaseException as error:
                self._counter.checkin(lease, True)
                if not isinstance(error, Exception):
                    raise
                self._hook_failed("pool.lease.check_failed", lease, error)
                continue
            return self._watched(lease)

    def _checkout(
        self, key: K, timeout: float | None, wait: float | None
    ) -> Lease[K, T]:
        lease = self._counter.take(key)
        if lease is MISS:  # it must wait: at the counter if it may
            asked = check_timeout(timeout) if wait is None else wait
            future = self._queue_self(key, asked)
            if future is MISS:
                future = self._ref.ask(Checkout(key, asked), block=False)
            lease = self._grant(future, key, wait)
        return cast("Lease[K, T]", lease)

    def checkin(self, lease: Lease[K, T], broken: bool = False) -> bool:
        """Give `lease` back; `broken=True` retires its resource.

        With the `reset` option, `reset(resource)` runs first, here, before
        the resource serves anyone else; if it raises, the resource is
        checked in as broken (an `Exception` is logged, not raised). Never
        waits for the supervisor. Returns `False` if it was already checked
        in (a first checkin after `drain_timeout` closed the resource, or
        after the pool closed, returns `True` and changes nothing).

        Raises:
            TypeError: `lease` is not a `Lease` (say, `lease.resource`).
            ValueError: the lease is of another pool.
        """
        reset = self.options.reset
        if reset is None or broken:
            return self._counter.checkin(lease, broken)
        if not self._counter.hold(lease):
            return False
        try:
            reset(lease.resource)
        except BaseException as error:
            self._counter.checkin(lease, True, reset=True)
            if not isinstance(error, Exception):
                raise
            self._hook_failed("pool.lease.reset_failed", lease, error)
            return True
        return self._counter.checkin(lease, False, reset=True)

    def lease(self, key: K, timeout: float | None = None) -> LeaseBlock[K, T]:
        """`with pool.lease(key) as resource:` holds it for the block.

        An exception for which the `is_broken` option returns `True` checks
        the resource in as broken. On a shared pool whose key is open, the
        block holds its place without a lease object (unless the `check`,
        `reset` or `leak_warning_after` option, or debug logging, wants
        one): the same holder for the pool, at a fraction of the cost.
        """
        return LeaseBlock(self, key, timeout, self._blocks)

    def release(self, key: K) -> bool:
        """Retire `key`'s resources; `True` if one was open.

        Returns once each is closed, or retired if held (never waits for
        holders: the caller may be one).
        """
        return cast(bool, self._ref.ask(Release(key)))

    def contains(self, key: K) -> bool:
        """Whether a resource exists (open or being created) for `key`."""
        return cast(bool, self._ref.ask(Contains(key)))

    def release_all(self) -> None:
        """Retire every resource; returns once each is closed or, if held, retired."""
        self._ref.ask(ReleaseAll())

    def stats(self) -> Stats:
        """A snapshot of the pool's gauges and counters."""
        return cast(Stats, self._ref.ask(GetStats()))

    def pop_stats(self) -> Stats:
        """The stats, with the counters since the last `pop_stats()` (since
        the start for the first), which resets them; gauges are current values.

        `stats()` is unaffected: its counters stay cumulative.
        """
        return cast(Stats, self._ref.ask(PopStats()))

    def resize(self, max_open_resources: int) -> None:
        """Set the cap at run time; returns when done.

        Growing frees slots at once (waiting callers are served). Shrinking
        retires resources until at most `max_open_resources` are in service:
        idle ones first (least recently used first), then creations nobody
        waits for, then held ones; a held one is never closed under its
        holders but at its last checkin. Until then the cap is exceeded only
        by resources leaving (retiring or closing), and no creation starts.
        Returns once every resource it retired is closed, or retiring with
        holders. `stats().max_open_resources` is the new cap.

        Raises:
            TypeError: not an int.
            ValueError: below 1, or below `max_per_key` (nothing changes).
            PoolClosedError: the pool is closed.
        """
        self._ref.ask(Resize(max_open_resources))

    def all(self) -> Iterator[tuple[K, T]]:
        """Iterate `(key, resource)` over a snapshot, in creation order."""
        return iter(cast(list[tuple[K, T]], self._ref.ask(ListResources())))

    def walk(
        self,
    ) -> tuple[Callable[[], tuple[K | None, T | None, bool]], Callable[[], None]]:
        """A pull iterator over a snapshot: `next, stop = pool.walk()`.

        `next()` returns `(key, resource, True)` per resource, then
        `(None, None, False)`; `stop()` ends the iteration early.
        """
        items: Iterator[tuple[K, T]] | None = self.all()

        def next_() -> tuple[K | None, T | None, bool]:
            nonlocal items
            if items is not None:
                for key, value in items:
                    return key, value, True
                items = None
            return None, None, False

        def stop() -> None:
            nonlocal items
            items = None

        return next_, stop

    def prewarm(self, keys: Iterable[K]) -> dict[K, str]:
        """Create resources for `keys` ahead of demand, as far as the cap allows.

        Returns, per key: `"created"`, `"open"`, `"not_created"` or `"failed"`.
        """
        return cast(dict[K, str], self._ref.ask(Prewarm(keys)))

    def refresh(self, key: K) -> bool:
        """Replace `key`'s resource with a fresh one; `False` if none was open."""
        return cast(bool, self._ref.ask(Refresh(key)))

    def close(self, timeout: float | None = None) -> None:
        """Fail waiters, close every resource and stop every actor. Idempotent.

        Held resources drain first: `close` waits up to `timeout` seconds
        (`None`: `drain_timeout`; `float("inf")`: forever) for their holders.
        A lease still out then is left to its holder (a `pool.close.lease_out`
        warning names it): its resource is closed when it is checked in,
        never under it. Returns once the pool stopped and its thread ended
        (except one stuck in user code); every later call raises
        `PoolClosedError`, but a checkin still checks in.

        Raises:
            ValueError: a negative timeout (`TypeError`: not a number).
        """
        future, bound = self._shutdown(timeout)
        try:
            future.get(timeout=bound)
        except Exception:
            return
        self._ref.join(self.options.close_timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LeaseBlock(Generic[K, T]):
    """`with pool.lease(key) as resource:`: checkout on enter, checkin on exit.

    A small class rather than a generator-based context manager: a lease
    cycle is a hot path. One object is good for one block: entering it again
    (nested, or from another thread) is a `RuntimeError`.

    On a shared pool (`blocks`, the pool's counter, is given) it first takes
    the counter's block path (`_counter_blocks`): no lease, no note, its
    place kept in `place` by the counter. An interrupt after the counter
    counted it and before `__enter__` returns is undone at once (`with` would
    not call `__exit__`); one that keeps `__exit__` from running leaves the
    block to be found when it is collected (`__del__`), as a dropped lease is.
    """

    __slots__ = ("_blocks", "_key", "_lease", "_once", "_pool", "_timeout", "place")

    def __init__(
        self,
        pool: Pool[K, T],
        key: K,
        timeout: float | None,
        blocks: Counter | None = None,
    ) -> None:
        self._pool = pool
        self._key = key
        self._timeout = timeout
        self._blocks = blocks
        self._lease: Lease[K, T] | None = None
        #: Its place at the counter while inside a resource by the block path,
        #: `(resource record, id)`: set and cleared by the counter only.
        self.place: tuple[Any, int] | None = None
        self._once = [True]  # popped by the one `__enter__` (one atomic op)

    def __enter__(self) -> T:
        try:
            self._once.pop()
        except IndexError:
            raise RuntimeError(
                f"this pool.lease({self._key!r}) block was entered already: "
                "one object is good for one with-statement"
            ) from None
        counter = self._blocks
        if counter is not None:
            if self._timeout is not None:
                check_timeout(self._timeout)  # a bad one is an error, served or not
            try:
                resource: T = counter.enter(self._key, self)
                if resource is not MISS:
                    return resource
            except BaseException:  # interrupted past its count: undone at once
                counter.leave(self)
                raise
        self._lease = self._pool.checkout(self._key, self._timeout)
        return self._lease.resource

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        counter = self._blocks
        if exc is None and counter is not None and self._lease is None:
            try:  # the block path (or none taken: then nothing to leave)
                counter.leave(self)
            except BaseException:  # interrupted: leaving again completes it
                counter.leave(self)
                raise
            return
        lease, self._lease = self._lease, None
        if lease is None and counter is None:
            return
        try:
            broken = exc is not None and self._pool.broken_by(exc)
        except BaseException as error:  # is_broken raised: broken, propagates
            self._give_back(lease, True, f"is_broken raised {error!r} on {exc!r}")
            if exc is not None and isinstance(sys.exception(), Exception):
                return  # a bug in is_broken must not hide the block's error
            raise
        self._give_back(lease, broken, repr(exc) if broken else "")

    def _give_back(self, lease: Lease[K, T] | None, broken: bool, reason: str) -> None:
        """Check `lease` in (`reason`: why it is broken), or leave the block
        path's place (`lease` is `None`)."""
        if lease is None:
            counter = self._blocks
            assert counter is not None
            try:
                counter.leave(self, broken, reason)
            except BaseException:  # interrupted: leaving again completes it
                counter.leave(self, broken, reason)
                raise
            return
        if broken:
            lease.reason = reason
        self._pool.checkin(lease, broken)

    def __del__(self) -> None:
        # Collected with its place still set: an interrupt kept `__exit__`
        # from running. The counter finds it lost, as a dropped lease, taking
        # no lock (this may run inside the pool's locked code).
        try:
            place, counter = self.place, self._blocks
        except AttributeError:  # an interrupt cut `__init__` short
            return
        if place is not None and counter is not None:
            with contextlib.suppress(BaseException):  # at exit: nobody to tell
                counter.dropped(self)
