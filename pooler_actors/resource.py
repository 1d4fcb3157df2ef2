"""The resource actor: one per resource; runs the factory, ping and close.

All blocking user code runs here, on the pool's worker threads, never in the
supervisor. The actor reports every outcome to the supervisor by message,
tagged with its resource id. For an `AsyncPool`, a factory, `ping()` or
`close()` that returns an awaitable is awaited on the pool's event loop while
the actor's worker waits for it (see `_loop.py`).
"""

from __future__ import annotations

import concurrent.futures
import inspect
import threading
from collections.abc import Callable, Hashable
from typing import Any

import pykka

from pooler_actors import _pykka
from pooler_actors._executor import Executor, ExecutorActor
from pooler_actors._loop import EventLoop, LoopFactory, is_async_callable, settle
from pooler_actors._messages import Closed, Failed, Ping, PingResult, Ready
from pooler_actors.errors import NotPoolable
from pooler_actors.errors import short_repr as _short
from pooler_actors.options import PoolOptions
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
    """Whether the pool calls `factory(key)` rather than `factory()`.

    The key is passed whenever `factory` can be called with one positional
    argument: a required one, or one with a default (`def __init__(self,
    tenant="default")`, `psycopg.connect(conninfo="")`), or `*args`. A
    factory that takes no argument is called without the key. A callable whose
    signature cannot be read (some builtins) is called without the key, as
    before.

    Raises:
        TypeError: `factory` can be called with neither one nor zero
            positional arguments (two required parameters, say, or a
            required keyword-only one); the message names it.
    """
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return False
    positional = 0
    required = 0
    star = False
    required_keywords = []
    for p in signature.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            positional += 1
            required += p.default is p.empty
        elif p.kind is p.VAR_POSITIONAL:
            star = True
        elif p.kind is p.KEYWORD_ONLY and p.default is p.empty:
            required_keywords.append(p.name)
    if not required_keywords:
        if required <= 1 and (positional >= 1 or star):
            return True
        if required == 0:
            return False
    raise TypeError(
        f"factory {_callable_name(factory)}{signature} cannot be called with one "
        "positional argument (the key) nor with none: the pool calls "
        "factory(key) or factory()"
    )


def _callable_name(obj: object) -> str:
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    return name if isinstance(name, str) else repr(obj)


def _check_hook(name: str, hook: object, loop: EventLoop | None) -> None:
    if hook is not None and loop is None and is_async_callable(hook):
        raise TypeError(
            f"{name}={hook!r} is async def: its coroutines need an event loop, "
            "so use AsyncPool (Pool takes a sync ping and close)"
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
        ping: Callable[[Any], object] | None = None,
        close: Callable[[Any], object] | None = None,
    ) -> None:
        super().__init__(executor=executor)
        self._ping = ping
        self._close_hook = close
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
        #: Whether the actor's last report (`Closed`) was sent. A flag, not an
        #: `Event`: only the actor's own turns, one at a time, read and set it.
        self.finished = False

    def _report(self, message: object) -> None:
        # A try, not contextlib.suppress: no object made per report.
        try:  # noqa: SIM105
            self._supervisor.tell(message)
        except pykka.ActorDeadError:
            pass  # the pool is gone: nothing waits for this report

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
            self._check(resource)
        except BaseException as error:
            self._report(Failed(self.rid, self.attempt, error))
            self.stop()
            return
        self._resource = resource
        self._report(Ready(self.rid, self.attempt, resource))

    def _check(self, resource: Any) -> None:
        """Raise `TypeError` if the pool cannot ping and close `resource`."""
        if self._ping is not None and self._close_hook is not None:
            return  # any object: the pool's ping= and close= handle it
        if (
            self._ping is None
            and self._close_hook is None
            and not isinstance(resource, type)
        ):
            # The common case, with the answer of the checks below at a
            # fraction of their cost (a runtime protocol check takes µs):
            # an instance whose ping and close are callable is a Reusable.
            ping = getattr(resource, "ping", None)
            close = getattr(resource, "close", None)
            if (
                callable(ping)
                and callable(close)
                and (
                    self._loop is not None
                    or not (is_async_callable(ping) or is_async_callable(close))
                )
            ):
                return
        if (
            self._ping is None
            and self._close_hook is None
            and (not isinstance(resource, Reusable) or isinstance(resource, type))
        ):
            raise NotPoolable(
                f"factory returned {_short(resource)}, which is not a Reusable "
                "instance (it needs close() and ping(); or give the pool "
                "ping= and close= callables that take it)"
            )
        methods = [
            m
            for m, hook in (("ping", self._ping), ("close", self._close_hook))
            if hook is None
        ]
        for m in methods:
            if isinstance(resource, type) or not callable(getattr(resource, m, None)):
                raise NotPoolable(
                    f"factory returned {_short(resource)}, which has no {m}() "
                    f"method: give the pool a {m}= callable that takes it"
                )
        if self._loop is None and any(
            is_async_callable(getattr(resource, m)) for m in methods
        ):
            raise NotPoolable(
                f"factory returned {_short(resource)}, whose ping() or close() is "
                "async def: asyncio-native resources need an AsyncPool"
            )

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Ping):
            error: BaseException | None = None
            try:
                resource = self._resource
                if resource is not None:
                    ping = self._ping
                    made = resource.ping() if ping is None else ping(resource)
                    self._settle(made, "ping()")
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
        if self.finished:
            return
        resource, self._resource = self._resource, None
        error: BaseException | None = None
        if resource is not None:
            try:
                hook = self._close_hook
                made = resource.close() if hook is None else hook(resource)
                self._settle(made, "close()")
            except BaseException as exc:
                error = exc
        self.finished = True
        self._report(Closed(self.rid, self.attempt, error))


class ThreadResourceActor(BaseResourceActor, pykka.ThreadingActor):
    """A resource actor with its own OS thread (pykka's ``ThreadingActor``)."""

    # Daemon threads: a program that forgets to close its pool still exits;
    # an atexit hook closes what is left (see supervisor.py).
    use_daemon_thread = True

    def _start_actor_loop(self) -> None:
        # As pykka's, but keeps the thread so the supervisor can join it.
        self.thread = threading.Thread(
            target=_pykka.actor_loop(self),
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
        options: PoolOptions | None = None,
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
        self._pass_key = takes_key(factory)
        self._factory = factory
        if options is None:  # the supervisor's own (it does not pass them)
            options = getattr(_pykka.actor_of(supervisor), "options", None)
        self._ping = getattr(options, "ping", None)
        self._close = getattr(options, "close", None)
        _check_hook("ping", self._ping, self._loop)
        _check_hook("close", self._close, self._loop)
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
            ping=self._ping,
            close=self._close,
        )
        self._actors[rid] = actor
        _pykka.register_before(actor.actor_ref, self._supervisor)
        _pykka.start_loop(actor)

    def tell(self, rid: int, message: object) -> None:
        """Tell `rid`'s actor `message`, if it still lives."""
        actor = self._actors.get(rid)
        if actor is not None:
            try:  # noqa: SIM105 - not a suppress() object per message
                actor.actor_ref.tell(message)
            except pykka.ActorDeadError:
                pass

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
