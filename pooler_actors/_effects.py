"""What the core asks its shell to do: the outputs of the pure state machine.

The core never replies, starts a thread, logs or talks to a network itself; it
appends these records to its effect list and the shell carries them out in
order. Callers are plain numbers (``cid``), resources too (``rid``).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Abandon",
    "CancelSlot",
    "Close",
    "Effect",
    "Fail",
    "Log",
    "Ping",
    "Reply",
    "ReserveSlot",
    "Resume",
    "ReturnSlot",
    "Start",
    "Stopped",
]


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer caller ``cid`` with ``value``.

    If the caller gave up meanwhile the shell hands the effect back
    (`PoolCore.undelivered`), so a lease nobody received is checked in and
    the caller's wait is counted when its withdrawal arrives. `caller` is the
    core's own record of a request that waited, for that purpose.
    """

    cid: int
    value: Any
    caller: Any = None


@dataclass(frozen=True, slots=True)
class Fail:
    """Answer caller ``cid`` with ``error``."""

    cid: int
    error: BaseException


@dataclass(frozen=True, slots=True)
class Start:
    """Start an actor for resource `rid`, try `attempt`: it runs the factory
    for `key` and tags its reports with both."""

    rid: int
    key: Hashable
    attempt: int


@dataclass(frozen=True, slots=True)
class Ping:
    """Ask resource ``rid``'s actor to run ``ping()`` and report ``seq``."""

    rid: int
    seq: int


@dataclass(frozen=True, slots=True)
class Close:
    """Stop resource ``rid``'s actor, which closes its resource."""

    rid: int


@dataclass(frozen=True, slots=True)
class Abandon:
    """Write resource ``rid``'s actor off as stuck: later asks fail at once."""

    rid: int


@dataclass(frozen=True, slots=True)
class ReserveSlot:
    """Ask the fleet-wide capacity for a slot for resource ``rid``."""

    rid: int


@dataclass(frozen=True, slots=True)
class CancelSlot:
    """Withdraw resource ``rid``'s reservation (release it if granted meanwhile)."""

    rid: int


@dataclass(frozen=True, slots=True)
class ReturnSlot:
    """Give resource ``rid``'s fleet-wide slot back."""

    rid: int


@dataclass(frozen=True, slots=True)
class Resume:
    """Feed ``PoolCore.resume`` again after the messages queued meanwhile."""


@dataclass(frozen=True, slots=True)
class Log:
    """Emit one event (``level`` is ``debug``, ``info``, ``warning`` or ``error``)."""

    level: str
    event: str
    key: Any
    context: dict[str, Any] | None
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Stopped:
    """Everything is closed (or abandoned): the pool has stopped for ``reason``."""

    reason: str


Effect = (
    Reply
    | Fail
    | Start
    | Ping
    | Close
    | Abandon
    | ReserveSlot
    | CancelSlot
    | ReturnSlot
    | Resume
    | Log
    | Stopped
)
