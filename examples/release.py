"""The seed's Release example: acquire a worker, then release it.

Output:
    Worker acquired: Worker(closed=False)
    Worker released
"""

from __future__ import annotations

from worker import new_worker_pool

from pooler_actors import FactoryError


def main() -> None:
    with new_worker_pool() as p:
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
