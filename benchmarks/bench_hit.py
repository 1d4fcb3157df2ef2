"""Hit latency: an acquire of an open key beside what a user could use instead.

Measured in interleaved rounds in one process: ``Pool.acquire(k)``,
``ref.ask(Acquire(k))``, a bare pykka echo actor's ``ask`` round trip (the
floor: every acquire is one message to the supervisor), a lock-and-dict keyed
lookup (no actor at all) and ``generic-connection-pool``'s
``with pool.connection(ep)`` on a warm endpoint.
"""

from __future__ import annotations

import threading
from typing import Any

from _common import Conn, Echo, Row, interleaved, paired_ratio, row, target

from pooler_actors import Acquire, Pool


def _gcp_pool() -> tuple[Any, Any] | None:
    """A warm generic-connection-pool, or ``None`` if it is not installed."""
    try:
        from generic_connection_pool.threading import ConnectionPool  # noqa: PLC0415
        from generic_connection_pool.threading.pool import (  # noqa: PLC0415
            BaseConnectionManager,
        )
    except ImportError:
        return None

    class Manager(BaseConnectionManager[str, Conn]):
        def create(self, endpoint: str, timeout: float | None = None) -> Conn:
            return Conn(endpoint)

        def dispose(
            self, endpoint: str, conn: Conn, timeout: float | None = None
        ) -> None:
            conn.close()

    pool: Any = ConnectionPool[str, Conn](
        Manager(), min_idle=1, max_size=1, total_max_size=100
    )
    with pool.connection("k"):
        pass
    return pool, "k"


def run(quick: bool) -> list[Row]:
    """Rows: per-call µs of each way, and each one's ratio to the pykka ask."""
    n, rounds = (200, 5) if quick else (200, 101)
    echo = Echo.start()
    pool: Pool[str, Conn] = Pool(Conn, name="bench-hit", health_check_interval=None)
    gcp = _gcp_pool()
    try:
        pool.acquire("k")
        ref = pool.actor_ref
        msg = Acquire("k")
        lock = threading.Lock()
        table = {"k": Conn("k")}

        def lock_dict() -> object:
            with lock:
                return table["k"]

        fns: dict[str, Any] = {
            "pykka_ask": lambda: echo.ask("k"),
            "pool_acquire": lambda: pool.acquire("k"),
            "ref_ask_acquire": lambda: ref.ask(Acquire("k")),
            "ref_ask_same_msg": lambda: ref.ask(msg),
            "lock_dict": lock_dict,
        }
        if gcp is not None:
            gpool, endpoint = gcp

            def gcp_connection() -> None:
                with gpool.connection(endpoint):
                    pass

            fns["gcp_connection"] = gcp_connection
        medians, per_round = interleaved(fns, n, rounds)
    finally:
        echo.stop()
        pool.close()
        if gcp is not None:
            gcp[0].close()

    rows = [row(f"hit.{name}", t * 1e6, "us") for name, t in medians.items()]
    rows.append(
        target(
            "hit.pool_acquire_vs_pykka_ask",
            paired_ratio(per_round, "pool_acquire", "pykka_ask"),
            1.2,
        )
    )
    rows.append(
        target(
            "hit.ref_ask_vs_pykka_ask",
            paired_ratio(per_round, "ref_ask_acquire", "pykka_ask"),
            1.2,
        )
    )
    for name in ("lock_dict", "gcp_connection"):
        if name in per_round:
            rows.append(
                row(
                    f"hit.{name}_vs_pykka_ask",
                    paired_ratio(per_round, name, "pykka_ask"),
                    "ratio",
                )
            )
    if gcp is None:
        rows.append(row("hit.gcp_connection", float("nan"), "us", note="not installed"))
    return rows
