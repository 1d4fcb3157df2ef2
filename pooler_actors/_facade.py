"""What [Pool][pooler_actors.Pool] and [AsyncPool][pooler_actors.AsyncPool]
share: building the options, starting the supervisor, naming, typing.

The facades hold no pool state: each call is one message to the supervisor.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable, Hashable, Iterator
from math import inf as _INF
from time import monotonic
from typing import TYPE_CHECKING, Any, Generic, cast

import pykka

from pooler_actors._future import PoolFuture
from pooler_actors._messages import Shutdown
from pooler_actors.errors import AcquireTimeout, short_repr
from pooler_actors.lease import Lease
from pooler_actors.messages import check_timeout
from pooler_actors.options import PoolOptions, build_options
from pooler_actors.supervisor import PoolRef, PoolSupervisor

__all__ = ["GRACE", "FacadeBase", "K", "T"]

GRACE = 0.025
"""Seconds a caller waits past its deadline for the supervisor's own answer
(an `AcquireTimeout` or a late grant) before it gives up by itself."""

if TYPE_CHECKING:
    # Type-checkers know typing_extensions (typeshed ships it); nothing
    # imports it at run time, where typing.TypeVar has no defaults before 3.13.
    from typing_extensions import TypeVar

    #: The key type. A factory that says nothing about keys -- one that takes
    #: none, or a lambda -- leaves it open: `Pool(connect)` with
    #: `connect() -> Conn` is a `Pool[Any, Conn]`, and in
    #: `Pool(lambda dsn: psycopg.connect(dsn))` the lambda's `dsn` may be
    #: passed on as a `str`; `pool: Pool[str, Conn] = Pool(...)` narrows it.
    K = TypeVar("K", bound=Hashable, default=Any)
    #: The resource type (it has a default only because it follows `K`).
    T = TypeVar("T", default=Any)
else:
    from typing import TypeVar

    K = TypeVar("K", bound=Hashable)
    T = TypeVar("T")
L = TypeVar("L", bound=Lease[Any, Any])


class FacadeBase(Generic[K, T]):
    """Starts a [PoolSupervisor][pooler_actors.PoolSupervisor] for a facade."""

    def __init__(
        self,
        factory: Callable[..., Any],
        *,
        options: PoolOptions | None = None,
        logger: Any = None,
        **option_fields: Any,
    ) -> None:
        opts = build_options(options, option_fields)
        self.options = opts
        self.name = opts.name
        self._ref = PoolSupervisor.start(factory, opts, logger=logger)
        self._counter = self._ref.counter  # what callers take here (_counter)
        self._events = self._ref.events

    def __repr__(self) -> str:
        state = "open" if self._ref.is_alive() else "closed"
        return f"<{type(self).__name__} {self.name!r} ({state})>"

    @property
    def actor_ref(self) -> PoolRef:
        """The supervisor's ref, for `ask`/`tell` from actors."""
        return self._ref

    @property
    def closed(self) -> bool:
        """Whether the pool has been closed."""
        return not self._ref.is_alive()

    def _timeout(self, timeout: object) -> float | None:
        """The timeout a request of this caller has: `timeout` checked (any
        size is valid, see `check_timeout`), or the pool's `acquire_timeout`."""
        checked = check_timeout(timeout)
        return self.options.acquire_timeout if checked is None else checked

    def _queue_self(self, key: K, timeout: float | None) -> Any:
        """A checkout queued at the counter, without a round trip: its reply
        future, withdrawable; or `MISS`."""
        # (withdrawable already: `Counter.register` makes it so)
        return self._counter.enqueue(key, timeout, monotonic())

    def _grant(self, future: Any, key: K, timeout: float | None) -> Any:
        """Wait for a request's answer, keeping its deadline here, in the
        caller's thread: a stalled supervisor cannot stretch it by more than
        `GRACE`, and a grant that lands after it goes back to the pool."""
        wait = None if timeout is None or timeout == 0 else timeout + GRACE
        try:
            return self._ref.wait(future, wait)
        except pykka.Timeout:
            raise AcquireTimeout(key, timeout) from None

    def _checks(
        self, key: K, timeout: float | None, wait: float | None
    ) -> Iterator[float | None]:
        """The wait of each checkout a `check` that keeps failing makes: all
        within the caller's deadline; without one, at most one more try than
        the pool has slots, then `AcquireTimeout`."""
        if wait is None or wait == 0 or math.isinf(wait):
            for _ in range(self.options.max_open_resources + 1):
                yield wait
        else:
            deadline = monotonic() + wait
            while (left := deadline - monotonic()) > 0:
                yield left
        raise AcquireTimeout(key, timeout)

    def _watched(self, lease: L) -> L:
        """`lease`, with where it was checked out remembered when
        `leak_warning_after` is on (for `pool.lease.held_long`)."""
        if self.options.leak_warning_after is not None:
            stack = traceback.format_stack(limit=12)[:-2]  # the caller's frames
            self._counter.mark_origin(lease, "".join(stack))
        return lease

    def _hook_failed(
        self, event: str, lease: Lease[Any, Any], error: Exception
    ) -> None:
        """The pool's `check` or `reset` raised for `lease`, which was checked
        in as broken: `event` says so."""
        self._events.warning(
            event,
            lease.key,
            None,
            lease=lease.lid,
            error=short_repr(error),
        )

    def _shutdown(self, timeout: object) -> tuple[PoolFuture[Any], float | None]:
        """Ask the pool to close, waiting up to `timeout` seconds for holders
        (`None`: `drain_timeout`); its reply future, and how long `close()`
        may wait for it (`None`: forever, with `timeout=inf`)."""
        checked = check_timeout(timeout)  # a bad timeout changes nothing
        wait = self.options.drain_timeout if checked is None else checked
        future = cast(PoolFuture[Any], self._ref.ask(Shutdown(wait), block=False))
        bound = wait + self.options.close_timeout + 1.0
        return future, None if bound == _INF else bound

    def broken_by(self, error: BaseException) -> bool:
        """Whether `error` leaving a lease block means the resource is broken.

        Raises what `is_broken` raises (the caller checks the lease in as
        broken first).
        """
        is_broken = self.options.is_broken
        if is_broken is None or not isinstance(error, Exception):
            return False
        return bool(is_broken(error))
