"""CPU per request, the pool against psycopg_pool, without a database.

The 24 x 8 PostgreSQL shape of `bench_pg` is bound by the client's CPU when
pinned: what the pool spends per request is what it loses in throughput.
This driver measures that cost alone: `--threads` threads lease `--keys`
keys in turn (one resource per key, exclusive), doing `--work` inside each
lease, in one process pinned to one CPU (unless `--no-pin`), and prints the
process's CPU per request (`os.times()`), the supervisor thread's (its own
clock), the share of checkouts that waited and the context switches per
request (the workers', from `/proc`). psycopg_pool runs one
`ConnectionPool` per key (`min_size=max_size=1`) over fake connections.

    python benchmarks/cpu_per_request.py --pool pooler
    python benchmarks/cpu_per_request.py --pool psycopg --work select

Used for issue 20's fourth pass (docs/performance.md); no target here.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import _common

WORK: dict[str, Callable[[], object]] = {
    "sleep": lambda: time.sleep(0),  # releases the GIL and yields the CPU
    "select": lambda: select.select([], [], [], 0),  # releases the GIL only
    "none": lambda: None,
}


def _switches(tid: int) -> tuple[int, int]:
    """A thread's voluntary and involuntary context switches so far."""
    found = {}
    with open(f"/proc/self/task/{tid}/status", encoding="ascii") as status:
        for line in status:
            if "ctxt_switches" in line:
                name, value = line.split(":")
                found[name.strip()] = int(value)
    return found["voluntary_ctxt_switches"], found["nonvoluntary_ctxt_switches"]


def _pooler(keys: list[str]) -> tuple[Callable[[str], Any], Callable[[], str]]:
    from pooler_actors import Pool  # noqa: PLC0415

    class Conn:
        def close(self) -> None:
            pass

        def ping(self) -> None:
            pass

    pool: Pool[str, Conn] = Pool(
        lambda key: Conn(),
        max_open_resources=len(keys),
        max_holders=1,
        health_check_interval=None,
    )
    for key in keys:
        with pool.lease(key):
            pass

    def waited() -> str:
        stats = pool.stats()
        pool.close()
        return f"{stats.waits / stats.acquires:.3f} of checkouts waited"

    return pool.lease, waited


def _psycopg(keys: list[str]) -> tuple[Callable[[str], Any], Callable[[], str]]:
    import logging  # noqa: PLC0415

    from psycopg import pq  # noqa: PLC0415
    from psycopg_pool import ConnectionPool  # noqa: PLC0415

    logging.getLogger("psycopg").setLevel(logging.WARNING)

    class PgConn:
        transaction_status = pq.TransactionStatus.IDLE
        status = pq.ConnStatus.OK

    class Fake:
        def __init__(self) -> None:
            self.pgconn = PgConn()
            self.closed = self.broken = False
            self.autocommit = True

        @classmethod
        def connect(cls, conninfo: str = "", **kwargs: Any) -> Fake:
            return cls()

        def close(self) -> None:
            self.closed = True

        def __enter__(self) -> Fake:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    pools = {
        key: ConnectionPool(
            "", connection_class=Fake, min_size=1, max_size=1, open=True, check=None
        )
        for key in keys
    }
    for pool in pools.values():
        pool.wait(5)

    def waited() -> str:
        stats: Counter[str] = Counter()
        for pool in pools.values():
            stats.update(pool.get_stats())
            pool.close()
        return f"{stats['requests_queued'] / stats['requests_num']:.3f} queued"

    return (lambda key: pools[key].connection()), waited


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pool", choices=["pooler", "psycopg"], default="pooler")
    parser.add_argument("--threads", type=int, default=24)
    parser.add_argument("--keys", type=int, default=8)
    parser.add_argument("--requests", type=int, default=20_000, help="per thread")
    parser.add_argument("--work", choices=sorted(WORK), default="sleep")
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args()
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    _common.quiet_logging()
    keys = [f"k{i}" for i in range(args.keys)]
    enter, waited = (_pooler if args.pool == "pooler" else _psycopg)(keys)
    work, n = WORK[args.work], args.requests
    switches: dict[int, tuple[int, int]] = {}

    def client(j: int) -> None:
        for i in range(n):
            with enter(keys[(i + j) % len(keys)]):
                work()
        switches[j] = _switches(threading.get_native_id())

    supervisor = next(
        (t for t in threading.enumerate() if t.name.endswith(":supervisor")), None
    )

    def supervisor_cpu() -> float:
        if supervisor is None or supervisor.ident is None:
            return 0.0
        with contextlib.suppress(OSError):
            return time.clock_gettime(time.pthread_getcpuclockid(supervisor.ident))
        return 0.0

    threads = [threading.Thread(target=client, args=(j,)) for j in range(args.threads)]
    before, sup_before = os.times(), supervisor_cpu()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after, sup_after = os.times(), supervisor_cpu()
    requests = args.threads * n
    cpu = (after.user - before.user) + (after.system - before.system)
    voluntary = sum(s[0] for s in switches.values()) / requests
    involuntary = sum(s[1] for s in switches.values()) / requests
    print(
        f"{args.pool} {args.threads} x {args.keys}, work {args.work}: "
        f"{cpu / requests * 1e6:.2f} µs CPU a request "
        f"(supervisor {(sup_after - sup_before) / requests * 1e6:.2f}), "
        f"{waited()}, switches a request {voluntary:.2f} + {involuntary:.2f}"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
