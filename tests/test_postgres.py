"""Integration suite on a real PostgreSQL with psycopg 3 (issue 15).

A throwaway server (`pg_server.py`) is started once per session: 20 tenant
databases and a non-superuser role whose `CONNECTION LIMIT` equals the pool's
cap, so the server itself refuses any connection beyond the cap. A monitor
thread polls `pg_stat_activity` every 2 ms for that role's backends.

The pool is used with leases in exclusive mode (SPEC 8): one holder per
connection, `max_per_key` connections per tenant, broken connections checked
in as broken through `is_broken`, factory retries for the server's
slot-release lag (a backend slot frees only when its process has exited, a
few ms after the client's `close()`).

Without PostgreSQL binaries every test that needs the server is skipped with
one line saying how to get them; with them, the session's terminal summary
says how many tests ran here and how many passed.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg", reason="pip install -e '.[dev]' (psycopg)")

from conftest import pool_threads, wait_for  # noqa: E402
from pg_fixtures import CAP, ROLE, TENANTS, PgEnv  # noqa: E402
from pg_server import too_many_clients  # noqa: E402

from pooler_actors import FactoryError, Pool  # noqa: E402

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "postgres_tenants.py"


# -- the resource and its factory -------------------------------------------


class PgConn:
    """One tenant's psycopg connection (autocommit) as a `Reusable`.

    `holder` is set while a test thread uses it. A `close()` meanwhile, or a
    second holder, is recorded by the connector (the oracles). Such a close
    is deferred to the holder's exit: psycopg's `close()` under a running
    query frees the libpq connection the query uses and crashes the process,
    and the test should fail on its oracle, not die.
    """

    def __init__(self, tenant: str, conn: Any, connector: Connector) -> None:
        self.tenant = tenant
        self.conn = conn
        self.connector = connector
        self.holder: int | None = None
        self.lock = threading.Lock()
        self.close_pending = False

    def ping(self) -> None:
        self.conn.execute("SELECT 1")

    def close(self) -> None:
        with self.lock:
            if self.holder is not None:
                self.connector.count("closed_under_holder")
                self.close_pending = True
                return
        self._close()

    def _close(self) -> None:
        try:
            self.conn.close()
        finally:
            self.connector.closed()

    @contextlib.contextmanager
    def held(self) -> Iterator[PgConn]:
        with self.lock:
            if self.holder is not None:
                self.connector.count("two_holders")
            self.holder = threading.get_ident()
        try:
            yield self
        finally:
            with self.lock:
                self.holder = None
                pending, self.close_pending = self.close_pending, False
            if pending:
                self._close()

    def query(self, sleep: float = 0.0) -> str:
        """The connection's database (its tenant), after `sleep` s on the server."""
        row = self.conn.execute(
            "SELECT current_database(), pg_sleep(%s)", (sleep,)
        ).fetchone()
        return str(row[0])


class Connector:
    """The pool's factory: opens a tenant's connection, counts what is open.

    `max_live` is the client-side cap oracle: connections opened and not yet
    closed. The pool frees a slot only after `close()` returned, so it can
    never exceed the cap while the pool keeps it.
    """

    def __init__(self, env: PgEnv) -> None:
        self.env = env
        self.lock = threading.Lock()
        self.live = 0
        self.max_live = 0
        self.counts: dict[str, int] = {}

    def count(self, what: str, n: int = 1) -> None:
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + n

    def __call__(self, tenant: str) -> PgConn:
        try:
            conn = psycopg.connect(self.env.dsn(tenant), autocommit=True)
        except psycopg.OperationalError as exc:
            # The server's slot-release lag: absorbed by create_retries
            # unless it also reaches a caller (counted there).
            self.count("refused" if too_many_clients(exc) else "connect_failed")
            raise
        with self.lock:
            self.live += 1
            self.max_live = max(self.max_live, self.live)
            self.counts["opened"] = self.counts.get("opened", 0) + 1
        return PgConn(tenant, conn, self)

    def closed(self) -> None:
        with self.lock:
            self.live -= 1


def lease_pool(
    connector: Connector, *, max_per_key: int = 2, name: str
) -> Pool[Any, Any]:
    """The pool as SPEC 8 names it, in exclusive mode."""
    return Pool(
        connector,
        max_open_resources=CAP,
        max_holders=1,
        max_per_key=max_per_key,
        is_broken=lambda e: isinstance(e, psycopg.OperationalError),
        create_retries=5,
        create_backoff=0.01,
        health_check_interval=None,
        name=name,
    )


# -- load ------------------------------------------------------------------


