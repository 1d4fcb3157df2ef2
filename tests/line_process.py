"""A child Python process the tests talk to by lines: commands in, answers out."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest


class LineProcess:
    """`python SCRIPT ARGS...` with its stdin and stdout as line channels.

    A reader thread queues every stdout line; `expect` and `wait_line` take
    them in order, each bounded by a hang guard (a test failure, not a hang).
    """

    def __init__(self, label: str, script: str, *args: str) -> None:
        self.label = label
        self.proc = subprocess.Popen(
            [sys.executable, script, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def _next(self, prefix: str, deadline: float, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(
                f"{self.label}: no {prefix!r} line within {timeout} s; "
                f"last lines: {self.seen[-10:]}"
            )
        self.seen.append(line)
        return line

    def expect(self, prefix: str, timeout: float = 15.0) -> str:
        """The next line; it must start with `prefix`."""
        line = self._next(prefix, time.monotonic() + timeout, timeout)
        assert line.startswith(prefix), f"{self.label}: {line!r}"
        return line

    def wait_line(self, prefix: str, timeout: float = 20.0) -> str:
        """The next line that starts with `prefix`; lines before it are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            line = self._next(prefix, deadline, timeout)
            if line.startswith(prefix):
                return line

    def kill(self) -> None:
        """Kill it (resumed first, if it was stopped) and reap it."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(timeout=10)
