"""Pending operations: requests answered once resources reach a goal.

Part of the pure core (see [_core][pooler_actors._core]), like psycopg_pool's
maintenance tasks: each request is a small record, an `Op`, registered with
the resources it waits for (`Resource.ops`) and moved as they move
(`notify`): `release` and `release_all` wait for their resources to end (or
retire with holders), `prewarm` and `refresh` for creations to open or fail.
A refresh at the cap is a `Refill`, first in the slot queue. This part owns
the operations in flight (through the resources they wait on, and the
refills in the slot queue) and the `close` requests waiting for the pool to
stop (`closers`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from math import inf as _INF
from typing import TYPE_CHECKING

from pooler_actors._effects import Fail, Reply
from pooler_actors._inventory import ENDED
from pooler_actors._lifecycle import COUNTED, Phase
from pooler_actors._part import Part
from pooler_actors.errors import PoolClosedError

if TYPE_CHECKING:
    from pooler_actors._core import PoolCore
    from pooler_actors._inventory import Resource

__all__ = ["Op", "Ops", "Refill"]


@dataclass(eq=False, slots=True)
class Op:
    """A request answered once the resources it touched reach a goal.

    The one kind of pending operation: Release, ReleaseAll and Close wait for
    resources to end (or retire with holders), Prewarm and Refresh for
    creations to open or fail.
    """

    kind: str  # "release" | "prewarm" | "refresh"
    cid: int
    waiting: set[int] = field(default_factory=set)
    opened: bool = False
    results: dict[Hashable, str] = field(default_factory=dict)


@dataclass(eq=False, slots=True)
class Refill:
    """A refresh at the cap: create `key` anew with the next free slot."""

    key: Hashable
    op: Op


class Ops(Part):
    """Release, release-all, prewarm, refresh and close; see the module
    docstring."""

    def __init__(self, core: PoolCore) -> None:
        super().__init__(core)
        self.closers: list[int] = []  # `close` requests, answered at the stop
        #: When a close stops waiting for holders (`leave` timer): leases
        #: still out then are left to their holders.
        self.leave_at = _INF
        self._leave: int | None = None

    def handlers(self) -> dict[str, Callable[[float, int], None]]:
        """The kinds of core timer this part handles, and how."""
        return {"leave": self.on_leave}

    def release(self, now: float, cid: int, key: Hashable) -> None:
        """`Release`: retire `key`'s resources; reply once each is closed or
        retired with holders: whether one was open."""
        entry = self.core.inventory.keys.get(key)
        targets = list(entry.resources) if entry is not None else []
        if self.cancel_refills(key):
            # A refresh at the cap was waiting for its old resource to close:
            # it is cancelled, and this release waits for that close too.
            targets = [
                r
                for r in self.core.inventory.resources.values()
                if r.key == key and r.phase in COUNTED
            ]
        if targets:
            self.n["releases"] += len(targets)
            self.core.log("info", "pool.release", key)
        for res in targets:
            self.core.inventory.retire(now, res, "released")
        self.watch(Op("release", cid), targets)
        self.core.pump(now)

    def release_all(self, now: float, cid: int) -> None:
        """`ReleaseAll`: retire every resource; reply once none that existed
        when it arrived exists any more (or, if held, each is retiring)."""
        self.cancel_refills(None)
        targets = [
            r for r in self.core.inventory.resources.values() if r.phase in COUNTED
        ]
        count = sum(1 for r in targets if r.mapped)
        self.n["releases"] += count
        for res in targets:
            self.core.inventory.retire(now, res, "released")
        self.core.log("info", "pool.release_all", released=count)
        self.watch(Op("release_all", cid), targets)
        self.core.pump(now)

    def prewarm(self, now: float, cid: int, keys: Iterable[Hashable]) -> None:
        """`Prewarm`: create resources for `keys` as far as the cap allows."""
        if self.core.closing is not None:
            self.effects.append(Fail(cid, PoolClosedError(self.core.name)))
            return
        op = Op("prewarm", cid)
        created = []
        for key in keys:
            if key in op.results:
                continue
            entry = self.core.inventory.keys.get(key)
            if entry is not None and entry.resources:
                op.results[key] = "open"
            elif self.core.inventory.used < self.core.cap:
                created.append(self.core.creations.create(now, key, {}))
                op.results[key] = "creating"
            else:
                op.results[key] = "not_created"
        self.watch(op, created)
        self.core.pump(now)

    def refresh(self, now: float, cid: int, key: Hashable) -> None:
        """`Refresh`: replace `key`'s open resources with a fresh one.

        Below the cap the old ones serve until the new one is open; at the
        cap they retire first and the next free slot goes to the new one.
        Under a fleet-wide cap the new one first reserves a fleet slot; if
        none comes within `_fleet._FLEET_WAIT`, the old ones retire then.
        """
        entry = self.core.inventory.keys.get(key)
        olds = [r for r in entry.resources if r.phase is Phase.OPEN] if entry else []
        if not olds:
            self.effects.append(Reply(cid, False))
            return
        if self.core.closing is not None:
            self.effects.append(Fail(cid, PoolClosedError(self.core.name)))
            return
        self.n["refreshed"] += 1
        self.core.log("info", "pool.refresh", key)
        op = Op("refresh", cid)
        assert entry is not None
        standby = next((r for r in entry.resources if r.replaces), None)
        if standby is not None:  # a refresh of this key is under way: share it
            self.watch(op, [standby])
        elif self.core.inventory.used < self.core.cap:
            # The replacement, a standby: swapped in for `olds` once ready.
            new = self.core.creations.create(now, key, {})
            new.replaces = olds
            self.watch(op, [new])
        else:
            for res in olds:
                self.core.inventory.retire(now, res, "refreshed")
            self.core.waiters.first_in_line(Refill(key, op))
        self.core.pump(now)

    def watch(self, op: Op, resources: list[Resource]) -> None:
        """Make `op` wait for `resources` to reach its goal; answer it if none."""
        for res in resources:
            if self.reached(op, res):
                continue
            op.waiting.add(res.rid)
            res.ops.append(op)
        if not op.waiting:
            self.finish_op(op, op.opened)

    def reached(self, op: Op, res: Resource) -> bool:
        if op.kind in ("release", "release_all"):
            op.opened |= res.opened
            return res.phase in (Phase.RETIRING, *ENDED)
        return False  # prewarm and refresh wait for a creation to end

    def notify(self, res: Resource, what: str) -> None:
        """`res` opened, retired or ended: move the operations waiting on it."""
        for op in list(res.ops):
            done = False
            if op.kind in ("release", "release_all"):
                op.opened |= res.opened
                done = what in ("retired", "ended")
            elif what in ("opened", "ended"):
                done = True
                if op.kind == "prewarm":
                    ok = what == "opened" or res.opened
                    op.results[res.key] = "created" if ok else "failed"
                    if ok:
                        self.n["prewarmed"] += 1
                else:  # refresh: in place only if still in the key map
                    op.opened = what == "opened" and res.mapped
            if done:
                res.ops.remove(op)
                op.waiting.discard(res.rid)
                if not op.waiting:
                    self.finish_op(op, op.opened)

    def finish_op(self, op: Op, value: bool) -> None:
        if op.kind == "prewarm":
            self.core.log(
                "info", "pool.prewarm.finished", results=_printable(op.results)
            )
            self.effects.append(Reply(op.cid, dict(op.results)))
        elif op.kind == "release_all":
            self.effects.append(Reply(op.cid, None))
        else:
            self.effects.append(Reply(op.cid, value))

    def not_created(self, res: Resource) -> None:
        """`res` waits for a fleet slot: the prewarms waiting on it give up."""
        for op in [op for op in res.ops if op.kind == "prewarm"]:
            res.ops.remove(op)
            op.results[res.key] = "not_created"
            op.waiting.discard(res.rid)
            if not op.waiting:
                self.finish_op(op, op.opened)

    def cancel_refills(self, key: Hashable | None) -> bool:
        """Drop refreshes waiting for a slot (of `key`, or all); any dropped?"""
        refills = [
            i
            for i in self.core.waiters.slots
            if isinstance(i, Refill) and (key is None or i.key == key)
        ]
        for refill in refills:
            del self.core.waiters.slots[refill]
            self.finish_op(refill.op, False)
        return bool(refills)

    def close(self, now: float, cid: int, wait: float) -> None:
        """`close`: answered once the pool has stopped (`stopped`); holders
        are waited for `wait` seconds at most (the soonest of every close's)."""
        self.closers.append(cid)
        when = now + wait
        if when < self.leave_at:
            self.timers.cancel(self._leave)
            self.leave_at = when
            self._leave = self.timers.add(when, "leave", 0)

    def on_leave(self, now: float, _ident: int) -> None:
        """The close's wait for holders is over: leave every held resource."""
        self._leave = None
        inventory = self.core.inventory
        for res in list(inventory.resources.values()):
            if res.phase is Phase.RETIRING:
                inventory.leave(now, res)
        self.core.pump(now)

    def stopped(self) -> None:
        """The pool has stopped: answer every `close` that asked."""
        for cid in self.closers:
            self.effects.append(Reply(cid, None))
        self.closers.clear()
        self.timers.cancel(self._leave)
        self._leave = None


def _printable(results: dict[Hashable, str]) -> dict[str, str]:
    """Per-key results with string keys, so any renderer (JSON too) can log them."""
    return {key if isinstance(key, str) else repr(key): v for key, v in results.items()}
