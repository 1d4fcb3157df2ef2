"""Pool configuration: one frozen, validated dataclass."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, fields

__all__ = ["PoolOptions"]

_pool_numbers = itertools.count(1)


def _default_name() -> str:
    return f"pool-{next(_pool_numbers)}"


@dataclass(frozen=True, kw_only=True)
class PoolOptions:
    """How a pool behaves. Every field is validated when the options are made.

    Attributes:
        max_open_resources: the cap on resources that exist at once (being
            created, open or being closed). Default 10.
        health_check_interval: seconds between health checks; ``None``
            disables them. Default 60.
        ping_timeout: seconds a ``ping()`` may take before the resource is
            evicted. Default 5.
        close_timeout: seconds a ``close()`` may take before the resource is
            abandoned and its slot freed; also bounds ``Pool.close()``.
            Default 5.
        create_timeout: seconds a factory call may take before the creation
            is abandoned and its callers get ``FactoryError``; ``None`` waits
            forever. Default 30.
        max_waiting: how many callers may queue for a slot; the next one gets
            ``TooManyWaiters``. ``None`` (default) is unbounded.
        max_lifetime: seconds after which a resource is closed and replaced on
            demand (jittered a few percent shorter). ``None`` (default): off.
        max_idle_time: seconds without an acquire after which a resource is
            closed. ``None`` (default): off.
        name: the pool's name in logs, stats and ``repr``; ``pool-N`` by
            default.
    """

    max_open_resources: int = 10
    health_check_interval: float | None = 60.0
    ping_timeout: float = 5.0
    close_timeout: float = 5.0
    create_timeout: float | None = 30.0
    max_waiting: int | None = None
    max_lifetime: float | None = None
    max_idle_time: float | None = None
    name: str = field(default_factory=_default_name)

    def __post_init__(self) -> None:
        _check_int("max_open_resources", self.max_open_resources, minimum=1)
        if self.max_waiting is not None:
            _check_int("max_waiting", self.max_waiting, minimum=0)
        for name in ("ping_timeout", "close_timeout"):
            _check_seconds(name, getattr(self, name), optional=False)
        for name in (
            "health_check_interval",
            "create_timeout",
            "max_lifetime",
            "max_idle_time",
        ):
            _check_seconds(name, getattr(self, name), optional=True)
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"name must be a non-empty str, got {self.name!r}")

    @classmethod
    def field_names(cls) -> frozenset[str]:
        """The names accepted as keyword options by ``Pool`` and ``AsyncPool``."""
        return frozenset(f.name for f in fields(cls))


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def _check_seconds(name: str, value: object, *, optional: bool) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = "a number of seconds or None" if optional else "a number of seconds"
        raise TypeError(f"{name} must be {kind}, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
