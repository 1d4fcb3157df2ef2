"""Scale, churn and health sweeps, for each resource actor design side by side.

For each design (``executor``: actors drained by a shared executor;
``thread``: one pykka ``ThreadingActor`` and OS thread per resource) one pool
goes through the same phases in the same process:

1. 10 keys open: hit latency (and a bare pykka ask beside it);
2. churn: acquire of a new key plus its release, beside a bare pykka actor
   start + stop;
3. 1,000 then 10,000 keys open: hit latency at each, time to open them, RSS
   per open resource;
4. a health sweep over the 10,000: its wall time, and hit p99 during it
   against idle;
5. ``release_all``: time to close the 10,000.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from _common import (
    DESIGNS,
    Conn,
    Echo,
    Row,
    design,
    interleaved,
    paired_ratio,
    pct,
    row,
    rss_kib,
    samples,
    target,
)

from pooler_actors import Acquire, Pool
from pooler_actors._messages import HealthTick
from pooler_actors.supervisor import PoolSupervisor


class _PingCounter:
    """Sets ``done`` once ``target`` pings have run (in the resource actors)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.target = -1
        self._count = itertools.count(1)  # next() is atomic in CPython

    def reset(self, target: int) -> None:
        self.done.clear()
        self._count = itertools.count(1)
        self.target = target

    def ping(self) -> None:
        if next(self._count) == self.target:
            self.done.set()


class _Counted(Conn):
    """A resource whose ``ping()`` counts toward a sweep's end."""

    __slots__ = ("_counter",)

    def __init__(self, key: object, counter: _PingCounter) -> None:
        super().__init__(key)
        self._counter = counter

    def ping(self) -> None:
        self._counter.ping()


