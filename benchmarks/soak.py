"""Soak: 32 client threads against one pool with injected faults, for N seconds.

Each resource's factory, ping and close succeed, raise or hang (for up to
``--hang`` seconds: a releaser thread opens the gate in batches), drawn from
a seeded RNG. Clients acquire (with and without deadlines), release,
release-all, mark resources unhealthy and trigger health checks. The
instrumented resources of ``tests/faults.py`` check the cap from their own
side the whole time. At the end the pool is closed and the figures printed:

    operations done, faults injected, invariant violations (must be 0),
    callers left waiting (0), threads leaked (0), resources not closed (0)

The exit status is non-zero if any must-be-zero figure is not.
Run: ``make soak SECONDS=60`` or ``python benchmarks/soak.py --seconds 5``.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from faults import Lab, OpMix, random_op, seeded_plans  # noqa: E402

from pooler_actors import (  # noqa: E402
    Pool,
    PoolClosedError,
)

CLIENTS = 32
CAP = 16
KEYS = [f"tenant-{i}" for i in range(48)]
WEIGHTS = (40, 3, 1)  # ok, raise, hang: per factory, ping and close


class _Events:
    """The pool's logger: feeds the lab (abandoned resources), keeps nothing."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.counts: Counter[str] = Counter()

    def _log(self, event: str, **fields: Any) -> None:
        self.counts[event] += 1
        self.lab._on_event(event, fields)

    debug = info = warning = error = critical = _log


#: Mostly acquires and releases, some health checks, rare release-alls.
MIX = OpMix(
    acquire=0.55,
    release=0.85,
    health=0.9,
    release_all=0.91,
    timeouts=(None, 0, 0.01, 0.1),
    unhealthy=0.02,
)


def _client(
    pool: Pool[Any, Any],
    seed: int,
    deadline: float,
    counts: Counter[str],
    errors: list[str],
) -> None:
    rng = random.Random(seed)
    while time.monotonic() < deadline:
        random_op(pool, rng, keys=KEYS, cap=CAP, mix=MIX, counts=counts, errors=errors)


def _releaser(lab: Lab, every: float, stop: threading.Event) -> None:
    """Unstick hung user code in batches, so stuck threads do not pile up."""
    while not stop.wait(every):
        old, lab.gate = lab.gate, threading.Event()
        old.set()


def _pool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("pooler_actors:")]


def run(seconds: float, seed: int, hang: float) -> dict[str, Any]:
    """Run the soak; return its figures."""
    lab = Lab(CAP, seeded_plans(seed, WEIGHTS))
    events = _Events(lab)
    pool: Pool[Any, Any] = Pool(
        lab.factory,
        max_open_resources=CAP,
        health_check_interval=0.05,
        ping_timeout=0.05,
        close_timeout=0.05,
        create_timeout=0.05,
        max_waiting=24,
        logger=events,
        name="soak",
    )
    stop = threading.Event()
    releaser = threading.Thread(target=_releaser, args=(lab, hang, stop), daemon=True)
    releaser.start()
    errors: list[str] = []
    counts = [Counter[str]() for _ in range(CLIENTS)]
    deadline = time.monotonic() + seconds
    clients = [
        threading.Thread(
            target=_client,
            args=(pool, seed * 1000 + i, deadline, counts[i], errors),
            daemon=True,
        )
        for i in range(CLIENTS)
    ]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(max(0.0, deadline - time.monotonic()))
    # Clients blocked without a deadline wait for a slot that only a release
    # frees: release everything until they are all served (at most 30 s).
    drain_deadline = time.monotonic() + 30
    while any(t.is_alive() for t in clients) and time.monotonic() < drain_deadline:
        pool.release_all()
        for thread in clients:
            thread.join(0.01)
    waiting = sum(t.is_alive() for t in clients)
    stats = pool.stats()
    if stats.open_resources > CAP:
        errors.append(f"open_resources {stats.open_resources} > {CAP}")

    pool.close()
    stop.set()
    releaser.join()
    lab.gate.set()
    try:
        pool.acquire(KEYS[0])
        errors.append("acquire after close did not fail")
    except PoolClosedError:
        pass
    leak_deadline = time.monotonic() + 10
    while _pool_threads() and time.monotonic() < leak_deadline:
        time.sleep(0.01)
    # Wait for late closes (of abandoned resources, once unstuck) to finish.
    while lab.not_closed_once() and time.monotonic() < leak_deadline:
        time.sleep(0.01)

    outcomes = sum(counts, Counter[str]())
    unhealthy = outcomes.pop("unhealthy", 0)
    return {
        "seed": seed,
        "seconds": seconds,
        "operations done": sum(outcomes.values()),
        "outcomes": dict(outcomes),
        "faults injected": sum(lab.faults.values()) + unhealthy,
        "fault kinds": {**dict(lab.faults), "unhealthy": unhealthy},
        "resources created": len(lab.created()),
        "most resources existing at once": lab.max_alive,
        "abandoned": stats.abandoned,
        "health evictions": stats.health_evictions,
        "health checks": stats.health_checks,
        "invariant violations": len(lab.violations) + len(errors),
        "callers left waiting": waiting,
        "threads leaked": len(_pool_threads()),
        "resources not closed": sum(1 for _, n in lab.not_closed_once() if n == 0),
        "resources closed twice": sum(1 for _, n in lab.not_closed_once() if n > 1),
        "_details": (lab.violations + errors)[:10],
    }


MUST_BE_ZERO = (
    "invariant violations",
    "callers left waiting",
    "threads leaked",
    "resources not closed",
    "resources closed twice",
)


def main(argv: list[str] | None = None) -> int:
    """Run the soak from the command line; 0 if every must-be-zero figure is 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--hang", type=float, default=0.3, help="seconds a hung call stays stuck"
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    print(
        f"soak: {args.seconds:g} s, {CLIENTS} client threads, seed {seed}", flush=True
    )
    figures = run(args.seconds, seed, args.hang)
    details = figures.pop("_details")
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"  {name:<{width}}  {value}")
    for line in details:
        print(f"  ! {line}")
    bad = [name for name in MUST_BE_ZERO if figures[name]]
    if bad:
        print(f"FAILED (seed {seed}): {', '.join(bad)}")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
