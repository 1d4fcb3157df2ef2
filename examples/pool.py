"""The seed's main ``Pool`` example: with a cap of 1, a second acquire waits.

Output:
    OpenResources: 1
    WaitCount: 1
    OpenResources: 1
    WaitCount: 0
    Duration took longer than 100ms: True
"""

from __future__ import annotations

import threading
import time

from worker import new_worker_pool


def main() -> None:
    with new_worker_pool(max_open_resources=1) as p:
        p.acquire("key1")

        t = threading.Thread(target=p.acquire, args=("key2",))
        t.start()

        # Wait for the thread to block on acquire. Go sleeps 100 ms and hopes;
        # here we wait until it is queued, then let it wait over 100 ms.
        while p.stats().wait_count != 1:
            time.sleep(0.005)
        time.sleep(0.1)

        # The waiting thread is in the wait queue.
        stats = p.stats()
        print("OpenResources:", stats.open_resources)
        print("WaitCount:", stats.wait_count)

        # Release a resource to unblock the waiting thread.
        p.release("key1")
        t.join()

        stats = p.stats()
        print("OpenResources:", stats.open_resources)
        print("WaitCount:", stats.wait_count)
        print("Duration took longer than 100ms:", stats.wait_duration > 0.1)


if __name__ == "__main__":
    main()