def _hit_rounds(
    pool: Pool[str, Conn], echo: Any, keys: list[str], n: int, rounds: int
) -> tuple[float, float, float]:
    """Hit µs, bare-ask µs and their paired ratio, cycling over ``keys``."""
    ref = pool.actor_ref
    msgs = [Acquire(k) for k in keys]
    i = 0

    def hit() -> object:
        nonlocal i
        i += 1
        return ref.ask(msgs[i % len(msgs)])

    medians, per_round = interleaved(
        {"hit": hit, "ask": lambda: echo.ask(1)}, n, rounds
    )
    return (
        medians["hit"] * 1e6,
        medians["ask"] * 1e6,
        paired_ratio(per_round, "hit", "ask"),
    )


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_design(name: str, big: int, quick: bool) -> tuple[list[Row], dict[str, float]]:
    """Rows for one design, and its key figures for the side-by-side ratios."""
    n, rounds = (100, 3) if quick else (200, 41)
    churn_n, churn_rounds = (20, 3) if quick else (100, 15)
    p = f"scale.{name}"
    fig: dict[str, float] = {}
    rows: list[Row] = []
    pings = _PingCounter()
    echo = Echo.start()
    pool: Pool[str, Conn] = Pool(
        lambda key: _Counted(key, pings),
        name=f"bench-{name}",
        max_open_resources=big + 100,
        health_check_interval=None,
        ping_timeout=120,
        close_timeout=120,
        create_timeout=None,
    )
    try:
        small = [f"s{i}" for i in range(10)]
        pool.prewarm(small)
        hit10, ask10, ratio10 = _hit_rounds(pool, echo, small, n, rounds)
        rows += [
            row(f"{p}.hit_us@10", hit10, "us"),
            row(f"{p}.pykka_ask_us@10", ask10, "us"),
            row(f"{p}.hit_vs_pykka_ask@10", ratio10, "ratio"),
        ]

        # Churn: a new key each time, released (and closed) before the next.
        counter = iter(range(10**9))

        def churn() -> None:
            key = f"c{next(counter)}"
            pool.acquire(key)
            pool.release(key)

        def bare() -> None:
            Echo.start().stop()

        medians, per_round = interleaved(
            {"churn": churn, "bare": bare}, churn_n, churn_rounds
        )
        fig["churn"] = paired_ratio(per_round, "churn", "bare")
        rows += [
            row(f"{p}.churn_acquire_new_release_us", medians["churn"] * 1e6, "us"),
            row(f"{p}.pykka_start_stop_us", medians["bare"] * 1e6, "us"),
            target(f"{p}.churn_vs_pykka_start_stop", fig["churn"], 2),
        ]

        # Scale: open 1,000, then up to `big`, measuring hits at each size.
        mid = 1000 if big >= 10_000 else big // 3
        rss0 = rss_kib()
        open_s = _timed(lambda: pool.prewarm(f"r{i}" for i in range(mid - 10)))
        hit_mid, _, _ = _hit_rounds(pool, echo, small, n, rounds)
        open_s += _timed(
            lambda: pool.prewarm(f"r{i}" for i in range(mid - 10, big - 10))
        )
        rss1 = rss_kib()
        hit_big, ask_big, ratio_big = _hit_rounds(pool, echo, small, n, rounds)
        assert pool.stats().open == big
        fig["hit_big_vs_10"] = hit_big / hit10
        fig["rss_kib"] = (rss1 - rss0) / (big - 10)
        fig["open_s"] = open_s
        rows += [
            row(f"{p}.hit_us@{mid}", hit_mid, "us"),
            row(f"{p}.hit_us@{big}", hit_big, "us"),
            row(f"{p}.pykka_ask_us@{big}", ask_big, "us"),
            row(f"{p}.hit_vs_pykka_ask@{big}", ratio_big, "ratio"),
            target(f"{p}.hit@{big}_vs_hit@10", fig["hit_big_vs_10"], 1.2),
            target(f"{p}.rss_per_resource_kib", fig["rss_kib"], 64, unit="KiB"),
            row(f"{p}.open_{big}_s", open_s, "s"),
        ]

        # Health sweep over every open resource; hits sampled meanwhile.
        hit_keys = [Acquire(k) for k in small]
        ref = pool.actor_ref
        j = 0

        def one_hit() -> object:
            nonlocal j
            j += 1
            return ref.ask(hit_keys[j % 10])

        def sweep(during: list[float] | None) -> float:
            """Run one sweep; time hits meanwhile into ``during`` if given."""
            pings.reset(big)
            checks = pool.stats().health_checks
            start = clock()
            ref.tell(HealthTick())
            while not pings.done.is_set():
                if during is None:
                    pings.done.wait()
                    break
                t0 = clock()
                one_hit()
                during.append(clock() - t0)
                # A hit no longer waits on the supervisor, so a caller that
                # does nothing but hit would hold the GIL for whole switch
                # intervals; a real caller does other work between hits.
                time.sleep(0)
            # Every ping has run; this ask queues behind (nearly) all reports.
            assert pool.stats().health_checks == checks + 1
            return clock() - start

        clock = time.perf_counter
        idle = samples(one_hit, 300 if quick else 5000)
        sweep_s = sweep(None)  # alone: its wall time
        during: list[float] = []
        sweep_busy_s = sweep(during)  # with a caller hitting all along
        fig["sweep_p99_ratio"] = pct(during, 99) / pct(idle, 99)
        rows += [
            row(f"{p}.sweep_{big}_s", sweep_s, "s"),
            row(
                f"{p}.sweep_{big}_s_while_hit",
                sweep_busy_s,
                "s",
                note=f"{len(during)} hits during",
            ),
            row(f"{p}.hit_p99_us_idle", pct(idle, 99) * 1e6, "us"),
            row(f"{p}.hit_p99_us_during_sweep", pct(during, 99) * 1e6, "us"),
            target(f"{p}.hit_p99_sweep_vs_idle", fig["sweep_p99_ratio"], 5),
        ]
        fig["sweep_s"] = sweep_s

        close_s = _timed(pool.release_all)
        fig["close_s"] = close_s
        rows.append(row(f"{p}.close_{big}_s", close_s, "s"))
    finally:
        pool.close()
        echo.stop()
    return rows, fig


def run(quick: bool) -> list[Row]:
    """Both designs, one after the other, then the ratios between them."""
    big = 300 if quick else 10_000
    rows: list[Row] = []
    figs: dict[str, dict[str, float]] = {}
    default = PoolSupervisor.resource_actor_type
    for name in ("executor", "thread"):
        with design(name):  # read at each resource creation: hold it throughout
            design_rows, figs[name] = run_design(name, big, quick)
        if DESIGNS[name] is not default:
            # Measured for comparison only: the pool does not use this design.
            for r in design_rows:
                if "target" in r:
                    r["reference"] = True
        rows += design_rows
    ex, th = figs["executor"], figs["thread"]
    rows += [
        row(
            "scale.thread_vs_executor.rss_per_resource",
            th["rss_kib"] / ex["rss_kib"],
            "x",
        ),
        row("scale.thread_vs_executor.open_time", th["open_s"] / ex["open_s"], "x"),
        row("scale.thread_vs_executor.close_time", th["close_s"] / ex["close_s"], "x"),
        row("scale.thread_vs_executor.sweep_time", th["sweep_s"] / ex["sweep_s"], "x"),
    ]
    return rows
