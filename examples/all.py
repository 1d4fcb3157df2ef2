"""The seed's All example: iterate every resource, in creation order.

Output:
    key0 Worker(closed=False)
    key1 Worker(closed=False)
    key2 Worker(closed=False)
"""

from __future__ import annotations

import sys

import structlog
from worker import Worker, worker_factory

from pooler_actors import Pool

# Pool lifecycle events go to stderr, so stdout shows only the example's output.
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))


def main() -> None:
    with Pool[Worker](worker_factory) as p:
        for i in range(3):
            p.acquire(f"key{i}")

        for key, worker in p.all():
            print(key, repr(worker))


if __name__ == "__main__":
    main()
