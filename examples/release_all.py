"""The seed's ReleaseAll example: every resource is closed at once.

Output:
    OpenResources before ReleaseAll: 3
    OpenResources after ReleaseAll: 0
"""

from __future__ import annotations

from worker import new_worker_pool


def main() -> None:
    with new_worker_pool() as p:
        for i in range(3):
            p.acquire(f"key{i}")

        stats = p.stats()
        print("OpenResources before ReleaseAll:", stats.open_resources)

        p.release_all()

        stats = p.stats()
        print("OpenResources after ReleaseAll:", stats.open_resources)


if __name__ == "__main__":
    main()
