"""The seed's ReleaseAll example: every resource is closed at once.

Output:
    OpenResources before ReleaseAll: 3
    OpenResources after ReleaseAll: 0
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

        stats = p.stats()
        print("OpenResources before ReleaseAll:", stats.open_resources)

        p.release_all()

        stats = p.stats()
        print("OpenResources after ReleaseAll:", stats.open_resources)


if __name__ == "__main__":
    main()
