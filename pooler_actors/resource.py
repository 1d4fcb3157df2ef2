"""The resource actor: one per resource; runs the factory, ping and close.

All blocking user code runs here, on the pool's worker threads, never in the
supervisor. The actor reports every outcome to the supervisor by message,
tagged with its resource id. For an `AsyncPool`, a factory, `ping()` or
`close()` that returns an awaitable is awaited on the pool's event loop while
the actor's worker waits for it (see `_loop.py`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import inspect
import threading
from collections.abc import Callable, Hashable
from typing import Any

import pykka

from pooler_actors import _pykka
from pooler_actors._executor import Executor, ExecutorActor
from pooler_actors._loop import EventLoop, LoopFactory, is_async_callable, settle
from pooler_actors._messages import Closed, Failed, Ping, PingResult, Ready
from pooler_actors.protocols import Reusable

__all__ = [
    "BaseResourceActor",
    "ExecutorResourceActor",
    "ResourceActor",
    "ResourceActors",
    "ThreadResourceActor",
    "takes_key",
]


def takes_key(factory: Callable[..., Any]) -> bool:
    """Whether `factory` has a required positional parameter (gets the key)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        for p in parameters
    )


class BaseResourceActor(pykka.Actor):
    """Holds one resource for the supervisor (the runtime comes from a subclass).

    Its life: `on_start` runs the factory and reports `Ready` or `Failed`;
    `Ping` messages run `ping()`; stopping the actor (by the supervisor, or
    by `ActorRegistry.stop_all()`) closes the resource, if any, and reports
    `Closed` — always the actor's last report, sent exactly once.
    """

    #: The actor's own thread, if its runtime has one (joined at pool close).
    thread: threading.Thread | None = None

    def __init__(
        self,
        supervisor: pykka.ActorRef[Any],
        rid: int,
        key: Hashable,
        factory: Callable[..., Any],
        pass_key: bool,
        *,
        attempt: int = 0,
        pool_name: str = "pool",
        executor: Executor | None = None,
        loop: EventLoop | None = None,
    ) -> None:
        super().__init__(executor=executor)
        self.rid = rid
        self.attempt = attempt
        self.key = key
        self._supervisor = supervisor
        self._factory = factory
        self._pass_key = pass_key
        self._pool_name = pool_name
        self._loop = loop
        self._resource: Any = None
        # The coroutine awaited on the loop right now, if any (see abandon).
        self._awaiting: concurrent.futures.Future[Any] | None = None
        #: Set once the actor's last report (`Closed`) was sent.
        self.finished = threading.Event()

    def _report(self, message: object) -> None:
        # If the pool is gone, nothing waits for this report.
        with contextlib.suppress(pykka.ActorDeadError):
            self._supervisor.tell(message)

    # User code may raise anything, KeyboardInterrupt and SystemExit included:
    # each is contained and reported, never allowed to stop other actors.

    def _settle(self, value: Any, what: str) -> Any:
        """`value`, awaited on the pool's loop if it is awaitable."""
        return settle(value, self._loop, what, self._track)

    def _track(self, future: concurrent.futures.Future[Any] | None) -> None:
        self._awaiting = future

    def abandon(self) -> None:
        """The pool wrote the actor off (its call did not return in time):
        cancel the coroutine it awaits, if any, which frees its worker."""
        future = self._awaiting
        if future is not None:
            future.cancel()
        abandon = getattr(super(), "abandon", None)
        if abandon is not None:
            abandon()

    def on_start(self) -> None:
        try:
            made = self._factory(self.key) if self._pass_key else self._factory()
            resource = self._settle(made, "the factory")
            if not isinstance(resource, Reusable) or isinstance(resource, type):
                raise TypeError(
                    f"factory returned {resource!r}, which is not a Reusable "
                    "instance (it needs close() and ping())"
                )
            if self._loop is None and (
                is_async_callable(resource.ping) or is_async_callable(resource.close)
            ):
                raise TypeError(
                    f"factory returned {resource!r}, whose ping() or close() is "
                    "async def: asyncio-native resources need an AsyncPool"
                )
        except BaseException as error:
            self._report(Failed(self.rid, self.attempt, error))
            self.stop()
            return
        self._resource = resource
        self._report(Ready(self.rid, self.attempt, resource))

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Ping):
            error: BaseException | None = None
            try:
                if self._resource is not None:
                    self._settle(self._resource.ping(), "ping()")
            except BaseException as exc:
                error = exc
            self._report(PingResult(self.rid, message.seq, error))
            return None
        return super().on_receive(message)

    def on_stop(self) -> None:
        self._close()

    def on_failure(self, *_exc_info: Any) -> None:
        self._close()

    def _close(self) -> None:
        """Close the resource, if any, and send the actor's last report once."""
        if self.finished.is_set():
            return
        resource, self._resource = self._resource, None
        error: BaseException | None = None
        if resource is not None:
            try:
                self._settle(resource.close(), "close()")
            except BaseException as exc:
                error = exc
        self.finished.set()
        self._report(Closed(self.rid, self.attempt, error))


