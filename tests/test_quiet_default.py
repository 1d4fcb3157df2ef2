"""A good citizen's logging (SPEC 10): silent unless the application asks.

While structlog is unconfigured, events go to the stdlib logger
`pooler_actors`, which carries a `NullHandler`: with no logging configured a
program sees nothing; `logging` configuration decides what shows. Once
structlog is configured, events go to structlog (`capture_logs()` included).
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from conftest import run_python, wait_for
from resources import Factory
from structlog.contextvars import bind_contextvars, clear_contextvars
from structlog.testing import LogCapture, capture_logs
from structlog.typing import EventDict

from pooler_actors import FactoryError, Pool
from pooler_actors._events import STDLIB_LOGGER_NAME, Events

# A full cycle through every level: hits and creations (debug, info), a caller
# that times out and a factory that fails (warning), a close that raises
# (error), a health eviction, release and close. Exit status 0 = all happened.
CYCLE = textwrap.dedent(
    """
    import sys
    import time

    from pooler_actors import AcquireTimeout, FactoryError, Pool

    class Conn:
        def __init__(self, key):
            self.key = key

        def ping(self):
            if self.key == "sick":
                raise RuntimeError("unhealthy")

        def close(self):
            if self.key == "a":
                raise RuntimeError("close failed")

    def factory(key):
        if key == "bad":
            raise ValueError("refused")
        return Conn(key)

    with Pool(
        factory, name="quiet", max_open_resources=1, health_check_interval=0.01
    ) as pool:
        pool.acquire("a")
        pool.acquire("a")
        try:
            pool.acquire("b", timeout=0)
            sys.exit(2)
        except AcquireTimeout:
            pass
        pool.release("a")
        try:
            pool.acquire("bad")
            sys.exit(3)
        except FactoryError:
            pass
        pool.acquire("sick")
        deadline = time.monotonic() + 20
        while pool.contains("sick") and time.monotonic() < deadline:
            time.sleep(0.01)
        if pool.contains("sick"):
            sys.exit(4)
        pool.acquire("c")
    """
)


def run_cycle(tmp_path: Path, setup: str = "") -> tuple[str, str]:
    """Run the cycle after `setup` in a fresh interpreter; its stdout, stderr."""
    script = tmp_path / "cycle.py"
    script.write_text(textwrap.dedent(setup) + CYCLE)
    done = run_python(str(script))
    assert done.returncode == 0, (done.returncode, done.stderr)
    return done.stdout, done.stderr


@pytest.fixture(autouse=True)
def _no_context_left() -> Iterator[None]:
    clear_contextvars()
    yield
    clear_contextvars()


def test_nothing_is_printed_without_any_logging_configuration(
    tmp_path: Path,
) -> None:
    # Warnings and errors included: the NullHandler keeps stdlib's lastResort
    # handler (WARNING+ to stderr) from applying.
    assert run_cycle(tmp_path) == ("", "")


def test_an_application_logging_at_warning_sees_only_warnings_on_its_stream(
    tmp_path: Path,
) -> None:
    out, err = run_cycle(
        tmp_path,
        """
        import logging
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        """,
    )
    assert out == ""
    lines = err.splitlines()
    assert (
        "WARNING pool.factory.failed pool=quiet key=bad"
        + (" error=\"ValueError('refused')\"")
        in lines
    )
    assert any(line.startswith("WARNING pool.acquire.timeout ") for line in lines)
    assert any(line.startswith("WARNING pool.health.evicted ") for line in lines)
    assert any(line.startswith("ERROR pool.close.failed ") for line in lines)
    assert all(line.split()[0] in {"WARNING", "ERROR"} for line in lines), err


def test_stdlib_debug_configuration_shows_every_event(tmp_path: Path) -> None:
    out, err = run_cycle(
        tmp_path,
        """
        import logging, sys
        logging.basicConfig(
            level=logging.DEBUG,
            format="%(levelname)s %(name)s %(message)s",
            stream=sys.stdout,
        )
        """,
    )
    assert err == ""
    lines = out.splitlines()
    assert "DEBUG pooler_actors pool.acquire.hit pool=quiet key=a" in lines
    assert (
        "INFO pooler_actors pool.started pool=quiet max_open_resources=1"
        + (" health_check_interval=0.01")
        in lines
    )
    assert any(
        line.startswith("INFO pooler_actors pool.acquire.created pool=quiet key=a ")
        for line in lines
    )
    assert "INFO pooler_actors pool.closed pool=quiet reason=closed" in lines


def test_stdlib_records_carry_the_event_and_its_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert not structlog.is_configured()

    def named(event: str) -> list[logging.LogRecord]:
        return [r for r in list(caplog.records) if getattr(r, "event", "") == event]

    with (
        caplog.at_level(logging.DEBUG, logger=STDLIB_LOGGER_NAME),
        Pool(Factory(), name="std", health_check_interval=None) as pool,
    ):
        bind_contextvars(request_id="req-1", name="not-a-record-attribute")
        pool.acquire("a")
        pool.acquire("a")
        clear_contextvars()
        wait_for(lambda: named("pool.acquire.hit"))
    (record,) = named("pool.acquire.created")
    assert record.name == STDLIB_LOGGER_NAME
    assert record.levelno == logging.INFO
    fields = record.__dict__
    assert (fields["pool"], fields["key"], fields["request_id"]) == (
        "std",
        "a",
        "req-1",
    )
    assert isinstance(fields["created_s"], float)
    # A context variable named like a LogRecord attribute is in the text only.
    assert record.getMessage().startswith("pool.acquire.created pool=std key=a ")
    assert "name=not-a-record-attribute" in record.getMessage()
    assert "request_id=req-1" in record.getMessage()


def test_stdlib_level_decides_and_debug_costs_a_level_check(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = Events("p")
    with caplog.at_level(logging.INFO, logger=STDLIB_LOGGER_NAME):
        assert not events.debug_enabled()
        events.debug("pool.test.debug", "k")
        events.info("pool.test.info", "k")
    with caplog.at_level(logging.DEBUG, logger=STDLIB_LOGGER_NAME):
        assert events.debug_enabled()
        events.debug("pool.test.debug", "k2")
    assert [r.getMessage() for r in caplog.records] == [
        "pool.test.info pool=p key=k",
        "pool.test.debug pool=p key=k2",
    ]


def test_configured_structlog_gets_the_events_and_stdlib_none(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        caplog.at_level(logging.DEBUG, logger=STDLIB_LOGGER_NAME),
        capture_logs() as logs,
        Pool(Factory(), name="sl", health_check_interval=None) as pool,
    ):
        pool.acquire("a")
        pool.acquire("a")
        wait_for(lambda: any(e["event"] == "pool.acquire.hit" for e in list(logs)))
    assert [r for r in caplog.records if r.name == STDLIB_LOGGER_NAME] == []


def test_a_user_stdlib_logger_receives_the_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mine = logging.getLogger("myapp.pool")
    with (
        caplog.at_level(logging.DEBUG, logger="myapp.pool"),
        capture_logs() as structlog_logs,  # structlog configured: still not used
        Pool(Factory(), name="u", health_check_interval=None, logger=mine) as pool,
    ):
        pool.acquire("a")
        pool.acquire("a")
        wait_for(
            lambda: (
                "pool.acquire.hit pool=u key=a"
                in [r.getMessage() for r in list(caplog.records)]
            )
        )
    assert structlog_logs == []
    assert {r.name for r in caplog.records} == {"myapp.pool"}


@pytest.mark.parametrize("clash", ["event", "self"])
def test_a_context_variable_named_like_a_logger_parameter_drops_no_event(
    clash: str, caplog: pytest.LogCaptureFixture
) -> None:
    factory = Factory(fail={"bad"})
    with (
        capture_logs() as logs,
        Pool(factory, name="p", health_check_interval=None) as pool,
    ):
        bind_contextvars(request_id="req-1", **{clash: "the caller's"})
        pool.acquire("a")
        pool.acquire("a")
        with pytest.raises(FactoryError):
            pool.acquire("bad")
        clear_contextvars()
        wait_for(lambda: any(e["event"] == "pool.factory.failed" for e in list(logs)))
    names = [e["event"] for e in logs]
    for name in ("pool.acquire.created", "pool.acquire.hit", "pool.factory.failed"):
        (event,) = [e for e in logs if e["event"] == name]
        assert event["request_id"] == "req-1"
        assert "self" not in event
    assert "pool.closed" in names
    # The same on the stdlib path.
    structlog.reset_defaults()
    with caplog.at_level(logging.DEBUG, logger=STDLIB_LOGGER_NAME):
        Events("p").debug("pool.acquire.hit", "a", {clash: "x", "request_id": "r"})
    (record,) = caplog.records
    assert record.getMessage() == "pool.acquire.hit pool=p key=a request_id=r"
    assert record.__dict__["event"] == "pool.acquire.hit"


def test_a_context_value_a_processor_cannot_take_still_emits_the_event() -> None:
    def picky(_logger: Any, _method: str, event: EventDict) -> EventDict:
        if "unrenderable" in event:
            raise ValueError("cannot render that")
        return event

    capture = LogCapture()
    structlog.configure(processors=[picky, capture])
    Events("p").info("pool.release", "a", {"unrenderable": object()})
    assert capture.entries == [
        {
            "event": "pool.release",
            "log_level": "info",
            "pool": "p",
            "key": "a",
            "context_error": repr(ValueError("cannot render that")),
        }
    ]


def test_floats_are_rounded_to_the_microsecond() -> None:
    with capture_logs() as logs:
        Events("p").info(
            "pool.test", "k", {"caller_float": 1 / 3}, wait_s=0.123456789, n=3
        )
    assert logs[0]["wait_s"] == 0.123457
    assert logs[0]["n"] == 3
    assert logs[0]["caller_float"] == 1 / 3  # the caller's values are theirs


def test_a_user_stdlib_logger_adapter_receives_the_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    adapter = logging.LoggerAdapter(logging.getLogger("myapp.adapted"), {"app": "x"})
    with caplog.at_level(logging.INFO, logger="myapp.adapted"):
        Events("p", adapter).info("pool.release", "a", {"request_id": "r"})
        Events("p", adapter).debug("pool.acquire.hit", "a")  # below INFO
    assert [r.getMessage() for r in caplog.records] == [
        "pool.release pool=p key=a request_id=r"
    ]
