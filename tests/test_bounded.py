"""Bounded waits by default, close with leases out, lease tracing events and
checkin's argument check (SPEC 12: "Bounded waits by default", "Messages",
"Events")."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import pytest
from resources import Res

from pooler_actors import AcquireTimeout, Pool, PoolOptions


def new_pool(**options: Any) -> Pool[Hashable, Res]:
    options.setdefault("health_check_interval", None)
    return Pool(Res, **options)


# --- acquire_timeout defaults to 30 s ----------------------------------------


def test_acquire_timeout_defaults_to_30_seconds() -> None:
    assert PoolOptions().acquire_timeout == 30.0
    assert PoolOptions(acquire_timeout=None).acquire_timeout is None  # explicit
    with new_pool(max_holders=1) as pool:
        assert pool.options.acquire_timeout == 30.0


def test_a_nested_lease_of_the_same_key_times_out_instead_of_hanging() -> None:
    # max_per_key=1, exclusive: the inner lease waits for the outer one, which
    # its own caller holds; it ends in AcquireTimeout (30 s by default).
    with new_pool(max_holders=1, acquire_timeout=0.1) as pool:
        with pool.lease("a") as outer:
            with pytest.raises(AcquireTimeout), pool.lease("a"):
                pass  # pragma: no cover - never reached
            assert outer.key == "a"
        with pool.lease("a") as again:  # the pool still serves the key
            assert again.key == "a"
