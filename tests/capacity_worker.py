"""One process of a fleet, for tests/test_redis_capacity.py: a CapacityDriver on Redis.

Run as `python capacity_worker.py URL NAME LIMIT TTL WORKER MODE [ARGS]`.

MODE `cycle DEMAND TOTAL HOLD_MS`: keep DEMAND reservations outstanding until
TOTAL were granted; hold each grant HOLD_MS ms as a plain "resource" counted
through the server (INCR on grant, DECR before release), then print
`done <grants> <highest count seen>`.

MODE `interactive`: read `reserve RID`, `release RID`, `cancel RID`, `quit` on
stdin; print `granted RID HELD`, `unavailable RID`, `lost RID` as they come.
Each grant is also appended (RPUSH) to the list `<NAME>:order` as
`WORKER:RID`, so the test reads the fleet's grant order from the server.
"""

from __future__ import annotations

import heapq
import queue
import sys
import threading
import time
from collections.abc import Callable

import redis

from pooler_actors._capacity import CapacityDriver
from pooler_actors.redis import RedisCapacity


def main() -> None:
    url, name, limit, ttl, worker, mode, *rest = sys.argv[1:]
    cap = RedisCapacity(url, name=name, limit=int(limit), lease_ttl=float(ttl))
    plain = redis.Redis.from_url(url, socket_timeout=5)
    events: queue.Queue[tuple[str, int]] = queue.Queue()
    out_lock = threading.Lock()

    def say(line: str) -> None:
        with out_lock:
            print(line, flush=True)

    def granted(rid: int, held: bool) -> None:
        plain.rpush(f"{name}:order", f"{worker}:{rid}")
        events.put(("granted", rid))
        if mode == "interactive":
            say(f"granted {rid} {held}")

    driver = CapacityDriver(
        cap,
        pool_name=f"worker-{worker}",
        on_granted=granted,
        on_unavailable=lambda rid, exc: say(f"unavailable {rid} {exc}"),
        on_lost=lambda rid: say(f"lost {rid}"),
    )
    cap.check()
    say("ready")
    try:
        if mode == "cycle":
            demand, total, hold_ms = map(int, rest)
            cycle(
                driver, plain, name, events, say,
                demand=demand, total=total, hold_ms=hold_ms,
            )  # fmt: skip
        else:
            for line in sys.stdin:
                command, *args = line.split()
                if command == "quit":
                    break
                getattr(driver, command)(int(args[0]))
    finally:
        driver.close(timeout=5)


def cycle(
    driver: CapacityDriver,
    plain: redis.Redis,
    name: str,
    events: queue.Queue[tuple[str, int]],
    say: Callable[[str], None],
    *,
    demand: int,
    total: int,
    hold_ms: int,
) -> None:
    counter = f"{name}:active"
    next_rid = 0
    for _ in range(demand):
        driver.reserve(next_rid)
        next_rid += 1
    highest = grants = 0
    holding: list[tuple[float, int]] = []
    deadline = time.monotonic() + 60  # hang guard
    while (grants < total or holding) and time.monotonic() < deadline:
        timeout = max(0.0, holding[0][0] - time.monotonic()) if holding else 1.0
        try:
            _kind, rid = events.get(timeout=timeout)
        except queue.Empty:
            pass
        else:
            grants += 1
            highest = max(highest, int(plain.incr(counter)))
            heapq.heappush(holding, (time.monotonic() + hold_ms / 1000, rid))
        while holding and holding[0][0] <= time.monotonic():
            _, rid = heapq.heappop(holding)
            plain.decr(counter)
            driver.release(rid)
            if next_rid < total:
                driver.reserve(next_rid)
                next_rid += 1
    say(f"done {grants} {highest}")


if __name__ == "__main__":
    main()
