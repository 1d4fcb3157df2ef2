"""Pool configuration: one frozen, validated dataclass."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["PoolOptions", "build_options"]

_pool_numbers = itertools.count(1)


def _default_name() -> str:
    return f"pool-{next(_pool_numbers)}"


@dataclass(frozen=True, kw_only=True)
class PoolOptions:
    """How a pool behaves. Every field is validated when the options are made.

    Durations are seconds; a huge one (say `1e10`) means "practically never",
    an infinite or non-positive one is a `ValueError` naming the field.

    Attributes:
        max_open_resources: the cap on resources that exist at once (being
            created, open, retiring or being closed). Default 10.
        health_check_interval: seconds between health checks; `None`
            disables them. Default 60.
        ping_timeout: seconds a `ping()` may take before the resource is
            evicted. Default 5.
        close_timeout: seconds a `close()` may take before the resource is
            abandoned and its slot freed; also bounds `Pool.close()`.
            Default 5.
        create_timeout: seconds a factory call may take before the creation
            is abandoned and its callers get `FactoryError`; `None` waits
            forever. Default 30.
        create_retries: how many more times a failing factory is tried for
            the same creation, with exponential backoff and jitter, never past
            the deadline of the callers waiting for it; as psycopg_pool
            reconnects, a transient failure (a server slot a just-closed
            connection still holds for a few ms, a restart) reaches no
            caller. `0` turns retries off. Only an `Exception` is retried:
            never a `BaseException` such as `KeyboardInterrupt`, nor a factory
            that returned something the pool cannot use (`NotPoolable`).
            Default 3.
        create_backoff: seconds before the first retry; each later retry
            waits twice as long (jittered 50-150 %): by default about 0.1,
            0.2 and 0.4 s, 0.7 s in all. Default 0.1.
        acquire_timeout: the timeout of an acquire or checkout that passes
            none; `None` waits forever (say so explicitly). Default 30: a
            wait that can never end (a nested `lease` of a key held by its
            own caller with `max_per_key=1`) ends in `AcquireTimeout`.
        max_waiting: how many callers may wait at once; the next one gets
            `TooManyWaiters`. `None` (default) is unbounded.
        max_lifetime: seconds after which a resource is retired and replaced
            on demand (jittered up to 5 % shorter). `None` (default): off.
        max_idle_time: seconds without use after which a resource is retired
            (for leases: since its last checkin, only while nobody holds it).
            `None` (default): off.
        max_holders: holders one resource may have at once: `None` (default)
            any number (shared, the Go model), `1` exclusive, `k` multiplexed.
        max_per_key: resources one key may have at once (at most
            `max_open_resources`). Default 1.
        drain_timeout: seconds a retiring resource waits for its holders
            before it is closed anyway. Default 30.
        is_broken: called with an exception that leaves a `lease` block; when
            it returns `True` the resource is checked in as broken. Default
            `None`: no exception means broken.
        leak_warning_after: seconds a lease may be held before
            `pool.lease.held_long` (warning) is logged for it, once, with
            where it was checked out (HikariCP's leakDetectionThreshold).
            Default `None`: off (no stack is taken at checkout).
        reset: called with the resource at every checkin, in the returning
            caller's thread, before the resource serves anyone else (a
            hand-on to a queued caller included); raising checks it in as
            broken. Async (awaited) in an `AsyncPool`. Default `None`.
        check: called with the resource at every checkout, in the caller's
            thread, before the caller gets it; raising discards it (checked
            in as broken) and the caller gets another within its timeout.
            Async (awaited) in an `AsyncPool`. Default `None`.
        reclaim_idle: when callers wait for a slot, close the least recently
            used resource nobody holds (never one a plain `acquire()` handed
            out) to make room. Default `True`.
        global_capacity: a fleet-wide capacity (such as
            `pooler_actors.redis.RedisCapacity`) to take a slot from before
            each creation. Default `None`.
        ping: called with a resource to check it (raise when it is
            unhealthy), instead of the resource's own `ping()`. Default
            `None`: `resource.ping()`.
        close: called with a resource to close it, instead of the resource's
            own `close()`. Default `None`: `resource.close()`. With `ping`
            and `close` both given, any object can be pooled as it is (a
            psycopg `Connection`, a `redis.Redis`). Both run in the
            resource's actor, never in the supervisor's thread; in an
            `AsyncPool` either may be `async def`.
        name: the pool's name in logs, stats and `repr`; `pool-N` by default.
        keep_warm: keys kept warm: each gets a resource created in the
            background when the pool starts and again after any close,
            eviction or expiry, as far as the cap allows and no caller waits
            for a slot (waiters first). A creation that fails for good waits
            `create_backoff`, doubling per failure in a row (at most 60 s),
            before the key is tried again. Stored as a tuple. Default `()`.
    """

    max_open_resources: int = 10
    health_check_interval: float | None = 60.0
    ping_timeout: float = 5.0
    close_timeout: float = 5.0
    create_timeout: float | None = 30.0
    create_retries: int = 3
    create_backoff: float = 0.1
    acquire_timeout: float | None = 30.0
    max_waiting: int | None = None
    max_lifetime: float | None = None
    max_idle_time: float | None = None
    max_holders: int | None = None
    max_per_key: int = 1
    drain_timeout: float = 30.0
    is_broken: Callable[[BaseException], bool] | None = None
    leak_warning_after: float | None = None
    reset: Callable[[Any], object] | None = None
    check: Callable[[Any], object] | None = None
    reclaim_idle: bool = True
    global_capacity: Any = None
    ping: Callable[[Any], object] | None = None
    close: Callable[[Any], object] | None = None
    name: str = field(default_factory=_default_name)
    keep_warm: Collection[Hashable] = ()

    def __post_init__(self) -> None:
        _check_int("max_open_resources", self.max_open_resources, minimum=1)
        _check_int("max_per_key", self.max_per_key, minimum=1)
        if self.max_per_key > self.max_open_resources:
            raise ValueError(
                f"max_per_key must be <= max_open_resources "
                f"({self.max_open_resources}), got {self.max_per_key!r}"
            )
        _check_int("create_retries", self.create_retries, minimum=0)
        for name in ("max_waiting", "max_holders"):
            value = getattr(self, name)
            if value is not None:
                _check_int(name, value, minimum=0 if name == "max_waiting" else 1)
        for name in ("ping_timeout", "close_timeout", "drain_timeout"):
            _check_seconds(name, getattr(self, name), optional=False)
        for name in (
            "health_check_interval",
            "create_timeout",
            "acquire_timeout",
            "max_lifetime",
            "max_idle_time",
            "leak_warning_after",
        ):
            _check_seconds(name, getattr(self, name), optional=True)
        _check_seconds("create_backoff", self.create_backoff, optional=False)
        if self.is_broken is not None and not callable(self.is_broken):
            raise TypeError(
                f"is_broken must be callable or None, got {self.is_broken!r}"
            )
        for name in ("ping", "close", "reset", "check"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise TypeError(
                    f"{name} must be a callable taking the resource, or None, "
                    f"got {value!r}"
                )
        if not isinstance(self.reclaim_idle, bool):
            raise TypeError(f"reclaim_idle must be a bool, got {self.reclaim_idle!r}")
        cap = self.global_capacity
        if cap is not None and not all(
            callable(getattr(cap, m, None)) for m in ("try_acquire", "release", "renew")
        ):
            raise TypeError(
                f"global_capacity must be a capacity such as RedisCapacity, got {cap!r}"
            )
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"name must be a non-empty str, got {self.name!r}")
        object.__setattr__(self, "keep_warm", _check_keys(self.keep_warm))

    @property
    def shared(self) -> bool:
        """Whether plain `acquire()` is allowed: any number of holders, one per key."""
        return self.max_holders is None and self.max_per_key == 1

    @classmethod
    def field_names(cls) -> frozenset[str]:
        """The names accepted as keyword options by `Pool` and `AsyncPool`."""
        return frozenset(f.name for f in fields(cls))


def build_options(options: PoolOptions | None, kwargs: dict[str, Any]) -> PoolOptions:
    """Options from `options=` or from keyword fields, not both."""
    if options is not None:
        if kwargs:
            raise TypeError(
                "pass either options= or option keywords, not both "
                f"(got {', '.join(sorted(kwargs))})"
            )
        if not isinstance(options, PoolOptions):
            raise TypeError(f"options must be a PoolOptions, got {options!r}")
        return options
    unknown = set(kwargs) - PoolOptions.field_names()
    if unknown:
        raise TypeError(f"unknown pool option(s): {', '.join(sorted(unknown))}")
    return PoolOptions(**kwargs)


def _check_keys(keys: object) -> tuple[Hashable, ...]:
    if isinstance(keys, str | bytes) or not isinstance(keys, Collection):
        raise TypeError(
            f"keep_warm must be a collection of keys, got {keys!r} "
            "(wrap one key in a list)"
        )
    for key in keys:
        try:
            hash(key)
        except TypeError:
            raise TypeError(f"keep_warm keys must be hashable, got {key!r}") from None
    return tuple(dict.fromkeys(keys))


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
        raise ValueError(
            f"{name} must be a positive, finite number of seconds, got {value!r}"
        )
