"""What [Pool][pooler_actors.Pool] and [AsyncPool][pooler_actors.AsyncPool]
share: building the options, starting the supervisor, naming, typing.

The facades hold no pool state: each call is one message to the supervisor.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable
from time import monotonic
from typing import TYPE_CHECKING, Any, Generic

from pooler_actors import _fastpath as fastpath
from pooler_actors.lease import Lease
from pooler_actors.options import PoolOptions, build_options
from pooler_actors.supervisor import PoolRef, PoolSupervisor

__all__ = ["FacadeBase", "K", "T"]

if TYPE_CHECKING:
    # Type-checkers know typing_extensions (typeshed ships it); nothing
    # imports it at run time, where typing.TypeVar has no defaults before 3.13.
    from typing_extensions import TypeVar

    #: The key type. A factory that takes no key says nothing about keys, so
    #: `Pool(connect)` with `connect() -> Conn` is a `Pool[Hashable, Conn]`;
    #: `pool: Pool[str, Conn] = Pool(connect)` narrows it.
    K = TypeVar("K", bound=Hashable, default=Hashable)
    #: The resource type (it has a default only because it follows `K`).
    T = TypeVar("T", default=Any)
else:
    from typing import TypeVar

    K = TypeVar("K", bound=Hashable)
    T = TypeVar("T")


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
        self._pub = self._ref.published  # the hit path's view (see _fastpath)
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

    def _hit(self, key: K, timeout: float | None) -> Any:
        """`acquire` served in this thread, or `MISS` (see `_fastpath`)."""
        if timeout is not None and not _valid_timeout(timeout):
            return fastpath.MISS  # the message says what is wrong with it
        ref = self._ref
        return fastpath.hit(ref.published, key, ref.events.debug_known, ref.wake)

    def _take(self, key: K, timeout: float | None) -> Any:
        """An exclusive checkout served in this thread, or `MISS`."""
        if timeout is not None and not _valid_timeout(timeout):
            return fastpath.MISS
        ref = self._ref
        return fastpath.checkout(ref.published, key, ref.events.debug_known, ref.wake)

    def _queue_self(self, key: K, timeout: float | None) -> Any:
        """A checkout queued without a round trip (rule 10 of `_fastpath`):
        its reply future, withdrawable; or `MISS`."""
        if timeout is not None and not _valid_timeout(timeout):
            return fastpath.MISS
        ref = self._ref
        future = fastpath.enqueue(ref.published, key, timeout, monotonic(), ref.wake)
        return future if future is fastpath.MISS else ref.withdrawable(future)

    def _give(self, lease: Lease[K, T], broken: bool) -> bool:
        """A checkin, done in this thread (see `_fastpath`)."""
        return fastpath.checkin(self._ref.published, lease, broken, self._ref.wake)

    def _close_bound(self) -> float:
        """How long `close()` may wait: closes, then held resources draining."""
        return self.options.close_timeout + self.options.drain_timeout + 1.0

    def broken_by(self, error: BaseException) -> bool:
        """Whether `error` leaving a lease block means the resource is broken."""
        is_broken = self.options.is_broken
        if is_broken is None or not isinstance(error, Exception):
            return False
        with contextlib.suppress(Exception):
            return bool(is_broken(error))
        return False


def _valid_timeout(timeout: object) -> bool:
    return type(timeout) in (int, float) and timeout >= 0  # type: ignore[operator]
