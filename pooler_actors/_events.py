"""Emitting the pool's structlog events.

Events go through ``structlog.get_logger()`` at the moment they are emitted
(so ``structlog.testing.capture_logs()`` and later configuration apply), or
through the logger the user gave the pool. Debug events — one per acquire —
are dropped without building anything when structlog was never configured,
so an application that did not set up structlog sees no line per acquire.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import structlog

_NO_KEY: Any = object()


class Events:
    """Emits one event per state change for one pool, in the supervisor's thread."""

    __slots__ = ("_logger", "pool")

    def __init__(self, pool: str, logger: Any = None) -> None:
        self.pool = pool
        self._logger = logger

    def _get(self) -> Any:
        return self._logger if self._logger is not None else structlog.get_logger()

    def debug(
        self,
        event: str,
        key: Hashable = _NO_KEY,
        context: dict[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        """Per-acquire detail; skipped while structlog is unconfigured."""
        if self._logger is None and not structlog.is_configured():
            return
        self._get().debug(event, **self._fields(key, context, fields))

    def info(
        self,
        event: str,
        key: Hashable = _NO_KEY,
        context: dict[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        self._get().info(event, **self._fields(key, context, fields))

    def warning(
        self,
        event: str,
        key: Hashable = _NO_KEY,
        context: dict[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        self._get().warning(event, **self._fields(key, context, fields))

    def error(
        self,
        event: str,
        key: Hashable = _NO_KEY,
        context: dict[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        self._get().error(event, **self._fields(key, context, fields))

    def _fields(
        self, key: Hashable, context: dict[str, Any] | None, fields: dict[str, Any]
    ) -> dict[str, Any]:
        # The caller's context first: the pool's own fields win on a clash.
        out: dict[str, Any] = dict(context) if context else {}
        out.update(fields)
        out["pool"] = self.pool
        if key is not _NO_KEY:
            out["key"] = key
        return out
