"""Every use of pykka beyond its public API and its actor-implementor hooks.

pykka documents `_create_actor_inbox`, `_create_future` and
`_start_actor_loop` for those who implement actor types; everything else the
pool needs of pykka's insides is here, one line each, with why. pykka is
pinned below its next major version for these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pykka

# The inbox item: our refs and timers post their own.
from pykka._envelope import Envelope

# What ActorRef.stop() sends: the supervisor handles it itself.
from pykka.messages import _ActorStop

if TYPE_CHECKING:
    # Future.set_exception's argument type.
    from pykka._types import OptExcInfo

__all__ = [
    "Envelope",
    "OptExcInfo",
    "actor_of",
    "is_stop",
    "log_returned_exception",
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
