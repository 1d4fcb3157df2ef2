"""A throwaway PostgreSQL server for the integration tests and the benchmark.

`PgServer.start()` runs the machine's own binaries (`initdb`, `pg_ctl`,
`postgres`): a cluster in a fresh temp dir, listening on 127.0.0.1 and a free
port only, its unix socket inside the temp dir, fsync off. PostgreSQL refuses
to run as root, so when we are root every server command runs as an
unprivileged user (`postgres` or `nobody` when they exist, else a system user
created here) that owns the temp dir.

The server is stopped by pid: `pg_ctl stop -m immediate`, then SIGKILL of the
postmaster if it is still there. A small watchdog process does the same if
this process dies without stopping it (its stdin closes).

Helpers: a superuser DSN, roles with `CONNECTION LIMIT`, tenant databases,
`pg_terminate_backend`, `restart()` (`pg_ctl restart -m fast`), and a
`BackendMonitor` thread that polls `pg_stat_activity` every few ms and keeps
the highest number of backends seen per role.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

#: One line, shown when the binaries are missing.
HOW_TO_GET = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: "
    "apt-get install postgresql (or set POOLER_PG_BIN to their directory)"
)

_BINARIES = ("initdb", "pg_ctl", "postgres")

# Run by the watchdog process: wait until our stdin closes (the test process
# stopped the server and closed it, or died), then kill whatever postmaster
# the data dir still names and remove the temp dir. SIGQUIT is PostgreSQL's
# immediate shutdown.
_WATCHDOG = """
import os, shutil, signal, sys, time
sys.stdin.read()
root = sys.argv[1]
try:
    with open(os.path.join(root, "data", "postmaster.pid")) as f:
        pid = int(f.readline())
except (OSError, ValueError):
    pid = None
for sig in (signal.SIGQUIT, signal.SIGKILL) if pid else ():
    try:
        os.kill(pid, sig)
    except OSError:
        break
    time.sleep(2)
shutil.rmtree(root, ignore_errors=True)
"""


def find_bindir() -> Path | None:
    """The directory holding `initdb`, `pg_ctl` and `postgres`, or `None`.

    Looks at `$POOLER_PG_BIN` only when it is set; else at `$PATH`, then
    Debian's `/usr/lib/postgresql/<version>/bin` (newest first).
    """
    if os.environ.get("POOLER_PG_BIN"):  # when set, the only place looked at
        candidates = [Path(os.environ["POOLER_PG_BIN"])]
    else:
        candidates = _usual_bindirs()
    for path in candidates:
        if all(os.access(path / name, os.X_OK) for name in _BINARIES):
            return path
    return None


def _usual_bindirs() -> list[Path]:
    candidates: list[Path] = []
    found = shutil.which("pg_ctl")
    if found:
        candidates.append(Path(found).parent)
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    return candidates + debian


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _server_user() -> pwd.struct_passwd | None:
    """The user to run the server as: `None` when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in (os.environ.get("POOLER_PG_USER"), "postgres", "nobody"):
        if not name:
            continue
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    name = "pooler-pg"
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/bin/false", name],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return pwd.getpwnam(name)


def _temp_root(user: pwd.struct_passwd | None) -> Path:
    """A fresh temp dir; owned by `user`, in a directory that user can reach.

    `$POOLER_PG_TMP` if set, else `/dev/shm` when it is a tmpfs with room
    (the cluster and 20 databases take ~200 MB; creating them in memory is
    several times faster on a busy disk), else the usual temp dir.
    """
    base = os.environ.get("POOLER_PG_TMP") or tempfile.gettempdir()
    if not os.environ.get("POOLER_PG_TMP") and os.path.isdir("/dev/shm"):
        with contextlib.suppress(OSError):
            free = shutil.disk_usage("/dev/shm").free
            if free > 2 << 30 and os.access("/dev/shm", os.W_OK):
                base = "/dev/shm"
    if user is not None and not _reachable_by_all(Path(base)):
        base = "/tmp"
    root = Path(tempfile.mkdtemp(prefix="pooler-pg-", dir=base))
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)
    return root


def _reachable_by_all(path: Path) -> bool:
    return all(os.stat(p).st_mode & 0o001 for p in [path, *path.parents])


@contextlib.contextmanager
def _unpinned() -> Iterator[None]:
    """Let processes started inside run on every CPU.

    The benchmark pins its process to one CPU, and a child inherits the
    affinity of the thread that forks it: the server must not share the
    client's CPU. Linux affinity is per thread, so only this thread is
    widened, and only meanwhile.
    """
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    saved = os.sched_getaffinity(0)
    try:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        yield
    finally:
        os.sched_setaffinity(0, saved)


