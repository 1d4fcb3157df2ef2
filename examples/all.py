"""The seed's All example: iterate every resource, in creation order.

Output:
    key0 Worker(closed=False)
    key1 Worker(closed=False)
    key2 Worker(closed=False)
"""

from __future__ import annotations

from worker import new_worker_pool


def main() -> None:
    with new_worker_pool() as p:
        for i in range(3):
            p.acquire(f"key{i}")

        for key, worker in p.all():
            print(key, repr(worker))


if __name__ == "__main__":
    main()
