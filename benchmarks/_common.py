"""Shared helpers of the benchmark suite: timing, RSS, designs, quiet logging.

Every figure is a median over interleaved rounds, and every ratio pairs two
figures from the same rounds of the same process: the machine is noisy and
shared, so absolute times drift while ratios stay put.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import statistics
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any

import pykka
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pooler_actors import supervisor as _supervisor
from pooler_actors.resource import (
    BaseResourceActor,
    ExecutorResourceActor,
    ThreadResourceActor,
)

Row = dict[str, Any]

#: The two resource actor designs measured side by side.
DESIGNS: dict[str, type[BaseResourceActor]] = {
    "executor": ExecutorResourceActor,
    "thread": ThreadResourceActor,
}


class Conn:
    """The cheapest Reusable: the benchmark times the pool, not a resource."""

    __slots__ = ("key",)

    def __init__(self, key: Hashable = None) -> None:
        self.key = key

    def ping(self) -> None:
        pass

    def close(self) -> None:
        pass


class Echo(pykka.ThreadingActor):
    """A bare pykka actor: the floor every acquire is measured against."""

    def on_receive(self, message: Any) -> Any:
        return message


def quiet_logging() -> None:
    """structlog as in production (info and up), output discarded."""
    structlog.configure(
        processors=[],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )


@contextlib.contextmanager
def design(name: str) -> Iterator[None]:
    """Pools started inside use the ``name`` resource actor type."""
    sup: Any = _supervisor.PoolSupervisor
    saved = sup.resource_actor_type
    sup.resource_actor_type = DESIGNS[name]
    try:
        yield
    finally:
        sup.resource_actor_type = saved


def rss_kib() -> int:
    """This process's resident set size, in KiB (Linux)."""
    gc.collect()
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def per_op(fn: Callable[[], object], n: int) -> float:
    """Seconds per call of ``fn`` over ``n`` calls in a tight loop."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def interleaved(
    fns: dict[str, Callable[[], object]], n: int, rounds: int
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Time each of ``fns`` in alternating rounds of ``n`` calls.

    Returns the median seconds per call of each, and the per-round figures
    (so a ratio can be taken round by round: noise that comes and goes
    between rounds then cancels out).
    """
    names = list(fns)
    for name in names:  # warm up
        per_op(fns[name], max(1, n // 10))
    per_round: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            per_round[name].append(per_op(fns[name], n))
    return {k: statistics.median(v) for k, v in per_round.items()}, per_round


def paired_ratio(per_round: dict[str, list[float]], num: str, den: str) -> float:
    """Median over rounds of ``num / den``, each pair from the same round."""
    return statistics.median(
        a / b for a, b in zip(per_round[num], per_round[den], strict=True)
    )


def samples(fn: Callable[[], object], n: int) -> list[float]:
    """Seconds taken by each of ``n`` calls of ``fn``."""
    clock = time.perf_counter
    out = []
    for _ in range(n):
        start = clock()
        fn()
        out.append(clock() - start)
    return out


def pct(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, nearest rank."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def row(name: str, value: float, unit: str, **extra: Any) -> Row:
    """One line of the results table."""
    return {"name": name, "value": value, "unit": unit, **extra}


def target(name: str, value: float, limit: float, unit: str = "ratio") -> Row:
    """A line of the table with a target: ``value <= limit``."""
    return row(name, value, unit, target=f"<= {limit:g}", ok=value <= limit)


def pool_threads() -> int:
    """How many threads named ``pooler_actors:...`` are alive."""
    return sum(1 for t in threading.enumerate() if t.name.startswith("pooler_actors:"))


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll ``predicate`` until true; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not met within {timeout} s: {predicate}")
        time.sleep(0.001)