@dataclass
class Tally:
    """What callers saw; every list is an oracle."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    ok: int = 0
    wrong_db: list[tuple[str, str]] = field(default_factory=list)
    query_failures: list[BaseException] = field(default_factory=list)
    too_many: list[BaseException] = field(default_factory=list)
    other: list[BaseException] = field(default_factory=list)
    next_lease_failed: list[BaseException] = field(default_factory=list)
    factory_errors: list[BaseException] = field(default_factory=list)
    last_ok: dict[int, float] = field(default_factory=dict)

    def add(self, name: str, item: Any) -> None:
        with self.lock:
            getattr(self, name).append(item)

    def success(self, n: int) -> None:
        with self.lock:
            self.ok += 1
            self.last_ok[n] = time.monotonic()


def lease_query(
    pool: Pool[Any, Any], tenant: str, rng: random.Random, tally: Tally
) -> None:
    """One request: lease the tenant's connection, query, give it back."""
    sleep = 0.003 if rng.random() < 0.2 else 0.0
    with pool.lease(tenant, timeout=10) as conn, conn.held():
        got = conn.query(sleep)
    if got != tenant:
        tally.add("wrong_db", (tenant, got))


def classify(exc: BaseException, tally: Tally) -> None:
    """File an exception that reached a caller."""
    if too_many_clients(exc):
        tally.add("too_many", exc)
    elif isinstance(exc, psycopg.OperationalError):
        tally.add("query_failures", exc)
    else:
        tally.add("other", exc)


OnError = Callable[[int, str, random.Random, Exception], None]


@dataclass
class Load:
    """A lease pool, its connector, and threads of random requests on it."""

    connector: Connector
    pool: Pool[Any, Any]
    tally: Tally = field(default_factory=Tally)
    stop: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def start(cls, pg: PgEnv, name: str) -> Load:
        connector = Connector(pg)
        return cls(connector, lease_pool(connector, max_per_key=2, name=name))

    def requests(
        self,
        seed: int,
        tenants: list[str],
        *,
        release_p: float = 0.0,
        refresh_p: float = 0.0,
        on_error: OnError | None = None,
    ) -> Callable[[int], None]:
        """A thread body: until `stop`, lease a random tenant and query, or
        (with those odds) release or refresh it; errors go to `on_error`."""

        def body(n: int) -> None:
            rng = random.Random(seed + n)
            while not self.stop.is_set():
                tenant = rng.choice(tenants)
                r = rng.random()
                try:
                    if r < release_p:
                        self.pool.release(tenant)
                    elif r < release_p + refresh_p:
                        self.pool.refresh(tenant)
                    else:
                        lease_query(self.pool, tenant, rng, self.tally)
                        self.tally.success(n)
                except Exception as exc:
                    if on_error is None:
                        classify(exc, self.tally)
                    else:
                        on_error(n, tenant, rng, exc)

        return body

    def __enter__(self) -> Load:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.pool.close()

    def run(
        self,
        n: int,
        body: Callable[[int], None],
        seconds: float,
        beside: Callable[[], None] | None = None,
    ) -> list[threading.Thread]:
        """Run `body(i)` in `n` threads (and `beside()` in one more) for
        `seconds`, or until `stop` is set earlier; return the threads still
        alive 15 s after `stop` (hung)."""
        threads = [
            threading.Thread(target=body, args=(i,), name=f"pg-load-{i}", daemon=True)
            for i in range(n)
        ]
        if beside is not None:
            threads.append(threading.Thread(target=beside, daemon=True))
        for t in threads:
            t.start()
        self.stop.wait(seconds)
        self.stop.set()
        deadline = time.monotonic() + 15
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        return [t for t in threads if t.is_alive()]


