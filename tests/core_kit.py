"""What the tests that drive the pure core by hand share: a resource it
never calls, a core with a fixed jitter, and its effects taken by type."""

from __future__ import annotations

from typing import Any

from pooler_actors._core import PoolCore
from pooler_actors.options import PoolOptions


class Res:
    """A resource the core hands out (it never calls it)."""

    def close(self) -> None:
        pass

    def ping(self) -> None:
        pass


def make_core(**options: Any) -> PoolCore:
    """A started core (health checks off unless asked for)."""
    options.setdefault("health_check_interval", None)
    core = PoolCore(PoolOptions(**options), pool_id=object(), rand=lambda: 0.5)
    core.start(0.0)
    return core


def take(core: PoolCore, kind: type) -> list[Any]:
    """The effects of one type emitted so far; all effects are cleared."""
    found = [e for e in core.effects if isinstance(e, kind)]
    core.effects.clear()
    return found
