"""Every use of pykka's and structlog's insides, one line each, with why.

pykka documents `_create_actor_inbox`, `_create_future` and
`_start_actor_loop` for those who implement actor types; everything else the
pool needs of pykka's insides is here, and so is the one thing it reads of
structlog's. Both are pinned below their next major version for these;
`tests/test_core_purity.py` checks that no other module of the package
touches either's private names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pykka

# The inbox item: our refs and timers post their own.
from pykka._envelope import Envelope

# What ActorRef.stop() sends: the supervisor handles it itself.
from pykka.messages import _ActorStop

# structlog's live global configuration (private but stable since its first
# releases): the event emitter reads it without building get_config()'s dict
# per event, and tells a configured structlog from an unconfigured one.
from structlog._config import _CONFIG as STRUCTLOG_CONFIG
from structlog._config import BoundLoggerLazyProxy

if TYPE_CHECKING:
    # Future.set_exception's argument type.
    from pykka._types import OptExcInfo

__all__ = [
    "STRUCTLOG_CONFIG",
    "BoundLoggerLazyProxy",
    "Envelope",
    "OptExcInfo",
    "actor_loop",
    "actor_of",
    "get_hook",
    "handle_failure",
    "handle_receive",
    "init_future",
    "is_stop",
    "log_returned_exception",
    "loop_setup",
    "loop_teardown",
    "register_before",
    "set_ref",
    "start_loop",
    "stop_message",
]


def is_stop(message: object) -> bool:
    """Whether `message` is pykka's request to stop the actor."""
    return isinstance(message, _ActorStop)


def stop_message() -> Any:
    """A stop request, as `ActorRef.stop()` sends it."""
    return _ActorStop()


def actor_of(ref: pykka.ActorRef[Any]) -> pykka.Actor | None:
    """The actor behind `ref`, while it lives (pykka keeps a weak reference)."""
    # pykka's ActorRef has no public accessor for its actor: the resource
    # actors read their supervisor's options through it (see resource.py).
    weak = getattr(ref, "_actor_weakref", None)
    return None if weak is None else weak()


def set_ref(actor: pykka.Actor, ref: pykka.ActorRef[Any]) -> None:
    """Give `actor` a ref of our own class (pykka has no hook for the ref type)."""
    # Set once, in the supervisor's __init__, before anyone has its ref.
    actor._actor_ref = ref  # noqa: SLF001


def start_loop(actor: pykka.Actor) -> None:
    """Start an actor that the pool registered itself (see `register_before`)."""
    # Actor.start() would register it last; the pool registers it itself.
    actor._start_actor_loop()  # noqa: SLF001


def register_before(ref: pykka.ActorRef[Any], supervisor: pykka.ActorRef[Any]) -> None:
    """Register a resource actor in pykka's registry just before its supervisor.

    `ActorRegistry.stop_all()` stops the newest actors first. Listed as older
    than their supervisor, a pool's resource actors are stopped after it, so
    the supervisor shuts its pool down in its own order: its waiters get
    `PoolClosedError` instead of a fresh resource for the slot `stop_all` just
    freed by stopping a resource actor.
    """
    registry = pykka.ActorRegistry
    # The registry has no "insert at": its lock and list are its only API for it.
    with registry._actor_refs_lock:  # noqa: SLF001
        refs = registry._actor_refs  # noqa: SLF001
        for index in range(len(refs) - 1, -1, -1):
            if refs[index] is supervisor:
                refs.insert(index, ref)
                return
        refs.append(ref)  # the supervisor is stopping: it stops this actor itself


def log_returned_exception(actor: pykka.Actor) -> None:
    """Log an exception returned to an asker, as pykka's own loop does."""
    # pykka's own logger, so the line reads as pykka's does for any actor.
    logger = pykka._actor.logger  # noqa: SLF001
    logger.info(f"Exception returned from {actor} to caller:", exc_info=True)


def actor_loop(actor: pykka.Actor) -> Callable[[], None]:
    """pykka's receive loop of `actor`, for a thread the pool starts itself."""
    # Our resource actors keep their thread (to join it): same loop, our thread.
    return actor._actor_loop  # noqa: SLF001


def loop_setup(actor: pykka.Actor) -> None:
    """What pykka does before an actor's first message (`on_start`...)."""
    # The executor actor runs turns, not pykka's loop: it calls the loop's parts.
    actor._actor_loop_setup()  # noqa: SLF001


def loop_teardown(actor: pykka.Actor) -> None:
    """What pykka does once an actor has stopped (answer what is left)."""
    # As loop_setup: the executor actor's end of its last turn.
    actor._actor_loop_teardown()  # noqa: SLF001


def handle_receive(actor: pykka.Actor, message: Any) -> Any:
    """pykka's dispatch of one message to `actor` (`on_receive`, proxies...)."""
    # The body of pykka's receive loop, run by the executor actor per message.
    return actor._handle_receive(message)  # noqa: SLF001


def handle_failure(actor: pykka.Actor, *exc_info: Any) -> None:
    """pykka's handling of an actor's failure (log it, stop the actor)."""
    # As handle_receive: the failure path of pykka's receive loop.
    actor._handle_failure(*exc_info)  # noqa: SLF001


def init_future(future: pykka.Future[Any]) -> None:
    """What `pykka.Future.__init__` sets, without its calls (0.7 -> 0.3 µs a
    future: a checkout that waits makes one); its "no result yet" marker,
    compared by type and replaced on the instance, shared."""
    future._get_hook = None  # noqa: SLF001
    future._get_hook_result = _UNSET  # noqa: SLF001


_UNSET = pykka._future._Unset()  # noqa: SLF001


def get_hook(future: pykka.Future[Any]) -> Any:
    """The get hook a `Future.map`/`join` set on `future`, or `None`."""
    # pykka's own combinators set it; our future defers to pykka when it is set.
    return future._get_hook  # noqa: SLF001
