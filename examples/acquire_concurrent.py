"""The seed's Acquire (Concurrent) example: three threads acquire three keys.

Output (in any order):
    Worker acquired: key0
    Worker acquired: key1
    Worker acquired: key2
"""

from __future__ import annotations

import threading

from worker import new_worker_pool


def main() -> None:
    with new_worker_pool() as p:
        # print() writes the text and the newline separately: keep lines whole.
        print_lock = threading.Lock()

        def acquire(i: int) -> None:
            key = f"key{i}"
            p.acquire(key)
            with print_lock:
                print("Worker acquired:", key)

        threads = [threading.Thread(target=acquire, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


if __name__ == "__main__":
    main()
