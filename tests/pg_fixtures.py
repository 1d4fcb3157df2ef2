"""The PostgreSQL server of the integration tests, shared by every test file.

`conftest.py` imports the `pg_session` and `pg` fixtures from here, so one
throwaway server (`pg_server.py`) serves `test_postgres.py` and
`test_psycopg.py` alike: 20 tenant databases and a non-superuser role whose
`CONNECTION LIMIT` equals `CAP`. Without PostgreSQL binaries every test that
needs it is skipped with one line saying how to get them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pg_server import HOW_TO_GET, PgServer, find_bindir

CAP = 8  # the pool's cap = the role's CONNECTION LIMIT
ROLE = "pool_app"
TENANTS = [f"tenant_{i:02d}" for i in range(20)]
# The test files whose outcomes the session's summary line counts.
_COUNTED = ("test_postgres.py", "test_psycopg.py")


# -- the server ------------------------------------------------------------


@dataclass
class PgEnv:
    """The running server, the capped role and its tenant databases."""

    server: PgServer
    password: str
    tenants: list[str]

    def dsn(self, tenant: str) -> str:
        return self.server.dsn(tenant, ROLE, self.password, connect_timeout=5)


class _Summary:
    """A plugin registered by the session fixture: one line in the session's
    terminal summary saying how many PostgreSQL tests ran, or why none did."""

    def __init__(self) -> None:
        self.outcomes: dict[str, str] = {}
        self.version = ""
        self.skipped = ""

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.fspath.endswith(_COUNTED) and (
            report.when == "call" or report.outcome != "passed"
        ):
            self.outcomes.setdefault(report.nodeid, report.outcome)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.skipped:
            terminalreporter.write_line(
                f"PostgreSQL integration skipped: {self.skipped}"
            )
            return
        done = list(self.outcomes.values())
        terminalreporter.write_line(
            f"PostgreSQL integration: {len(done)} tests ran against PostgreSQL "
            f"{self.version}: {done.count('passed')} passed, "
            f"{done.count('failed')} failed"
        )


@pytest.fixture(scope="session")
def pg_session(request: pytest.FixtureRequest) -> Iterator[PgEnv]:
    summary = _Summary()
    request.config.pluginmanager.register(summary, "pooler-pg-summary")
    if find_bindir() is None:
        summary.skipped = HOW_TO_GET
        pytest.skip(HOW_TO_GET)
    # The role's CAP, the tests' superuser connections (monitor, killer,
    # checks) and the server's reserved slots, with room to spare.
    server = PgServer(max_connections=CAP + 24)
    try:
        server.start()
        summary.version = server.version
        password = server.create_role(ROLE, connection_limit=CAP)
        server.create_databases(TENANTS, owner=ROLE)
        yield PgEnv(server, password, TENANTS)
    finally:
        server.stop()


@pytest.fixture
def pg(pg_session: PgEnv) -> PgEnv:
    """The server, with no backend of the role left by an earlier test."""
    deadline = time.monotonic() + 10
    while pg_session.server.backends(ROLE):
        if time.monotonic() > deadline:
            pytest.fail("backends of an earlier test still open after 10 s")
        time.sleep(0.005)
    return pg_session