def _alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class PgServer:
    """One throwaway PostgreSQL cluster. Use `start()`, then `stop()` always."""

    def __init__(self, *, max_connections: int = 64) -> None:
        bindir = find_bindir()
        if bindir is None:
            raise FileNotFoundError(HOW_TO_GET)
        self.bindir = bindir
        self.max_connections = max_connections
        self.user = _server_user()
        self.root = _temp_root(self.user)
        self.data = self.root / "data"
        self.password = secrets.token_hex(16)
        self.superuser = "postgres"
        self.port = 0
        self.version = ""
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._stopped = False

    # -- running server commands ------------------------------------------

    def _run(self, *args: str, timeout: float = 60) -> str:
        """Run a server binary as the server's user; return its output."""
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            kwargs = {
                "user": self.user.pw_uid,
                "group": self.user.pw_gid,
                "extra_groups": [],
            }
        with _unpinned():
            done = subprocess.run(
                [str(self.bindir / args[0]), *args[1:]],
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=self.root,
                env={**os.environ, "LC_ALL": "C", "LANG": "C"},
                check=False,
                **kwargs,
            )
        if done.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed ({done.returncode}): {done.stderr.strip()}\n"
                f"{self.log_tail()}"
            )
        return str(done.stdout)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server log (for error messages)."""
        try:
            text = (self.root / "server.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def pid(self) -> int | None:
        """The postmaster's pid, from `postmaster.pid`; `None` if not running."""
        try:
            with open(self.data / "postmaster.pid") as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> PgServer:
        """initdb, configure, start; return once a connection succeeds."""
        try:
            self._initdb()
            for attempt in range(3):  # the free port may be taken meanwhile
                self.port = _free_port()
                self._configure()
                try:
                    self._pg_ctl_start()
                    break
                except RuntimeError:
                    if attempt == 2:
                        raise
            self._watch()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        with self.connect() as conn:
            self.version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        return self

    def _initdb(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.user is not None:
            os.chown(pwfile, self.user.pw_uid, self.user.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            self.superuser,
            "--pwfile",
            str(pwfile),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        pwfile.unlink()

    def _configure(self) -> None:
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "max_connections": str(self.max_connections),
            "superuser_reserved_connections": "3",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "32MB",
            "logging_collector": "off",
        }
        # A file of our own, included last: a retry with another port
        # rewrites it instead of appending.
        (self.data / "pooler_test.conf").write_text(
            "".join(f"{k} = {v}\n" for k, v in settings.items())
        )
        conf = self.data / "postgresql.conf"
        text = conf.read_text()
        if "include = 'pooler_test.conf'" not in text:
            conf.write_text(text + "\ninclude = 'pooler_test.conf'\n")

    def _pg_ctl_start(self) -> None:
        self._pg_ctl("start")

    def _pg_ctl(self, action: str, *options: str) -> None:
        """`pg_ctl <action>` on our data dir, waiting (bounded) until done."""
        log = str(self.root / "server.log")
        self._run(
            "pg_ctl", action, "-D", str(self.data), "-l", log, *options,
            "-w", "-t", "30", timeout=45,
        )  # fmt: skip

    def _watch(self) -> None:
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(self.root)],
            stdin=subprocess.PIPE,
            start_new_session=True,
        )

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.connect(connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every backend is disconnected."""
        self._pg_ctl("restart", "-m", "fast")
        self._wait_ready()

    def stop(self) -> None:
        """Stop the server by pid and remove its files. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._pg_ctl("stop", "-m", "immediate")
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                time.sleep(0.01)
        if self._watchdog is not None:
            # The pidfile is gone (or names a dead pid): it exits at EOF.
            assert self._watchdog.stdin is not None
            self._watchdog.stdin.close()
            try:
                self._watchdog.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
                self._watchdog.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- connections and administration -------------------------------------

    def dsn(
        self,
        dbname: str = "postgres",
        user: str | None = None,
        password: str | None = None,
        **extra: Any,
    ) -> str:
        """A libpq conninfo string; the superuser's unless `user` is given."""
        return make_conninfo(
            host="127.0.0.1",
            port=self.port,
            dbname=dbname,
            user=user or self.superuser,
            password=password if user else self.password,
            **extra,
        )

    def url(self, dbname: str, user: str, password: str) -> str:
        """The same as a `postgresql://` URL (for `DATABASE_URL`)."""
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{dbname}"

    @property
    def superuser_dsn(self) -> str:
        """The superuser's DSN to the `postgres` database."""
        return self.dsn()

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A superuser connection (autocommit)."""
        kwargs.setdefault("connect_timeout", 5)
        return psycopg.connect(self.superuser_dsn, autocommit=True, **kwargs)

    def create_role(self, name: str, *, connection_limit: int = -1) -> str:
        """A LOGIN, non-superuser role with `CONNECTION LIMIT`; returns its password."""
        password = secrets.token_hex(12)
        with self.connect() as conn:
            conn.execute(
                sql.SQL(
                    "CREATE ROLE {} LOGIN NOSUPERUSER PASSWORD {} CONNECTION LIMIT {}"
                ).format(
                    sql.Identifier(name),
                    sql.Literal(password),
                    sql.Literal(connection_limit),
                )
            )
        return password

    def create_databases(
        self, names: Iterable[str], owner: str | None = None
    ) -> list[str]:
        """`CREATE DATABASE` each name (owned by `owner` if given)."""
        made = []
        with self.connect() as conn:
            for name in names:
                query = sql.SQL("CREATE DATABASE {} STRATEGY FILE_COPY").format(
                    sql.Identifier(name)
                )
                if owner:
                    query += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
                conn.execute(query)
                made.append(name)
        return made

    @contextlib.contextmanager
    def _admin(
        self, conn: psycopg.Connection[Any] | None
    ) -> Iterator[psycopg.Connection[Any]]:
        if conn is not None:
            yield conn
        else:
            with self.connect() as own:
                yield own

    def backends(
        self, role: str, conn: psycopg.Connection[Any] | None = None
    ) -> list[int]:
        """Pids of the client backends of `role` now.

        `conn`: a superuser connection to use instead of a new one.
        """
        with self._admin(conn) as admin:
            rows = admin.execute(
                "SELECT pid FROM pg_stat_activity"
                " WHERE usename = %s AND backend_type = 'client backend'",
                (role,),
            ).fetchall()
        return [int(r[0]) for r in rows]

    def terminate(
        self, pids: Iterable[int], conn: psycopg.Connection[Any] | None = None
    ) -> int:
        """`pg_terminate_backend` each pid; how many were signalled."""
        killed = 0
        with self._admin(conn) as admin:
            for pid in pids:
                row = admin.execute(
                    "SELECT pg_terminate_backend(%s)", (pid,)
                ).fetchone()
                killed += bool(row and row[0])
        return killed

    def terminate_random(
        self,
        role: str,
        rng: random.Random,
        n: int = 1,
        conn: psycopg.Connection[Any] | None = None,
    ) -> int:
        """Terminate up to `n` random backends of `role`; how many were."""
        with self._admin(conn) as admin:
            pids = self.backends(role, admin)
            return self.terminate(rng.sample(pids, min(n, len(pids))), admin)

    def monitor(self, roles: Iterable[str], interval: float = 0.002) -> BackendMonitor:
        """A started `BackendMonitor` of `roles` (stop it, or use `with`)."""
        return BackendMonitor(self, list(roles), interval).start()


class BackendMonitor:
    """Polls `pg_stat_activity` every `interval` s; keeps each role's maximum.

    It has its own superuser connection and reconnects after a restart of the
    server (`gaps` counts the polls that failed meanwhile).
    """

    def __init__(self, server: PgServer, roles: list[str], interval: float) -> None:
        self.server = server
        self.roles = roles
        self.interval = interval
        self.max: dict[str, int] = dict.fromkeys(roles, 0)
        self.last: dict[str, int] = dict.fromkeys(roles, 0)
        self.samples = 0
        self.gaps = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="pg-backend-monitor", daemon=True
        )

    def start(self) -> BackendMonitor:
        """Start polling; returns once the first poll was recorded."""
        self._thread.start()
        deadline = time.monotonic() + 10
        while self.samples == 0 and self._thread.is_alive():
            if time.monotonic() > deadline:
                raise TimeoutError("the backend monitor made no poll in 10 s")
            time.sleep(0.001)
        return self

    def stop(self) -> None:
        """Stop polling and wait for the thread."""
        self._stop.set()
        self._thread.join(timeout=10)

    def reset(self) -> None:
        """Forget the maxima (they restart from the current counts)."""
        with self._lock:
            self.max = dict(self.last)

    def max_of(self, role: str) -> int:
        """The highest number of backends of `role` seen."""
        with self._lock:
            return self.max[role]

    def __enter__(self) -> BackendMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        query = (
            "SELECT usename, count(*) FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND usename = ANY(%s)"
            " GROUP BY usename"
        )
        try:
            while not self._stop.is_set():
                try:
                    if conn is None or conn.closed:
                        conn = self.server.connect(connect_timeout=2)
                    counts = dict(conn.execute(query, (self.roles,)).fetchall())
                except psycopg.Error:
                    self.gaps += 1
                    if conn is not None:
                        conn.close()
                    conn = None
                    self._stop.wait(0.05)
                    continue
                with self._lock:
                    for role in self.roles:
                        n = int(counts.get(role, 0))
                        self.last[role] = n
                        self.max[role] = max(self.max[role], n)
                    self.samples += 1
                self._stop.wait(self.interval)
        finally:
            if conn is not None:
                conn.close()


@contextlib.contextmanager
def running_server(**kwargs: Any) -> Iterator[PgServer]:
    """`with running_server() as server:` — started, and stopped on exit."""
    server = PgServer(**kwargs)
    try:
        yield server.start()
    finally:
        server.stop()


def too_many_clients(exc: BaseException | None) -> bool:
    """Whether `exc` (or an exception it was raised from) is SQLSTATE 53300.

    Connection-time errors carry no SQLSTATE in psycopg, so the server's two
    messages for it are matched as well: the role's `CONNECTION LIMIT` and the
    server's `max_connections`.
    """
    seen = 0
    while exc is not None and seen < 10:
        text = str(exc)
        if (
            getattr(exc, "sqlstate", None) == "53300"
            or "too many connections for role" in text
            or "too many clients already" in text
        ):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False
