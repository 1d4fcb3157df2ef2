"""Creations: a resource from its first factory try to open, or to failure.

Part of the pure core (see [_core][pooler_actors._core]). A creation takes
a slot at once (`create`; under a fleet-wide cap it first reserves a fleet
slot, see [_fleet][pooler_actors._fleet]), joins the callers already waiting
for its key (single flight), and starts its factory (`Start`, with a
`create` timer). A failed try waits `create_backoff` (jittered, doubling)
in `BACKOFF`, on a `retry` timer, and tries again while `create_retries`,
its callers' deadlines and its slot allow; a factory that never returns is
written off (`Abandon`). Once ready, it answers its joiners, a refresh's
standby is swapped in (`STANDBY` to `OPEN`), and it is published. Its own
state is `rand`, the jitter source the shell passes in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from pooler_actors._effects import Close, Start
from pooler_actors._inventory import Resource, held
from pooler_actors._lifecycle import Phase
from pooler_actors._part import Part
from pooler_actors.errors import FactoryError, NotPoolable, short_repr

if TYPE_CHECKING:
    from pooler_actors._core import PoolCore

__all__ = ["Creations"]

_INF = math.inf


class Creations(Part):
    """Factory tries, retries and timeouts; see the module docstring."""

    def __init__(self, core: PoolCore, rand: Callable[[], float]) -> None:
        super().__init__(core)
        #: A source of uniform floats in `[0, 1)`: the jitter of retries and
        #: lifetimes.
        self.rand = rand

    def handlers(self) -> dict[str, Callable[[float, int], None]]:
        """The kinds of core timer this part handles, and how."""
        return {"create": self.on_create_timeout, "retry": self.on_retry}

    def create(self, now: float, key: Hashable, context: dict[str, Any]) -> Resource:
        """A new resource for `key`: it takes a slot at once."""
        rid = self.core.next_seq()
        phase = Phase.RESERVING if self.fleetwide else Phase.CREATING
        res = Resource(rid, key, phase, context, now, last_used=now)
        self.core.inventory.resources[res.rid] = res
        self.core.inventory.used += 1
        entry = self.core.inventory.entry(key)
        entry.resources.append(res)
        res.home = entry.idle
        # Callers already waiting for this key join it, FIFO, as far as it has
        # places: the factory runs once however many ask (single flight).
        for caller in list(entry.waiters.values()):
            if not self.core.placement.has_room(res, caller.hold):
                break
            if self.core.waiters.take_waiter(caller):
                self.core.waiters.unqueue(caller)
                self.core.waiters.join(caller, res)
        if self.fleetwide:
            self.core.fleet.reserve(now, res)
        else:
            self.start(now, res)
        return res

    def start(self, now: float, res: Resource) -> None:
        timeout = self.options.create_timeout
        if self.core.closing is not None:
            timeout = self.options.close_timeout
        if timeout is not None:
            self.core.inventory.timer(res, "create", now + timeout)
        if self.core.debug:  # a hot path: no call made for nothing
            self.core.log("debug", "pool.resource.creating", res.key, res.context)
        self.effects.append(Start(res.rid, res.key, res.attempts))

    def ready(self, now: float, rid: int, attempt: int, obj: Any) -> None:
        """The factory of `rid` (its try number `attempt`) returned `obj`."""
        res = self.core.inventory.resources.get(rid)
        if res is None or res.phase is not Phase.CREATING or res.attempts != attempt:
            return  # stale: abandoned meanwhile (its actor closes `obj` itself)
        self.timers.cancel(res.timers.pop("create", None))
        res.obj = obj
        res.opened = True
        res.last_used = now
        # A refresh's replacement (still in the key map) is a standby: it
        # serves the callers that joined it, then is swapped in.
        standby = bool(res.replaces)
        self.core.inventory.move(now, res, "standby" if standby else "ready")
        self.n["created"] += 1
        self.core.sizing.opened(res.key)
        self.core.log(
            "info",
            "pool.acquire.created",
            res.key,
            res.context,
            created_s=now - res.started,
        )
        joiners, res.joiners = res.joiners, []
        for caller in joiners:
            self.core.waiters.answer(
                now, caller, self.core.placement.hand(now, res, caller.key, caller.hold)
            )
        if standby:
            self.core.inventory.swap(now, res)
        self.core.ops.notify(res, "opened")
        if not res.mapped:  # released while it was being created
            # Never published: unless a joiner holds it, the core has it.
            owned = not held(res)
            self.core.inventory.retire(now, res, res.reason or "released", owned=owned)
        else:
            lifetime = self.options.max_lifetime
            if lifetime is not None:
                jittered = lifetime * (1.0 - 0.05 * self.rand())
                self.core.inventory.timer(res, "lifetime", now + jittered)
            if self.exclusive and not held(res):
                assert res.home is not None
                res.home.append(res)
            self.core.inventory.publish_view(self.core.inventory.keys[res.key])
            self.core.inventory.arm_idle(res)
            self.core.changed(res.key)
        self.core.pump(now)

    def failed(self, now: float, rid: int, attempt: int, error: BaseException) -> None:
        """The factory of `rid` (try `attempt`) raised or returned a non-`Reusable`."""
        res = self.core.inventory.resources.get(rid)
        if res is None or res.phase is not Phase.CREATING or res.attempts != attempt:
            return
        self.timers.cancel(res.timers.pop("create", None))
        delay = self.retry_delay(now, res) if _transient(error) else None
        if delay is not None:
            res.attempts += 1
            self.core.inventory.move(now, res, "backoff")
            self.n["create_retries"] += 1
            self.core.log(
                "warning",
                "pool.factory.retry",
                res.key,
                res.context,
                attempt=res.attempts,
                delay_s=delay,
                error=short_repr(error),
            )
            self.core.inventory.timer(res, "retry", now + delay)
            return
        self.fail_creation(now, res, error)
        self.core.pump(now)

    def retry_delay(self, now: float, res: Resource) -> float | None:
        """The jittered backoff before the next try of `res`'s factory, or
        `None`: no retry (none left, nobody wants it, or the next try would
        come after the deadline of every caller waiting for it)."""
        if res.attempts >= self.options.create_retries or self.core.closing is not None:
            return None
        if res.slot_lost:  # a factory never runs without its fleet-wide slot
            return None
        if not (res.mapped or res.joiners or res.ops):
            return None
        delay = self.options.create_backoff * 2**res.attempts * (0.5 + self.rand())
        latest = max((c.deadline for c in res.joiners), default=_INF)
        # The jittered delay, not its minimum: a retry that lands after the
        # deadline would turn the factory's error into an AcquireTimeout.
        return delay if now + delay < latest else None

    def fail_creation(
        self,
        now: float,
        res: Resource,
        error: BaseException,
        message: str = "factory failed",
        *,
        hung: dict[str, Any] | None = None,
    ) -> None:
        """The creation of `res` failed for good: its callers get `FactoryError`."""
        self.n["factory_errors"] += 1
        self.core.log(
            "warning",
            "pool.factory.failed",
            res.key,
            res.context,
            error=short_repr(error),
        )
        for caller in self.core.waiters.take_joiners(res):
            failure = FactoryError(
                caller.key, message, pool=self.options.name, cause=error
            )
            self.core.waiters.answer_error(now, caller, failure)
        self.core.inventory.unmap(res)
        if hung is not None:
            # Its actor is stuck in the factory: stop it (it closes what the
            # factory may still return) and write it off.
            self.effects.append(Close(res.rid))
            self.core.inventory.abandon(res, "factory did not return", **hung)
            self.core.inventory.move(now, res, "timed_out")
        else:
            self.core.inventory.move(now, res, "failed")
        self.core.sizing.failed(now, res.key)

    def on_create_timeout(self, now: float, rid: int) -> None:
        res = self.core.inventory.timer_fired(rid, "create")
        if res is None or res.phase is not Phase.CREATING:
            return
        limit: dict[str, Any]
        if self.core.closing is not None:
            limit = {"close_timeout": self.options.close_timeout}
        else:
            limit = {"create_timeout": self.options.create_timeout}
        (seconds,) = limit.values()
        error = TimeoutError(f"factory did not return within {seconds} s")
        self.fail_creation(now, res, error, "factory timed out", hung=limit)

    def on_retry(self, now: float, rid: int) -> None:
        res = self.core.inventory.timer_fired(rid, "retry")
        if res is None or res.phase is not Phase.BACKOFF:
            return
        self.core.inventory.move(now, res, "retry")
        if self.core.closing is not None or not (res.mapped or res.joiners or res.ops):
            self.core.inventory.unmap(res)
            self.core.inventory.move(now, res, "failed")  # nobody wants it any more
            return
        self.start(now, res)


def _transient(error: BaseException) -> bool:
    """Whether a factory's error may pass if tried again: any `Exception`
    but the pool's own `NotPoolable`; never a `KeyboardInterrupt`,
    `SystemExit` or other `BaseException`."""
    return isinstance(error, Exception) and not isinstance(error, NotPoolable)
