"""Emitting the pool's structlog events.

Events go through ``structlog.get_logger()`` at the moment they are emitted
(so ``structlog.testing.capture_logs()`` and later configuration apply), or
through the logger the user gave the pool. Debug events — one per acquire —
are dropped without building anything when structlog was never configured,
so an application that did not set up structlog sees no line per acquire.

Whether debug is enabled is decided once per structlog configuration, not per
event: the emitter remembers the configuration it probed (``is_configured``,
wrapper class, logger factory — the objects ``structlog.configure`` replaces)
and probes again when one of them changes. A hit acquire under a logger that
filters out debug thus costs three identity checks and one level check.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Hashable
from typing import Any

import structlog

# The live global configuration (private but stable since structlog's first
# releases): read without building get_config()'s dict per event.
from structlog._config import _CONFIG as _LIVE_CONFIG
from structlog._config import BoundLoggerLazyProxy

_NO_KEY: Any = object()
_DEBUG = logging.DEBUG


def _always(_level: int) -> bool:
    return True


def _never(_level: int) -> bool:
    return False


def _level_probe(logger: Any) -> Callable[[int], bool]:
    """``logger``'s "is this level enabled?" check; always yes if it has none."""
    for name in ("is_enabled_for", "isEnabledFor"):
        probe = getattr(logger, name, None)
        if callable(probe):
            return probe  # type: ignore[no-any-return]
    return _always


class Events:
    """Emits one event per state change for one pool, in the supervisor's thread."""

    __slots__ = ("_dynamic", "_logger", "_probe", "_seen", "pool")

    def __init__(self, pool: str, logger: Any = None) -> None:
        self.pool = pool
        self._logger = logger
        # structlog's global logger and a lazy proxy of the user's are resolved
        # at emit time, so their debug check follows structlog's configuration;
        # a bound logger of the user's is fixed, and so is its level check.
        self._dynamic = logger is None or isinstance(logger, BoundLoggerLazyProxy)
        self._seen: tuple[bool, Any, Any] | None = None
        self._probe: Callable[[int], bool] = (
            _never if self._dynamic else _level_probe(logger)
        )

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
        if self._dynamic:
            config = _LIVE_CONFIG
            seen = self._seen
            if (
                seen is None
                or config.is_configured is not seen[0]
                or config.default_wrapper_class is not seen[1]
                or config.logger_factory is not seen[2]
            ):
                self._reprobe()
        if not self._probe(_DEBUG):
            return
        self._emit("debug", event, key, context, fields)

    def debug_enabled(self) -> bool:
        """Whether a debug event would be emitted now."""
        if self._dynamic:
            self._reprobe()
        return bool(self._probe(_DEBUG))

    def _reprobe(self) -> None:
        """Find out how the logger of this moment decides whether debug is on."""
        self._seen = (
            _LIVE_CONFIG.is_configured,
            _LIVE_CONFIG.default_wrapper_class,
            _LIVE_CONFIG.logger_factory,
        )
        if self._logger is None and not structlog.is_configured():
            # structlog's defaults print every level: stay quiet per acquire.
            self._probe = _never
            return
        try:
            bound = self._get().bind()
        except Exception:  # a logger factory that fails: let the emit show it
            self._probe = _always
            return
        self._probe = _level_probe(bound)

    def info(
        self,
        event: str,
        key: Hashable = _NO_KEY,
        context: dict[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        self._emit("info", event, key, context, fields)

    def warning(
        self,
        event: str,
        key: Hashable = _NO_KEY,
        context: dict[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        self._emit("warning", event, key, context, fields)

    def error(
        self,
        event: str,
        key: Hashable = _NO_KEY,
        context: dict[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        self._emit("error", event, key, context, fields)

    def _emit(
        self,
        level: str,
        event: str,
        key: Hashable,
        context: dict[str, Any] | None,
        fields: dict[str, Any],
    ) -> None:
        # Logging is user code running in the supervisor's thread: a processor
        # or renderer that raises must not stop the pool. Say so on stderr.
        try:
            getattr(self._get(), level)(event, **self._fields(key, context, fields))
        except Exception as error:
            with contextlib.suppress(Exception):
                sys.stderr.write(
                    f"pooler_actors: pool {self.pool!r} could not log {event!r}: "
                    f"{error!r}\n"
                )

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