def summary(name: str, **figures: object) -> None:
    print(f"[pg] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


# -- the tests ---------------------------------------------------------------


def test_fixture_monitor_and_psycopg_with_todays_shared_acquire(pg: PgEnv) -> None:
    """The server, the monitor and the helpers work (no lease API needed)."""
    connector = Connector(pg)
    monitor = pg.server.monitor([ROLE])
    pool: Pool[Any, Any] = Pool(
        connector, max_open_resources=4, health_check_interval=None, name="pg-smoke"
    )
    extra: list[Any] = []
    try:
        for tenant in TENANTS[:4]:
            assert pool.acquire(tenant, timeout=10).query() == tenant
        wait_for(lambda: len(pg.server.backends(ROLE)) == 4)
        wait_for(lambda: monitor.max_of(ROLE) == 4)
        assert pool.release(TENANTS[0]) is True
        wait_for(lambda: len(pg.server.backends(ROLE)) == 3)

        # A terminated backend: the next query raises OperationalError.
        victim = pool.acquire(TENANTS[4], timeout=10)
        assert victim.query() == TENANTS[4]
        assert pg.server.terminate([victim.conn.info.backend_pid]) == 1
        with pytest.raises(psycopg.OperationalError):
            victim.query()
        assert pool.release(TENANTS[4]) is True

        # The role's CONNECTION LIMIT is the cap: with CAP backends of the
        # role, one more is refused (53300). A slot of a backend that just
        # exited may free a few ms late: retry those (bounded).
        deadline = time.monotonic() + 10
        while len(extra) < CAP - 3:
            try:
                extra.append(psycopg.connect(pg.dsn(TENANTS[0])))
            except psycopg.OperationalError as exc:
                assert too_many_clients(exc) and time.monotonic() < deadline, exc
                time.sleep(0.005)
        with pytest.raises(psycopg.OperationalError) as refused:
            psycopg.connect(pg.dsn(TENANTS[0]))
        assert too_many_clients(refused.value)
        for conn in extra:
            conn.close()

        # A restart disconnects everyone; the monitor reconnects.
        samples = monitor.samples
        pg.server.restart()
        with pytest.raises(psycopg.OperationalError):
            pool.acquire(TENANTS[1], timeout=10).query()
        wait_for(lambda: monitor.samples > samples + 10)
    finally:
        for conn in extra:
            conn.close()
        pool.close()
        monitor.stop()
    wait_for(lambda: not pg.server.backends(ROLE), timeout=1)
    assert monitor.max_of(ROLE) <= CAP
    assert connector.max_live <= 4
    assert monitor.samples > 10


def test_cap_oracle_under_random_leases_releases_and_refreshes(pg: PgEnv) -> None:
    """24 threads, 20 tenants, cap 8: never more backends than the cap, no
    refused connection reaches a caller, no query fails, no connection is
    closed under its holder or held twice."""
    with Load.start(pg, "pg-cap") as load, pg.server.monitor([ROLE]) as monitor:
        body = load.requests(1500, TENANTS, release_p=0.05, refresh_p=0.03)
        hung = load.run(24, body, 8.0)
        stats = load.pool.stats()
    tally, connector = load.tally, load.connector
    summary(
        "cap",
        ok=tally.ok,
        max_backends=monitor.max_of(ROLE),
        max_live=connector.max_live,
        polls=monitor.samples,
        **connector.counts,
    )
    assert not hung, hung
    assert monitor.max_of(ROLE) <= CAP
    assert connector.max_live <= CAP
    assert tally.too_many == []
    assert tally.query_failures == []
    assert tally.other == []
    assert tally.wrong_db == []
    assert connector.counts.get("closed_under_holder", 0) == 0
    assert connector.counts.get("two_holders", 0) == 0
    assert stats.wait_count == 0
    assert stats.holders == 0
    # Not vacuous: the load reached the server and the monitor watched it.
    assert tally.ok >= 200
    assert monitor.max_of(ROLE) >= 2
    assert monitor.samples >= 100


def test_terminated_backends_fail_at_most_the_query_that_met_them(pg: PgEnv) -> None:
    """`pg_terminate_backend` of random pool backends under load: a failed
    query checks its connection in as broken, so failures <= terminations,
    and the next lease of that tenant gets a working connection."""
    load = Load.start(pg, "pg-kill")
    tally = load.tally
    terminations = 0

    def retry(n: int, tenant: str, rng: random.Random, exc: Exception) -> None:
        classify(exc, tally)
        if not isinstance(exc, psycopg.OperationalError):
            return
        # The dead connection was checked in as broken: the next lease of
        # the same tenant works (unless its connection was killed too).
        try:
            lease_query(load.pool, tenant, rng, tally)
            tally.success(n)
        except Exception as again:
            classify(again, tally)
            tally.add("next_lease_failed", again)

    def killer() -> None:
        nonlocal terminations
        rng = random.Random(25)
        with pg.server.connect() as admin:
            while not load.stop.wait(0.04):
                terminations += pg.server.terminate_random(ROLE, rng, 1, admin)

    with load:
        body = load.requests(2500, TENANTS[:12], on_error=retry)
        hung = load.run(16, body, 6.0, beside=killer)
        stats = load.pool.stats()
    summary(
        "terminate",
        ok=tally.ok,
        terminations=terminations,
        failures=len(tally.query_failures),
        next_lease_failed=len(tally.next_lease_failed),
        broken=stats.broken,
        **load.connector.counts,
    )
    assert not hung, hung
    assert terminations >= 10
    assert 1 <= len(tally.query_failures) <= terminations
    # A retry after a failure fails only if that new connection was killed
    # too, which is a termination of its own.
    assert len(tally.next_lease_failed) <= terminations - len(tally.query_failures)
    assert tally.too_many == []
    assert tally.other == []
    assert tally.wrong_db == []
    assert load.connector.counts.get("closed_under_holder", 0) == 0
    assert stats.broken >= len(tally.query_failures)
    assert stats.wait_count == 0
    assert stats.holders == 0


def test_server_restart_mid_run_every_thread_recovers(pg: PgEnv) -> None:
    """`pg_ctl restart -m fast` under load: every thread gets a working
    connection again, none hangs, nobody is left waiting or holding."""
    load = Load.start(pg, "pg-restart")
    tally = load.tally
    threads_n = 16
    restarted_at: list[float] = []

    def expected(n: int, tenant: str, rng: random.Random, exc: Exception) -> None:
        if isinstance(exc, psycopg.OperationalError):
            tally.add("query_failures", exc)
        elif isinstance(exc, FactoryError):
            # Connecting while the server restarts is refused: expected,
            # and retried by the next request.
            tally.add("factory_errors", exc)
            load.stop.wait(0.01)
        else:
            tally.add("other", exc)

    def recovered() -> bool:
        with tally.lock:
            return bool(restarted_at) and all(
                tally.last_ok.get(n, 0.0) > restarted_at[0] for n in range(threads_n)
            )

    def conductor() -> None:
        # Restart once the load runs, then stop once every thread recovered.
        deadline = time.monotonic() + 20
        while tally.ok < 300 and time.monotonic() < deadline:
            if load.stop.wait(0.01):
                return
        pg.server.restart()
        restarted_at.append(time.monotonic())
        while not recovered() and time.monotonic() < deadline:
            time.sleep(0.01)
        load.stop.set()

    with load, pg.server.monitor([ROLE]) as monitor:
        body = load.requests(3500, TENANTS, on_error=expected)
        hung = load.run(threads_n, body, 25.0, beside=conductor)
        stats = load.pool.stats()
    summary(
        "restart",
        ok=tally.ok,
        query_failures=len(tally.query_failures),
        factory_errors=len(tally.factory_errors),
        monitor_gaps=monitor.gaps,
        **load.connector.counts,
    )
    assert not hung, hung
    assert restarted_at, "the server was not restarted"
    assert recovered(), "some thread never got a working connection again"
    assert tally.other == []
    assert monitor.max_of(ROLE) <= CAP
    assert load.connector.max_live <= CAP
    assert load.connector.counts.get("closed_under_holder", 0) == 0
    assert stats.wait_count == 0
    assert stats.holders == 0


def test_close_leaves_no_backend_and_no_pool_thread(pg: PgEnv) -> None:
    """After `pool.close()`: 0 backends of the role within 1 s, no pool thread."""
    with Load.start(pg, "pg-close") as load:
        hung = load.run(8, load.requests(4500, TENANTS), 1.5)
        assert pg.server.backends(ROLE), "the load opened no connection"
    assert not pool_threads(), pool_threads()
    wait_for(lambda: not pg.server.backends(ROLE), timeout=1.0, interval=0.002)
    tally = load.tally
    assert not hung, hung
    assert tally.ok >= 50
    assert tally.query_failures == tally.too_many == tally.other == []
    assert load.connector.live == 0


def test_postgres_tenants_example_runs_against_database_url(pg: PgEnv) -> None:
    """`examples/postgres_tenants.py` against this server, as `DATABASE_URL`."""
    env = {
        **os.environ,
        "DATABASE_URL": pg.server.url(TENANTS[0], ROLE, pg.password),
    }
    done = run_example(env)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for tenant in ("acme", "globex", "initech", "umbrella", "hooli"):
        assert f"{tenant}: 20 orders" in out, out
    # One backend is killed mid-run: at most the request that met it failed.
    failed = re.search(r"failed requests: (\d+)", out)
    assert failed and int(failed.group(1)) <= 1, out
    assert "of at most 4" in out, out
    assert "pool closed; connections now: 0" in out, out
    wait_for(lambda: not pg.server.backends(ROLE), timeout=5)


def test_postgres_tenants_example_without_database_url_exits_0() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = run_example(env)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 1
    assert "DATABASE_URL" in done.stdout


def run_example(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the example in a fresh interpreter with `env` (a hang guard only)."""
    return subprocess.run(
        [sys.executable, str(EXAMPLE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
