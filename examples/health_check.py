"""The seed's HealthCheck example: a worker closed behind the pool's back is evicted.

Output:
    OpenResources before health check: 1
    OpenResources after health check: 0
"""

from __future__ import annotations

import time

from worker import new_worker_pool


def main() -> None:
    with new_worker_pool(health_check_interval=1.0) as p:
        worker = p.acquire("key1")

        # Initial stats. Go takes them just after closing the worker; taking
        # them just before cannot race with the first health check.
        stats = p.stats()
        worker.close()
        print("OpenResources before health check:", stats.open_resources)

        # Simulate a health check: Go sleeps 2 s. On a loaded machine the
        # eviction may take longer, so wait for it (for at most 30 s more).
        time.sleep(2)
        deadline = time.monotonic() + 30
        while p.stats().open_resources and time.monotonic() < deadline:
            time.sleep(0.01)

        stats = p.stats()
        print("OpenResources after health check:", stats.open_resources)


if __name__ == "__main__":
    main()
