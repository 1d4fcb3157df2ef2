"""The seed's Release example: acquire a worker, then release it.

Output:
    Worker acquired: Worker(closed=False)
    Worker released
"""

from __future__ import annotations

import sys

import structlog
from worker import Worker, worker_factory

from pooler_actors import FactoryError, Pool

# Pool lifecycle events go to stderr, so stdout shows only the example's output.
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))


def main() -> None:
    with Pool[Worker](worker_factory) as p:
        try:
            resource = p.acquire("key1")
        except FactoryError as error:
            print("Failed to acquire resource:", error)
            return
        print(f"Worker acquired: {resource!r}")

        p.release("key1")
        print("Worker released")


if __name__ == "__main__":
    main()
