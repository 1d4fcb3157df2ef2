"""Fault injection: factories, pings and closes that raise, hang or succeed.

Each resource's behaviour is drawn from a seeded RNG (set ``POOLER_FAULT_SEED``
to replay one); every assertion message carries the seed. Many threads
acquire, release, mark resources unhealthy and run health checks at once;
afterwards the invariants must hold: the cap was never exceeded (counted by
the resources themselves), every created resource was closed exactly once,
no caller is left waiting and no pool thread is left.
"""

from __future__ import annotations

import os
import random
import threading
from collections import Counter
from typing import Any

import pytest
from conftest import pool_threads, wait_for
from faults import Lab, OpMix, random_op, seeded_plans

from pooler_actors import (
    Pool,
    PoolClosedError,
)

CAP = 4
KEYS = [f"k{i}" for i in range(8)]
THREADS = 8
OPS_PER_THREAD = 120
WEIGHTS = (12, 3, 1)  # ok, raise, hang

_env_seed = os.environ.get("POOLER_FAULT_SEED")
SEEDS = [int(_env_seed)] if _env_seed else [1, 2, 3]


#: Faults are frequent here: a tenth of acquired resources turn unhealthy.
MIX = OpMix(
    acquire=0.45,
    release=0.75,
    health=0.85,
    release_all=0.9,
    timeouts=(0, 0.01, 0.05, 0.2),
    unhealthy=0.1,
)


def _client(
    pool: Pool[Any, Any], seed: int, errors: list[str], counts: Counter[str]
) -> None:
    rng = random.Random(seed)
    for _ in range(OPS_PER_THREAD):
        random_op(pool, rng, keys=KEYS, cap=CAP, mix=MIX, counts=counts, errors=errors)


@pytest.mark.timeout(60)  # a hang guard
@pytest.mark.parametrize("seed", SEEDS)
def test_random_faults_keep_every_invariant(seed: int) -> None:
    lab = Lab(CAP, seeded_plans(seed, WEIGHTS))
    pool: Pool[Any, Any] = Pool(
        lab.factory,
        max_open_resources=CAP,
        health_check_interval=0.02,
        ping_timeout=0.05,
        close_timeout=0.05,
        create_timeout=0.05,
        max_waiting=6,
        logger=lab.recorder,
    )
    errors: list[str] = []
    per_client: list[Counter[str]] = [Counter() for _ in range(THREADS)]
    clients = [
        threading.Thread(
            target=_client, args=(pool, seed * 1000 + i, errors, per_client[i])
        )
        for i in range(THREADS)
    ]
    try:
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(30)
        left = [t for t in clients if t.is_alive()]
        assert not left, f"seed={seed}: {len(left)} callers still waiting"
        stats = pool.stats()
        assert stats.wait_count == 0, f"seed={seed}: {stats}"
        assert stats.open_resources <= CAP, f"seed={seed}: {stats}"
    finally:
        pool.close()
        lab.gate.set()

    wait_for(lambda: not pool_threads(), timeout=30)
    with pytest.raises(PoolClosedError):
        pool.acquire("k0")
    outcomes = sum(per_client, Counter())
    context = f"seed={seed} faults={dict(lab.faults)} outcomes={dict(outcomes)}"
    assert not errors, f"{context}: {errors[:5]}"
    assert not lab.violations, f"{context}: {lab.violations[:5]}"
    assert lab.not_closed_once() == [], context
    assert lab.alive == set(), context  # abandoned ones closed once unstuck
    # The run really injected faults of each kind, and really served.
    assert sum(lab.faults.values()) > 0, context
    assert outcomes["ok"] > 0, context
    assert lab.max_alive <= CAP, context
