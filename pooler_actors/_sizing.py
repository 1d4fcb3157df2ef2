"""Sizing: the cap at run time, keys kept warm, and counters since last asked.

Part of the pure core (see [_core][pooler_actors._core]), SPEC 12 "Sizing":

- `resize` (`Resize`): a new `max_open_resources`. Growing hands the new
  slots out at once (the pump wakes the slot queue). Shrinking retires
  resources in service until at most the new cap are: idle ones first, least
  recently used first; then creations nobody waits for; then held ones (or
  handed out by a plain `acquire()`), least recently used first; then
  creations callers joined. A held one is never closed under its holders: it
  is `RETIRING` with no drain timer and closes at its last checkin (or when
  the pool closes, after `drain_timeout`). Until then the cap is exceeded
  only by resources leaving (retiring or closing); no creation starts while
  `used >= cap`. The reply (`None`) comes once every resource it retired is
  closed, abandoned, or retiring with holders: what `ReleaseAll` waits for.
- keys kept warm (option `keep_warm`): each pump, while `used < cap` and no
  caller or refresh waits for a slot (waiters first), a warm key with no
  resource in service gets a creation in the background. A creation of a
  warm key that fails for good (after its `create_retries`), or a fleet
  reservation withdrawn, blocks that key on a `warm` timer: `create_backoff`
  doubling per failure in a row (jittered 50-150 %, at most `_MAX_BACKOFF`
  seconds); a creation that opens resets it. It never spins.
- `pop_stats` (`PopStats`): the stats with the counters since the last
  `pop_stats` (its own baseline: `stats()` stays cumulative); gauges are
  current values.

Its own state: the warm keys, their failures in a row and which are blocked,
and the counters' baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pooler_actors._effects import Fail, Reply
from pooler_actors._inventory import held
from pooler_actors._lifecycle import COUNTED, Phase
from pooler_actors._ops import Op
from pooler_actors._part import Part
from pooler_actors.errors import PoolClosedError

if TYPE_CHECKING:
    from pooler_actors._core import PoolCore
    from pooler_actors._inventory import Resource
    from pooler_actors.stats import Stats

__all__ = ["Sizing"]

#: The longest wait, in seconds, before a warm key whose factory keeps
#: failing is tried again.
_MAX_BACKOFF = 60.0

_IN_CREATION = (Phase.RESERVING, Phase.CREATING, Phase.BACKOFF)


class Sizing(Part):
    """Resize, keys kept warm, pop_stats; see the module docstring."""

    def __init__(self, core: PoolCore) -> None:
        super().__init__(core)
        #: The keys kept warm, in the order given.
        self.warm: tuple[Hashable, ...] = tuple(core.options.keep_warm)
        self._index = {key: i for i, key in enumerate(self.warm)}
        #: Failed creations in a row, per warm key index.
        self.failures: dict[int, int] = {}
        #: Warm key indexes waiting for their `warm` timer, and its handle.
        self.blocked: dict[int, int | None] = {}
        #: The counters at the last `pop_stats`.
        self.baseline: dict[str, Any] = {}

    def handlers(self) -> dict[str, Callable[[float, int], None]]:
        """The kinds of core timer this part handles, and how."""
        return {"warm": self.on_warm}

    # --- resize -----------------------------------------------------------------

    def resize(self, now: float, cid: int, cap: int) -> None:
        """`Resize`: a new cap; reply once what it retired closed or retires."""
        core = self.core
        if core.closing is not None:
            self.effects.append(Fail(cid, PoolClosedError(core.name)))
            return
        if self.options.max_per_key > cap:
            self.effects.append(
                Fail(
                    cid,
                    ValueError(
                        f"max_open_resources must be >= max_per_key "
                        f"({self.options.max_per_key}), got {cap!r}"
                    ),
                )
            )
            return
        old, core.cap = core.cap, cap
        targets = self.over_cap(cap)
        for res in targets:
            core.inventory.retire(now, res, "resized")
            if res.phase is Phase.RETIRING:
                # Closed at its last checkin, never under its holders.
                self.timers.cancel(res.timers.pop("drain", None))
        core.log(
            "info",
            "pool.resized",
            max_open_resources=cap,
            was=old,
            retired=len(targets),
        )
        core.ops.watch(Op("release_all", cid), targets)
        core.pump(now)

    def over_cap(self, cap: int) -> list[Resource]:
        """The resources in service to retire so that at most `cap` are."""
        service = [
            r
            for r in self.core.inventory.resources.values()
            if r.mapped and r.phase in COUNTED
        ]
        excess = len(service) - cap
        if excess <= 0:
            return []

        def rank(r: Resource) -> tuple[int, float, int]:
            if r.phase is Phase.OPEN:
                busy = held(r) or r.handed_out
                return (2 if busy else 0, r.last_used, r.used_seq)
            return (3 if r.joiners else 1, -r.rid, 0)  # newest creation first

        return sorted(service, key=rank)[:excess]

    # --- keys kept warm ---------------------------------------------------------

    def fill(self, now: float) -> None:
        """Create a resource for each warm key without one, as far as the cap
        allows and nobody waits for a slot."""
        core = self.core
        if not self.warm or core.closing is not None:
            return
        inventory = core.inventory
        for i, key in enumerate(self.warm):
            if inventory.used >= core.cap or core.waiters.slots:
                return
            if i in self.blocked:
                continue
            entry = inventory.keys.get(key)
            if entry is not None and entry.resources:
                continue
            core.log("debug", "pool.warm.creating", key)
            core.creations.create(now, key, {})

    def opened(self, key: Hashable) -> None:
        """A creation of `key` opened: a warm key's failures are forgotten."""
        i = self._index.get(key)
        if i is not None:
            self.failures.pop(i, None)

    def failed(self, now: float, key: Hashable) -> None:
        """A creation of `key` failed for good (or its fleet reservation was
        withdrawn): a warm key waits before it is tried again."""
        i = self._index.get(key)
        if i is None or i in self.blocked or self.core.closing is not None:
            return
        n = self.failures[i] = self.failures.get(i, 0) + 1
        delay = self.options.create_backoff * 2 ** min(n - 1, 30)
        delay = min(delay, _MAX_BACKOFF) * (0.5 + self.core.creations.rand())
        self.blocked[i] = self.timers.add(now + delay, "warm", i)
        self.core.log("warning", "pool.warm.backoff", key, failures=n, delay_s=delay)

    def on_warm(self, now: float, i: int) -> None:
        """A warm key's wait is over: the pump (after timers) creates it."""
        self.blocked.pop(i, None)

    def stop(self) -> None:
        """The pool closes: no warm key is waited for any more."""
        for handle in self.blocked.values():
            self.timers.cancel(handle)
        self.blocked.clear()

    # --- pop_stats --------------------------------------------------------------

    def pop_stats(self, cid: int) -> None:
        """`PopStats`: the stats with the counters since the last call."""
        stats = self.core.snapshot()
        counters = {name: getattr(stats, name) for name in self.n} | {
            "wait_duration": stats.wait_duration
        }
        base = self.baseline
        self.baseline = counters
        delta: Stats = replace(
            stats, **{name: v - base.get(name, 0) for name, v in counters.items()}
        )
        self.effects.append(Reply(cid, delta))
