"""A plain test resource and a recording factory, shared by several test files."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from pooler_actors import PoolSupervisor


class Res:
    """A test resource that records how often it was closed."""

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.closes = 0

    def close(self) -> None:
        self.closes += 1

    def ping(self) -> None:
        pass


class Factory:
    """A factory that logs every key it was called for and keeps what it made.

    ``list.append`` is atomic, so factories running on several pool threads at
    once need no lock here.
    """

    def __init__(self, fail: set[Hashable] | None = None) -> None:
        self.calls: list[Hashable] = []
        self.made: list[Res] = []
        self.fail = fail or set()

    def __call__(self, key: Hashable) -> Res:
        self.calls.append(key)
        if key in self.fail:
            raise ConnectionError(f"cannot open {key!r}")
        res = Res(key)
        self.made.append(res)
        return res


class Crash:
    """A test-only message that makes :class:`CrashingSupervisor` raise."""


class CrashingSupervisor(PoolSupervisor):
    """A supervisor with a bug: told ``Crash``, its handler raises (and it fails)."""

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Crash):
            raise RuntimeError("a bug in the supervisor")
        return super().on_receive(message)
