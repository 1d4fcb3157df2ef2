"""The seed's Walk example: a pull iterator over every resource.

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

        next_, stop = p.walk()
        try:
            while True:
                key, worker, ok = next_()
                if not ok:
                    break
                print(key, repr(worker))
        finally:
            stop()


if __name__ == "__main__":
    main()
