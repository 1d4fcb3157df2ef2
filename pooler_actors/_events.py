"""Emitting the pool's events: structlog when configured, else stdlib logging.

Where an event goes is decided when it is emitted:

1. the logger given to the pool (`Pool(..., logger=...)`), used as it is — a
   structlog logger, or a stdlib `logging.Logger` or `logging.LoggerAdapter`;
2. else, once the application configured structlog (any `structlog.configure`,
   including the one `structlog.testing.capture_logs()` makes),
   `structlog.get_logger()` of that moment;
3. else the stdlib logger `pooler_actors`, so the application's `logging`
   configuration decides. Like a well-behaved library, this module attaches a
   `logging.NullHandler` to it: an application that configured no logging at
   all sees nothing, not even warnings (stdlib's "last resort" handler, which
   writes WARNING and above to stderr, only applies when no handler exists).

On the stdlib path the record's message is the event name followed by its
fields as `key=value` text (`pool.acquire.created pool=tenants key=acme
created_s=0.000213`), so a plain `logging.basicConfig()` shows what happened;
`record.event` is the bare event name and every field is also a record
attribute (`record.key`, `record.wait_s`), for JSON formatters and structlog's
`ExtraAdder` — except a caller context variable named like one of
`LogRecord`'s own attributes (`name`, `message`, ...), which is in the text only.

Fields: the pool's own (`pool`, `key`, and the event's) win over the caller's
context variables on a clash, and a context variable named `event` or `self`
is not carried (the first is the event's name; the second cannot be passed as
a keyword to a logger method) — the event itself is always emitted. Floats
among the pool's fields are seconds, rounded to the microsecond.

Whether debug is enabled is decided once per structlog configuration, not per
event: the emitter remembers the configuration it probed (`is_configured`,
wrapper class, logger factory — the objects `structlog.configure` replaces)
and probes again when one of them changes. A hit acquire whose debug event is
filtered out thus costs three identity checks and one level check (on the
stdlib path, `Logger.isEnabledFor`, which the `logging` module caches).
Likewise `structlog.get_logger()` is bound once per configuration (`_structlog`),
not once per event.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Hashable
from typing import Any, cast

import structlog

from pooler_actors._pykka import STRUCTLOG_CONFIG as _LIVE_CONFIG
from pooler_actors._pykka import BoundLoggerLazyProxy
from pooler_actors.errors import REPR_LIMIT, short_repr

__all__ = ["STDLIB_LOGGER_NAME", "Events"]

STDLIB_LOGGER_NAME = "pooler_actors"
"""The stdlib logger that receives events while structlog is unconfigured."""

_STDLIB = logging.getLogger(STDLIB_LOGGER_NAME)
# Silent unless the application configures logging: with a handler present,
# stdlib's lastResort (WARNING+ to stderr) never fires for our records.
if not any(isinstance(h, logging.NullHandler) for h in _STDLIB.handlers):
    _STDLIB.addHandler(logging.NullHandler())

_StdlibLogger = logging.Logger | logging.LoggerAdapter[Any]

_NO_KEY: Any = object()
# A printable str key this long or shorter has a repr within REPR_LIMIT (at
# most 2 characters per character, a backslash, plus the quotes).
_SHORT_STR = (REPR_LIMIT - 2) // 2
_DEBUG = logging.DEBUG
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# Context variables never carried: `event` is the event's name (the pool's own
# field), `self` is the first parameter of every bound logger method, so a
# keyword of that name raises "got multiple values for argument".
_NOT_CARRIED = frozenset({"event", "self"})

# Names `Logger.makeRecord` refuses in `extra` ("Attempt to overwrite ...").
_RECORD_ATTRIBUTES = frozenset(
    {
        *logging.LogRecord("", 0, "", 0, "", None, None).__dict__,
        "message",
        "asctime",
    }
)

# Characters after which a string field is shown as its repr in the text.
_QUOTE_IF = frozenset(" \t\r\n=\"'")


def _always(_level: int) -> bool:
    return True


def _level_probe(logger: Any) -> Callable[[int], bool]:
    """`logger`'s "is this level enabled?" check; always yes if it has none."""
    for name in ("is_enabled_for", "isEnabledFor"):
        probe = getattr(logger, name, None)
        if callable(probe):
            return cast("Callable[[int], bool]", probe)
    return _always


