"""The hit path (issue 12): a hit and a lease cycle against what users compare.

Measured side by side in interleaved rounds in one process:

- ``hit``: ``Pool.acquire(k)`` of an open key (shared mode);
- ``shared_lease``: ``with pool.lease(k)`` on a shared pool (``max_holders=None``);
- ``exclusive_lease``: ``with pool.lease(k)`` on an exclusive pool
  (``max_holders=1``) — a connection checkout;
- ``lock_dict``: a lock-and-dict keyed lookup, the floor;
- ``gcp``: ``generic-connection-pool``'s ``with pool.connection(ep)``.

Then 8 threads hitting 100 open keys, against the same threads on a
lock-and-dict; and a hit storm (4 threads) during which the supervisor's
mailbox depth is sampled and a ``stats()`` ask is timed, then the counters are
checked exact once the pool is quiet.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from _common import Conn, Row, interleaved, paired_ratio, pct, row, target
from bench_hit import _gcp_pool

from pooler_actors import Pool


def _single(quick: bool) -> list[Row]:
    n, rounds = (200, 5) if quick else (500, 41)
    shared: Pool[str, Conn] = Pool(Conn, name="fast-shared", health_check_interval=None)
    exclusive: Pool[str, Conn] = Pool(
        Conn, name="fast-exclusive", max_holders=1, health_check_interval=None
    )
    gcp = _gcp_pool()
    try:
        shared.acquire("k")
        with exclusive.lease("k"):
            pass
        lock = threading.Lock()
        table = {"k": Conn("k")}

        def lock_dict() -> object:
            with lock:
                return table["k"]

        def shared_lease() -> None:
            with shared.lease("k"):
                pass

        def exclusive_lease() -> None:
            with exclusive.lease("k"):
                pass

        fns: dict[str, Any] = {
            "hit": lambda: shared.acquire("k"),
            "shared_lease": shared_lease,
            "exclusive_lease": exclusive_lease,
            "lock_dict": lock_dict,
        }
        if gcp is not None:
            gpool, endpoint = gcp

            def gcp_cycle() -> None:
                with gpool.connection(endpoint):
                    pass

            fns["gcp"] = gcp_cycle
        medians, per_round = interleaved(fns, n, rounds)
    finally:
        shared.close()
        exclusive.close()
        if gcp is not None:
            gcp[0].close()
    rows = [row(f"fast.{name}", t * 1e6, "us") for name, t in medians.items()]
    ratio = paired_ratio(per_round, "hit", "lock_dict")
    rows.append(target("fast.hit_vs_lock_dict", ratio, 2))
    ratio = paired_ratio(per_round, "shared_lease", "lock_dict")
    rows.append(target("fast.shared_lease_vs_lock_dict", ratio, 8))
    if gcp is not None:
        rows.append(
            target("fast.hit_vs_gcp", paired_ratio(per_round, "hit", "gcp"), 0.2)
        )
        ratio = paired_ratio(per_round, "exclusive_lease", "gcp")
        rows.append(target("fast.exclusive_lease_vs_gcp", ratio, 0.3))
    else:
        rows.append(row("fast.gcp", float("nan"), "us", note="not installed"))
    return rows


def _threads(quick: bool) -> list[Row]:
    """8 threads over 100 open keys: the pool's hits against a lock-and-dict."""
    threads_n, per_thread = (8, 2_000) if quick else (8, 50_000)
    keys = [f"k{i}" for i in range(100)]
    pool: Pool[str, Conn] = Pool(
        Conn, name="fast-threads", max_open_resources=100, health_check_interval=None
    )
    lock = threading.Lock()
    table = {k: Conn(k) for k in keys}

    def with_lock(key: str) -> object:
        with lock:
            return table[key]

    def run(get: Any) -> float:
        """Ops/s from the first worker's start to the last one's end, as the
        workers themselves clock it (the main thread may run late)."""
        barrier = threading.Barrier(threads_n)
        spans: list[tuple[float, float]] = []

        def client(seed: int) -> None:
            picks = [random.Random(seed).choice(keys) for _ in range(per_thread)]
            barrier.wait()
            start = time.perf_counter()
            for key in picks:
                get(key)
            spans.append((start, time.perf_counter()))

        workers = [threading.Thread(target=client, args=(i,)) for i in range(threads_n)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        wall = max(end for _, end in spans) - min(start for start, _ in spans)
        return threads_n * per_thread / wall

    try:
        pool.prewarm(keys)
        pool_rates, lock_rates = [], []
        for _ in range(3):
            pool_rates.append(run(pool.acquire))
            lock_rates.append(run(with_lock))
    finally:
        pool.close()
    best_pool, best_lock = max(pool_rates), max(lock_rates)
    return [
        row("fast.threads_8x100.pool", best_pool, "ops/s"),
        row("fast.threads_8x100.lock_dict", best_lock, "ops/s"),
        row(
            "fast.threads_8x100.pool_vs_lock_dict",
            best_pool / best_lock,
            "ratio",
            target=">= 0.5",  # lock+dict / pool <= 2 (issue 20)
            ok=best_pool / best_lock >= 0.5,
        ),
    ]


def _storm(quick: bool) -> list[Row]:
    """A hit storm: mailbox depth, a stats() ask's latency, exact counters."""
    seconds, threads_n = (0.5, 4) if quick else (5.0, 4)
    pool: Pool[str, Conn] = Pool(Conn, name="fast-storm", health_check_interval=None)
    try:
        pool.acquire("k")
        idle = []
        for _ in range(200):
            t0 = time.perf_counter()
            pool.stats()
            idle.append(time.perf_counter() - t0)
        stop = threading.Event()
        counts = [0] * threads_n

        def client(i: int) -> None:
            acquire = pool.acquire
            n = 0
            while not stop.is_set():
                for _ in range(100):
                    acquire("k")
                n += 100
            counts[i] = n

        before = pool.stats().acquires
        workers = [threading.Thread(target=client, args=(i,)) for i in range(threads_n)]
        for t in workers:
            t.start()
        inbox: Any = pool.actor_ref.actor_inbox
        depths, during = [], []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            depths.append(inbox.qsize())
            t0 = time.perf_counter()
            pool.stats()
            during.append(time.perf_counter() - t0)
            time.sleep(0.001)
        stop.set()
        for t in workers:
            t.join()
        pool.stats()  # quiet now: every note is in before this ask
        stats = pool.stats()
        exact = stats.acquires - before == sum(counts)
    finally:
        pool.close()
    return [
        row("fast.storm.hits", sum(counts) / seconds, "hits/s"),
        target("fast.storm.max_mailbox_depth", max(depths), 2 * threads_n, unit="msgs"),
        row("fast.storm.stats_ask_p99_us", pct(during, 99) * 1e6, "us"),
        row("fast.storm.stats_ask_idle_p99_us", pct(idle, 99) * 1e6, "us"),
        target("fast.storm.counters_exact", 0.0 if exact else 1.0, 0.0, unit="off"),
    ]


def run(quick: bool) -> list[Row]:
    """Rows of the hit-path section."""
    return _single(quick) + _threads(quick) + _storm(quick)
