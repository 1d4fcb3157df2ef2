"""What every part of the core starts from: its coordinator and the shared
ledgers it writes to.

Part of the pure core (see [_core][pooler_actors._core]). A part keeps a
reference to its coordinator, [PoolCore][pooler_actors._core.PoolCore], and
reaches another part only through it (`self.core.waiters`, ...). The shared
ledgers are the coordinator's and are never replaced, so a part keeps them at
hand: the options, the counters (`n`), the timer heap and the effect list.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pooler_actors._core import PoolCore
    from pooler_actors._effects import Effect
    from pooler_actors._timers import Timers
    from pooler_actors.options import PoolOptions

__all__ = ["NO_KEY", "Part"]

NO_KEY: Any = object()
"""The `key` of a log effect about no key in particular."""


class Part:
    """A part of the core: its coordinator, and the ledgers all parts share."""

    def __init__(self, core: PoolCore) -> None:
        self.core = core
        self.options: PoolOptions = core.options
        self.n: dict[str, int] = core.n
        self.timers: Timers = core.timers
        self.effects: list[Effect] = core.effects
        #: Leases are exclusive (`max_holders=1`): idle resources are listed.
        self.exclusive = core.options.max_holders == 1
        #: One resource per key, any number of holders: `view` is published.
        self.shared = core.options.shared
        #: Creations first reserve a fleet-wide slot.
        self.fleetwide = core.options.global_capacity is not None

    def handlers(self) -> dict[str, Callable[[float, int], None]]:
        """The kinds of core timer this part handles, and how."""
        return {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of pool {self.core.name!r}>"