class ThreadResourceActor(BaseResourceActor, pykka.ThreadingActor):
    """A resource actor with its own OS thread (pykka's ``ThreadingActor``)."""

    # Daemon threads: a program that forgets to close its pool still exits;
    # an atexit hook closes what is left (see supervisor.py).
    use_daemon_thread = True

    def _start_actor_loop(self) -> None:
        # As pykka's, but keeps the thread so the supervisor can join it.
        self.thread = threading.Thread(
            target=self._actor_loop,
            name=f"pooler_actors:{self._pool_name}:resource-{self.rid}",
            daemon=True,
        )
        self.thread.start()


class ExecutorResourceActor(BaseResourceActor, ExecutorActor):
    """A resource actor run by the pool's shared `Executor`: no own thread.

    An idle resource costs no thread; a ``ping()`` or ``close()`` that hangs
    holds one executor worker, and the executor grows past it.
    """


#: The resource actor type pools use (see docs/performance.md for the choice).
ResourceActor = ExecutorResourceActor


class ResourceActors:
    """A pool's live resource actors, by resource id, and the executor they run on.

    Used only from the supervisor's thread: it starts, tells, stops and
    abandons actors as the core's effects say, and forgets each one when its
    last report (`Closed`) arrives.
    """

    def __init__(
        self,
        supervisor: pykka.ActorRef[Any],
        factory: Callable[..., Any],
        *,
        pool_name: str,
        actor_type: type[BaseResourceActor],
    ) -> None:
        self._supervisor = supervisor
        # An AsyncPool's factory comes with its event loop.
        self._loop = factory.loop if isinstance(factory, LoopFactory) else None
        if isinstance(factory, LoopFactory):
            factory = factory.factory
        elif is_async_callable(factory):
            raise TypeError(
                f"{factory!r} is an async def factory: its coroutines need an "
                "event loop, so use AsyncPool (Pool and PoolSupervisor take "
                "sync factories)"
            )
        self._factory = factory
        self._pass_key = takes_key(factory)
        self._pool_name = pool_name
        self._type = actor_type
        self._actors: dict[int, BaseResourceActor] = {}
        # Runs the actors' turns when they are ExecutorActors; it starts no
        # thread until a resource needs one.
        self.executor = Executor(pool_name)

    def start(self, rid: int, key: Hashable, attempt: int) -> None:
        """Start an actor for `rid`'s try `attempt`; it runs the factory."""
        actor = self._type(
            self._supervisor,
            rid,
            key,
            self._factory,
            self._pass_key,
            attempt=attempt,
            pool_name=self._pool_name,
            executor=self.executor,
            loop=self._loop,
        )
        self._actors[rid] = actor
        _pykka.register_before(actor.actor_ref, self._supervisor)
        _pykka.start_loop(actor)

    def tell(self, rid: int, message: object) -> None:
        """Tell `rid`'s actor `message`, if it still lives."""
        actor = self._actors.get(rid)
        if actor is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                actor.actor_ref.tell(message)

    def stop(self, rid: int) -> None:
        """Ask `rid`'s actor to stop: it closes its resource, then reports."""
        self.tell(rid, _pykka.stop_message())

    def abandon(self, rid: int) -> None:
        """Write `rid`'s actor off as stuck in user code."""
        abandon = getattr(self._actors.get(rid), "abandon", None)
        if abandon is not None:
            abandon()

    def ended(self, rid: int, attempt: int) -> None:
        """`rid`'s actor sent its last report: forget it (not a newer try's)."""
        actor = self._actors.get(rid)
        if actor is not None and actor.attempt == attempt:
            del self._actors[rid]

    def stop_all(self) -> None:
        """Stop every actor without waiting (the supervisor itself failed)."""
        for rid in list(self._actors):
            self.stop(rid)
