"""One process of a fleet of pools, for tests/test_fleet.py: a Pool on a RedisCapacity.

Run as `python fleet_worker.py URL NAME LIMIT TTL LABEL MODE [ARGS]`. The pool
has `max_holders=1` (leases); its resources are [Counted][fleet_worker.Counted]:
each counts itself on the server while it is open.

MODE `load LOCAL_CAP THREADS JOBS`: THREADS threads each run JOBS leases of
random keys (two resources per key at most, idle ones closed after 20 ms so
their slots go back to the fleet), then print `done <leases> <errors>`.

MODE `interactive`: read commands on stdin and answer on stdout:
`checkout KEY` (in a thread; `got KEY` once granted), `checkin KEY`,
`release KEY`, `use KEY` (`used KEY open|closed`), `stats`, `quit`. Each
resource prints `closed KEY` when closed; the events `pool.global.*`,
`pool.resource.retired` and `pool.resource.closed` are printed as
`event NAME key=KEY reason=REASON`.
"""

from __future__ import annotations

import logging
import random
import sys
import threading
import time
from collections.abc import Callable, Hashable, MutableMapping
from typing import Any

import redis
import structlog

from pooler_actors import Lease, Pool
from pooler_actors.redis import RedisCapacity

# Counts open resources and keeps the highest count seen, in one atomic step.
_OPENED = """
local n = redis.call('INCR', KEYS[1])
if n > tonumber(redis.call('GET', KEYS[2]) or '0') then
  redis.call('SET', KEYS[2], n)
end
return n
"""


def counter_keys(name: str) -> tuple[str, str, str]:
    """The keys where the resources of semaphore `name` count themselves:
    open now, the highest count seen, and the order they were created in."""
    return f"{name}:open", f"{name}:high", f"{name}:order"


class Counted:
    """A stand-in for a connection that counts itself on the server while open.

    The count is kept apart from the semaphore's own keys: it counts what the
    pools really opened, so a cap that held only on paper would show here.
    """

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        label: str,
        key: Hashable,
        on_close: Callable[[Counted], object] | None = None,
    ) -> None:
        self.key = key
        self.closed = False
        self._client = client
        self._keys = counter_keys(name)
        self._on_close = on_close
        client.eval(_OPENED, 2, self._keys[0], self._keys[1])
        client.rpush(self._keys[2], f"{label}:{key}")

    def ping(self) -> None:
        pass

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close(self)
        self.closed = True
        self._client.decr(self._keys[0])


def main() -> None:
    url, name, limit, ttl, label, mode, *rest = sys.argv[1:]
    out_lock = threading.Lock()

    def say(line: str) -> None:
        with out_lock:
            print(line, flush=True)

    def printer(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Any:
        what = str(event["event"])
        if what.startswith("pool.global.") or what in (
            "pool.resource.retired",
            "pool.resource.closed",
        ):
            say(f"event {what} key={event.get('key')} reason={event.get('reason')}")
        raise structlog.DropEvent

    structlog.configure(
        processors=[printer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )
    client = redis.Redis.from_url(url, socket_timeout=5)
    cap = RedisCapacity(url, name=name, limit=int(limit), lease_ttl=float(ttl))
    cap.check()
    local_cap = int(rest[0]) if mode == "load" else 10
    pool: Pool[str, Counted] = Pool(
        lambda key: Counted(client, name, label, key, lambda c: say(f"closed {c.key}")),
        max_open_resources=local_cap,
        max_holders=1,
        max_per_key=2 if mode == "load" else 1,
        max_idle_time=0.02 if mode == "load" else None,
        health_check_interval=None,
        global_capacity=cap,
        name=f"worker-{label}",
    )
    say("ready")
    try:
        if mode == "load":
            threads, jobs = int(rest[1]), int(rest[2])
            load(pool, say, threads, jobs)
        else:
            interactive(pool, say)
    finally:
        pool.close()


def load(
    pool: Pool[str, Counted], say: Callable[[str], None], threads: int, jobs: int
) -> None:
    done: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        for _ in range(jobs):
            try:
                with pool.lease(f"k{random.randrange(6)}", timeout=30) as conn:
                    assert not conn.closed
                    time.sleep(random.uniform(0.002, 0.01))
                done.append(1)
            except Exception as error:
                errors.append(error)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    say(f"done {len(done)} {len(errors)}")


def interactive(pool: Pool[str, Counted], say: Callable[[str], None]) -> None:
    leases: dict[str, Lease[str, Counted]] = {}

    def checkout(key: str) -> None:
        try:
            leases[key] = pool.checkout(key, timeout=30)
        except Exception as error:
            say(f"error {key} {type(error).__name__}")
        else:
            say(f"got {key}")

    for line in sys.stdin:
        command, *args = line.split()
        if command == "quit":
            break
        if command == "checkout":
            threading.Thread(target=checkout, args=(args[0],), daemon=True).start()
        elif command == "checkin":
            pool.checkin(leases.pop(args[0]))
            say(f"checked_in {args[0]}")
        elif command == "release":
            pool.release(args[0])
            say(f"released {args[0]}")
        elif command == "use":
            state = "closed" if leases[args[0]].resource.closed else "open"
            say(f"used {args[0]} {state}")
        elif command == "stats":
            s = pool.stats()
            say(
                f"stats global_held={s.global_held} global_waiting={s.global_waiting}"
                f" global_lost={s.global_lost} retiring={s.retiring} open={s.open}"
            )


if __name__ == "__main__":
    main()