def _shown(value: Any) -> str:
    """One field value in the stdlib message text."""
    if isinstance(value, str) and value and _QUOTE_IF.isdisjoint(value):
        return value
    return repr(value)


def _text(event: str, fields: dict[str, Any]) -> str:
    """`event k=v k=v`: the message of a stdlib record."""
    if not fields:
        return event
    return f"{event} " + " ".join(f"{k}={_shown(v)}" for k, v in fields.items())


class Events:
    """Emits one event per state change for one pool, in the supervisor's thread.

    Args:
        pool: the pool's name, the `pool` field of every event.
        logger: where events go instead of the default (see the module doc):
            a structlog logger, or a stdlib `logging.Logger` or adapter.
    """

    __slots__ = ("_bound", "_dynamic", "_logger", "_probed", "_stdlib", "pool")

    def __init__(self, pool: str, logger: Any = None) -> None:
        self.pool = pool
        # A stdlib logger (or adapter) given by the user is used like our own
        # stdlib logger. An adapter's `extra` replaces ours before Python 3.13:
        # its records then carry the fields in their message only.
        self._stdlib: _StdlibLogger | None = (
            logger
            if isinstance(logger, logging.Logger | logging.LoggerAdapter)
            else None
        )
        self._logger = None if self._stdlib is not None else logger
        # The default logger and a lazy proxy of the user's are resolved at
        # emit time, so their debug check follows structlog's configuration; a
        # bound logger of the user's is fixed, and so is its level check.
        self._dynamic = logger is None or isinstance(logger, BoundLoggerLazyProxy)
        # (the configuration probed, its "is this level enabled?" check)
        self._probed: tuple[tuple[bool, Any, Any] | None, Callable[[int], bool]] = (
            None,
            _STDLIB.isEnabledFor if self._dynamic else _level_probe(logger),
        )
        # (the configuration it was bound under, `structlog.get_logger()`
        # bound), see `_structlog`.
        self._bound: tuple[Any, Any, Any, Any, Any] | None = None

    def _target(self) -> _StdlibLogger | None:
        """The stdlib logger to emit to now, or None for the structlog path."""
        if self._stdlib is not None:
            return self._stdlib
        if self._logger is None and not _LIVE_CONFIG.is_configured:
            return _STDLIB
        return None

    def debug(
        self,
        event: str,
        key: Hashable = _NO_KEY,
        context: dict[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        """Per-acquire detail: costs a level check when debug is filtered out."""
        if self.debug_known():
            self._emit("debug", event, key, context, fields)

    def debug_enabled(self) -> bool:
        """Whether a debug event would be emitted now (probing afresh)."""
        if self._dynamic:
            self._reprobe()
        return bool(self._probed[1](_DEBUG))

    def debug_known(self) -> bool:
        """Whether a debug event would be emitted now.

        Safe and cheap from any thread (the hit path asks it in callers'
        threads): the configuration probed and its level check are one
        tuple, replaced whole, so a reader never pairs a configuration with
        another's check; a configuration that changed is probed again (two
        threads probing at once store equal answers).
        """
        seen, probe = self._probed
        if self._dynamic:
            config = _LIVE_CONFIG
            if (
                seen is None
                or config.is_configured is not seen[0]
                or config.default_wrapper_class is not seen[1]
                or config.logger_factory is not seen[2]
            ):
                probe = self._reprobe()
        return bool(probe(_DEBUG))

    def _reprobe(self) -> Callable[[int], bool]:
        """Find out how the logger of this moment decides whether debug is on."""
        seen = (
            _LIVE_CONFIG.is_configured,
            _LIVE_CONFIG.default_wrapper_class,
            _LIVE_CONFIG.logger_factory,
        )
        probe: Callable[[int], bool]
        if self._logger is None and not _LIVE_CONFIG.is_configured:
            # The stdlib path: its own level check follows `logging` as it
            # changes (setLevel clears the logger's cache).
            probe = _STDLIB.isEnabledFor
        else:
            try:
                logger = (
                    self._logger if self._logger is not None else structlog.get_logger()
                )
                probe = _level_probe(logger.bind())
            except Exception:  # a logger factory that fails: let the emit show it
                probe = _always
        self._probed = (seen, probe)
        return probe

    def info(
        self,
        event: str,
        key: Hashable = _NO_KEY,
        context: dict[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        """A lifecycle event: a resource created, released, expired..."""
        self._emit("info", event, key, context, fields)

    def warning(
        self,
        event: str,
        key: Hashable = _NO_KEY,
        context: dict[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        """A caller not served, a factory that failed, an eviction."""
        self._emit("warning", event, key, context, fields)

    def error(
        self,
        event: str,
        key: Hashable = _NO_KEY,
        context: dict[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        """User code the pool had to give up on, a close that raised."""
        self._emit("error", event, key, context, fields)

    def _emit(
        self,
        level: str,
        event: str,
        key: Hashable,
        context: dict[str, Any] | None,
        fields: dict[str, Any],
    ) -> None:
        # Logging is user code running in the supervisor's thread: a filter,
        # processor or renderer that raises must not stop the pool.
        try:
            stdlib = self._target()
            if stdlib is not None:
                number = _LEVELS[level]
                if stdlib.isEnabledFor(number):
                    out = self._fields(key, context, fields)
                    stdlib.log(number, _text(event, out), extra=_extra(event, out))
                return
            logger = self._logger if self._logger is not None else self._structlog()
            method = getattr(logger, level)
            try:
                method(event, **self._fields(key, context, fields))
            except Exception as error:
                if not context:
                    raise
                # Maybe a caller's value the logger cannot take (a parameter
                # name of a custom logger method, a value a processor chokes
                # on): the event still goes out, with the pool's fields only.
                method(
                    event, **self._fields(key, None, fields), context_error=repr(error)
                )
        except Exception as error:
            with contextlib.suppress(Exception):
                sys.stderr.write(
                    f"pooler_actors: pool {self.pool!r} could not log {event!r}: "
                    f"{error!r}\n"
                )

    def _structlog(self) -> Any:
        """`structlog.get_logger()`, bound: the logger of this moment.

        Bound once per configuration: its wrapper class, logger factory,
        processors list and context class are what binding reads, so the
        logger is bound again when `structlog.configure` replaces any of them
        (`capture_logs()` changes the processors list in place, which a bound
        logger sees). A lazy proxy bound anew per event costs ~2.5 µs.
        """
        config = _LIVE_CONFIG
        bound = self._bound
        if (
            bound is None
            or bound[0] is not config.default_wrapper_class
            or bound[1] is not config.logger_factory
            or bound[2] is not config.default_processors
            or bound[3] is not config.default_context_class
        ):
            bound = (
                config.default_wrapper_class,
                config.logger_factory,
                config.default_processors,
                config.default_context_class,
                structlog.get_logger().bind(),
            )
            self._bound = bound  # replaced whole: another thread reads it too
        return bound[4]

    def _fields(
        self, key: Hashable, context: dict[str, Any] | None, fields: dict[str, Any]
    ) -> dict[str, Any]:
        """The event's fields: the pool's own first, then the caller's context."""
        out: dict[str, Any] = {"pool": self.pool}
        if key is not _NO_KEY:
            out["key"] = _short_key(key)
        for name, value in fields.items():
            # The pool's floats are durations in seconds: microseconds suffice.
            out[name] = round(value, 6) if type(value) is float else value
        if context:
            for name, value in context.items():
                if name not in out and name not in _NOT_CARRIED:
                    out[name] = value
        return out


def _short_key(key: Hashable) -> Any:
    """`key` itself, or its repr cut to `REPR_LIMIT` characters if longer."""
    if type(key) is int or (
        type(key) is str and len(key) <= _SHORT_STR and key.isprintable()
    ):
        return key  # the common keys: short enough without a repr
    try:
        if len(repr(key)) <= REPR_LIMIT:
            return key
    except Exception:
        pass
    return short_repr(key)


def _extra(event: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The record attributes of a stdlib event: its name and every safe field."""
    extra = {k: v for k, v in fields.items() if k not in _RECORD_ATTRIBUTES}
    extra["event"] = event
    return extra
