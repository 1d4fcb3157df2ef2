"""Health: periodic sweeps that ping open resources and evict the failing.

Part of the pure core (see [_core][pooler_actors._core]). Every
`health_check_interval` (the `health` timer) a sweep pings each open
resource nobody holds, `_PING_CHUNK` at a time (the rest after a `Resume`,
so callers wait for one chunk, not for them all), and evicts (retires) a
resource whose ping fails or is not answered within `ping_timeout` (the
`ping` timer). It owns the `health` timer and the sweep in progress, and
the lease watch of `leak_warning_after` (the `leaks` timer): a lease held
longer logs `pool.lease.held_long` once, with where it was checked out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pooler_actors._effects import Ping, Resume
from pooler_actors._inventory import held
from pooler_actors._lifecycle import Phase
from pooler_actors._part import Part

if TYPE_CHECKING:
    from pooler_actors._core import PoolCore
    from pooler_actors._inventory import Resource

__all__ = ["Health"]

_PING_CHUNK = 64  # pings told per turn of a sweep (see `ping_some`)


@dataclass(eq=False, slots=True)
class _Sweep:
    """One health check in progress."""

    seq: int
    started: float
    outstanding: set[int]
    unsent: deque[int]
    pinged: int
    evicted: int = 0
    timer: int | None = None  # its ping timeout, cancelled when it ends


class Health(Part):
    """Health sweeps and pings; see the module docstring."""

    def __init__(self, core: PoolCore) -> None:
        super().__init__(core)
        self.timer: int | None = None  # the next sweep's `health` timer
        self.sweep: _Sweep | None = None  # the sweep in progress
        self.leak_timer: int | None = None  # the next lease watch
        self.warned: set[int] = set()  # leases held long, logged once

    def handlers(self) -> dict[str, Callable[[float, int], None]]:
        """The kinds of core timer this part handles, and how."""
        return {
            "health": self.on_timer,
            "ping": self.on_ping_timeout,
            "leaks": self.on_leaks,
        }

    def start(self, now: float) -> None:
        """The pool starts: arm the first sweep (and the lease watch)."""
        interval = self.options.health_check_interval
        if interval is not None:
            self.timer = self.timers.add(now + interval, "health", 0)
        self.on_leaks(now, 0)

    def on_leaks(self, now: float, _ident: int) -> None:
        """Log each lease held longer than `leak_warning_after`, once; look
        again in a fraction of it."""
        after = self.options.leak_warning_after
        if after is None or self.core.closing is not None:
            return
        out: set[int] = set()
        for res in self.core.inventory.resources.values():
            for lid, since in res.leases.items():
                out.add(lid)
                if now - since >= after and lid not in self.warned:
                    self.warned.add(lid)
                    where = self.core.published.origin(lid)
                    self.core.log(
                        "warning",
                        "pool.lease.held_long",
                        res.key,
                        lease=lid,
                        held_s=now - since,
                        checked_out_at=where,
                    )
        self.warned &= out  # memory follows the leases out
        self.leak_timer = self.timers.add(now + max(after / 4, 0.01), "leaks", 0)

    def stop(self) -> None:
        """The pool closes: no sweep any more."""
        self.timers.cancel(self.timer)
        self.timers.cancel(self.leak_timer)
        if self.sweep is not None:
            self.timers.cancel(self.sweep.timer)
            self.sweep = None

    def resume(self, now: float) -> None:
        """Go on with the sweep's pings left for later, if any."""
        if self.sweep is not None:
            self.ping_some(now)

    def check(self, now: float) -> None:
        """Start a health check now (unless one is still running)."""
        if self.core.closing is not None or self.sweep is not None:
            return
        self.n["health_checks"] += 1
        targets = [
            r.rid for r in self.core.inventory.resources.values() if self.pingable(r)
        ]
        self.core.log("debug", "pool.health.started", pinged=len(targets))
        if not targets:
            self.core.log(
                "debug", "pool.health.finished", pinged=0, evicted=0, took_s=0.0
            )
            return
        seq = self.core.next_seq()
        sweep = _Sweep(seq, now, set(targets), deque(targets), len(targets))
        sweep.timer = self.timers.add(
            now + self.options.ping_timeout, "ping", sweep.seq
        )
        self.sweep = sweep
        self.ping_some(now)

    def ping_result(
        self, now: float, rid: int, seq: int, error: BaseException | None
    ) -> None:
        """The `ping()` of sweep `seq` on `rid` returned (or raised `error`)."""
        res = self.core.inventory.resources.get(rid)
        if res is None or res.ping_seq != seq:
            return  # stale
        res.ping_seq = 0
        if error is not None and res.phase is Phase.OPEN:
            self.evict(now, res, "ping_failed", repr(error))
        elif res.phase is Phase.OPEN and res.mapped:
            if self.exclusive:  # the core had it for the ping: idle again
                assert res.home is not None
                res.home.append(res)
                # Its idle timer may have fired during the ping, unable to
                # claim it (see `Inventory.on_idle`): armed again unless still armed.
                self.core.inventory.arm_idle(res)
            self.core.changed(res.key)
        self.sweep_done(now, rid)
        self.core.pump(now)

    def on_timer(self, now: float, _ident: int) -> None:
        interval = self.options.health_check_interval
        assert interval is not None
        self.timer = self.timers.add(now + interval, "health", 0)
        self.check(now)

    def on_ping_timeout(self, now: float, seq: int) -> None:
        sweep = self.sweep
        if sweep is None or sweep.seq != seq:
            return
        for rid in list(sweep.outstanding):
            res = self.core.inventory.resources.get(rid)
            # Only a ping that was sent and not answered counts against it.
            if res is not None and res.ping_seq == seq:
                res.ping_seq = 0
                if res.phase is Phase.OPEN:
                    timeout = self.options.ping_timeout
                    self.evict(now, res, "ping_timeout", f"no answer in {timeout} s")
        sweep.outstanding.clear()
        sweep.unsent.clear()
        self.sweep_done(now, None)

    def pingable(self, res: Resource) -> bool:
        # An exclusive resource is pinged only while nobody holds it: the ping
        # would run beside the holder's own use.
        return (
            res.phase is Phase.OPEN
            and res.mapped
            and not res.ping_seq
            and not (self.exclusive and held(res))
        )

    def ping_some(self, now: float) -> None:
        """Tell the next chunk of the sweep's pings; the rest after a `Resume`.

        A sweep of many resources goes out in chunks, each after the messages
        that queued meanwhile: a caller waits for one chunk, not for them all.
        """
        sweep = self.sweep
        assert sweep is not None
        for _ in range(min(_PING_CHUNK, len(sweep.unsent))):
            rid = sweep.unsent.popleft()
            res = self.core.inventory.resources.get(rid)
            # Exclusive: pinged only if the core can take it from its idle
            # list, so no holder uses it during the ping.
            if (
                res is not None
                and self.pingable(res)
                and (not self.exclusive or self.core.claim(res))
            ):
                res.ping_seq = sweep.seq
                self.effects.append(Ping(rid, sweep.seq))
            else:
                sweep.outstanding.discard(rid)
        if sweep.unsent:
            self.effects.append(Resume())
        else:
            self.sweep_done(now, None)

    def sweep_done(self, now: float | None, rid: int | None) -> None:
        sweep = self.sweep
        if sweep is None:
            return
        if rid is not None:
            sweep.outstanding.discard(rid)
        if sweep.outstanding or sweep.unsent:
            return
        self.sweep = None
        self.timers.cancel(sweep.timer)
        # Routine checks stay at debug; one that evicted something is news.
        level = "info" if sweep.evicted else "debug"
        fields: dict[str, Any] = {"pinged": sweep.pinged, "evicted": sweep.evicted}
        if now is not None:
            fields["took_s"] = now - sweep.started
        self.core.log(level, "pool.health.finished", **fields)

    def evict(self, now: float, res: Resource, reason: str, error: str) -> None:
        """Retire `res` after a failed or unanswered ping (exclusive: the core
        had it in hand for the ping)."""
        self.n["health_evictions"] += 1
        if self.sweep is not None:
            self.sweep.evicted += 1
        self.core.log(
            "warning", "pool.health.evicted", res.key, reason=reason, error=error
        )
        self.core.inventory.retire(now, res, reason, owned=self.exclusive)
