"""Contention and waking, with the pool's default resource actor type.

- Contention: 8 client threads acquire random keys among 100 open ones;
  throughput and per-acquire p50/p99.
- Waking: a pool with one slot, held by key ``a``; a caller waits for key
  ``b``; the time from ``release("a")`` being called to that caller holding
  its new resource (close of ``a`` and creation of ``b`` included).
"""

from __future__ import annotations

import random
import threading
import time

from _common import Conn, Row, pct, row, target, wait_until

from pooler_actors import Acquire, Pool


def contention(quick: bool) -> list[Row]:
    """8 threads, 100 open keys: ops/s and latency percentiles."""
    threads_n, per_thread = (8, 200) if quick else (8, 5000)
    keys = [f"k{i}" for i in range(100)]
    pool: Pool[str, Conn] = Pool(
        Conn,
        name="bench-contention",
        max_open_resources=200,
        health_check_interval=None,
    )
    try:
        pool.prewarm(keys)
        ref = pool.actor_ref
        latencies: list[list[float]] = [[] for _ in range(threads_n)]
        barrier = threading.Barrier(threads_n + 1)

        def client(n: int) -> None:
            rnd = random.Random(n)
            msgs = [Acquire(rnd.choice(keys)) for _ in range(per_thread)]
            out = latencies[n]
            clock = time.perf_counter
            barrier.wait()
            for msg in msgs:
                start = clock()
                ref.ask(msg)
                out.append(clock() - start)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(threads_n)]
        for t in threads:
            t.start()
        barrier.wait()
        start = time.perf_counter()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
    finally:
        pool.close()
    every = [x for per in latencies for x in per]
    return [
        row("contention.8x100.throughput", len(every) / wall, "ops/s"),
        row("contention.8x100.p50_us", pct(every, 50) * 1e6, "us"),
        row("contention.8x100.p99_us", pct(every, 99) * 1e6, "us"),
    ]


def waking(quick: bool) -> list[Row]:
    """Release-to-granted latency of a queued caller: p50 and p99."""
    n = 30 if quick else 500
    pool: Pool[str, Conn] = Pool(
        Conn, name="bench-waking", max_open_resources=1, health_check_interval=None
    )
    took: list[float] = []
    try:
        held = "a"
        pool.acquire(held)
        for i in range(n):
            want = f"w{i}"
            got_at: list[float] = []

            def waiter(key: str = want, out: list[float] = got_at) -> None:
                pool.acquire(key)
                out.append(time.perf_counter())

            t = threading.Thread(target=waiter)
            t.start()
            wait_until(lambda: pool.stats().wait_count == 1)
            released_at = time.perf_counter()
            pool.release(held)
            t.join()
            took.append(got_at[0] - released_at)
            held = want
    finally:
        pool.close()
    return [
        row("waking.p50_us", pct(took, 50) * 1e6, "us"),
        target("waking.p99_ms", pct(took, 99) * 1e3, 2.0, unit="ms"),
    ]


def run(quick: bool) -> list[Row]:
    """Contention, then waking."""
    return contention(quick) + waking(quick)
