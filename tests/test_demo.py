"""`make demo` (examples/tenant_demo.py) shows the tenant scenario end to end.

Two runs: the default one tells the story in a few lines on stdout and leaves
stderr empty (the pool is quiet unless asked); `--verbose` adds the pool's
structlog event stream on stderr, which the detailed checks read.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest
from conftest import run_python

from pooler_actors import Stats
from pooler_actors.stats import COUNTERS, GAUGES

DEMO = Path(__file__).resolve().parent.parent / "examples" / "tenant_demo.py"
MAX_LINES = 60
TENANTS = {"acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka"}


@pytest.fixture(scope="module")
def demo() -> subprocess.CompletedProcess[str]:
    """One default run of the demo, shared by the tests of this module."""
    done = run_python(str(DEMO), timeout=50)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def verbose() -> subprocess.CompletedProcess[str]:
    """One `--verbose` run: the event stream is its stderr."""
    done = run_python(str(DEMO), "--verbose", timeout=50)
    assert done.returncode == 0, done.stderr
    return done


def events(output: str, name: str) -> list[str]:
    """The lines of the event stream for the event `name`."""
    return [line for line in output.splitlines() if f"] {name} " in line]


def story(output: str, text: str) -> str:
    """The one line of the demo's story that contains `text`."""
    (line,) = [line for line in output.splitlines() if text in line]
    return line


def stats_table(output: str) -> dict[str, dict[str, str]]:
    """The final stats table: section title -> field name -> printed value."""
    lines = output.splitlines()
    start = lines.index("Final pool stats") + 1
    sections: dict[str, dict[str, str]] = {}
    for line in lines[start:]:
        if not line.strip():
            break
        if not line.startswith("    "):
            section = sections.setdefault(line.strip(), {})
            continue
        name, value = line.split()[:2]
        section[name] = value
    return sections


def test_demo_is_short_and_quiet(demo: subprocess.CompletedProcess[str]) -> None:
    lines = demo.stdout.splitlines()
    assert len(lines) <= MAX_LINES
    assert lines[-1].startswith("Demo finished:")
    assert demo.stderr == ""  # no event stream unless asked for
    assert "pool." not in demo.stdout


def test_demo_tells_the_story(demo: subprocess.CompletedProcess[str]) -> None:
    out = demo.stdout
    assert "1 of 3 slots" in story(out, "main thread holds acme")
    assert "health check evicted acme" in out
    waited = re.search(r"(\d+) acquires waited", story(out, "acquires waited"))
    assert waited and int(waited[1]) >= 1
    assert "acme reconnected on demand" in out
    assert story(out, "refresh(acme)").endswith("True")
    prewarm = story(out, "prewarm(")
    assert "created" in prewarm and "not_created" in prewarm
    assert story(out, "max_idle_time=").endswith(": 0 left")
    assert story(out, "max_lifetime=").endswith("renewed: True, lifetime_expired=1")


def test_demo_tells_the_lease_act(demo: subprocess.CompletedProcess[str]) -> None:
    out = demo.stdout
    held = story(out, "release(acme) during a lease")
    # Retired, not closed: the holder's query ran on it after the release.
    assert "1 retiring, closed: False" in held
    orders = re.search(r"query still works: (\d+) orders", held)
    assert orders and int(orders[1]) > 0
    assert story(out, "acme checked in").endswith("closed now: True")
    # globex was checked in first of the three idle tenants: the LRU one.
    reclaim = story(out, "hooli at the cap")
    assert reclaim.endswith("idle globex gave up its slot (reclaimed=1)")
    summary = story(out, "lease pool:")
    assert summary.endswith("checkouts=5, holders=0, retiring=0, drain_timeouts=0")


def test_demo_prints_every_stats_field_with_a_legend(
    demo: subprocess.CompletedProcess[str],
) -> None:
    sections = stats_table(demo.stdout)
    gauges = sections.pop("Gauges: the pool right now")
    counters = sections.pop("Counters: totals since the pool started")
    other = sections.pop("Other", {})
    assert sections == {}
    assert set(gauges) == set(GAUGES)
    assert set(counters) == set(COUNTERS)
    assert set(gauges) | set(counters) | set(other) == {f.name for f in fields(Stats)}
    assert gauges["max_open_resources"] == "3"
    assert int(gauges["open_resources"]) <= 3
    assert int(counters["created"]) >= 8
    assert int(counters["waits"]) >= 1
    assert int(counters["hits"]) >= 1
    assert counters["health_evictions"] == "1"
    # The legend tells the confusable fields apart.
    rows = [line.split(maxsplit=1) for line in demo.stdout.splitlines()]
    legend = {row[0]: row[1] for row in rows if len(row) == 2}
    assert "creating + open + closing" in legend["open_resources"]
    assert "ready" in legend["open"]
    assert "right now" in legend["wait_count"]


def test_verbose_shows_the_same_story_and_the_event_stream(
    demo: subprocess.CompletedProcess[str], verbose: subprocess.CompletedProcess[str]
) -> None:
    def shape(out: str) -> list[str]:  # the story without its numbers
        return [re.sub(r"[\d.]+", "N", line) for line in out.splitlines()]

    assert len(shape(verbose.stdout)) == len(shape(demo.stdout))
    assert events(verbose.stderr, "pool.started")


def test_verbose_creates_connections(verbose: subprocess.CompletedProcess[str]) -> None:
    created = {
        key
        for line in events(verbose.stderr, "pool.acquire.created")
        for key in re.findall(r"key=(\S+)", line)
    }
    assert created == TENANTS


def test_verbose_callers_queue_and_are_granted(
    verbose: subprocess.CompletedProcess[str],
) -> None:
    def of_clients(name: str) -> list[str]:  # Act 1's pool
        return [e for e in events(verbose.stderr, name) if "pool=tenants" in e]

    queued = of_clients("pool.acquire.queued")
    granted = of_clients("pool.acquire.granted")
    assert queued
    assert granted
    # The callers' bound context travels with their Acquire.
    assert all("client=client-" in line for line in queued + granted)


def test_verbose_health_check_evicts_broken_connection(
    verbose: subprocess.CompletedProcess[str],
) -> None:
    evicted = events(verbose.stderr, "pool.health.evicted")
    assert len(evicted) == 1
    assert "key=acme" in evicted[0]
    assert "reason=ping_failed" in evicted[0]
    assert events(verbose.stderr, "demo.reconnected")


def test_verbose_shows_the_lifecycle_policies(
    verbose: subprocess.CompletedProcess[str],
) -> None:
    err = verbose.stderr
    refreshed = events(err, "demo.refreshed")
    assert refreshed and "fresh=True" in refreshed[0]
    assert events(err, "pool.refresh")
    prewarmed = events(err, "demo.prewarmed")
    assert prewarmed and "created" in prewarmed[0] and "not_created" in prewarmed[0]
    idle = [
        line
        for line in events(err, "pool.resource.expired")
        if "reason=max_idle_time" in line
    ]
    assert idle
    assert "open_resources=0" in events(err, "demo.idle_closed")[0]
    renewed = events(err, "demo.lifetime_renewed")
    assert renewed and "fresh=True" in renewed[0]
    assert "lifetime_expired=1" in renewed[0]


def test_verbose_a_held_connection_is_retired_then_closed(
    verbose: subprocess.CompletedProcess[str],
) -> None:
    lines = [
        line
        for line in verbose.stderr.splitlines()
        if "pool=leased" in line or "] demo." in line
    ]

    def first(name: str, *fields: str) -> int:
        return next(
            n
            for n, line in enumerate(lines)
            if f"] {name} " in line and all(f in line for f in fields)
        )

    retired = first("pool.resource.retired", "key=acme", "reason=released")
    assert "holders=1" in lines[retired]
    query = first("demo.held_through_release")
    drained = first("pool.resource.drained", "key=acme")
    closed = first("pool.resource.closed", "key=acme")
    # Never closed under its holder: retired, the holder's query, the
    # checkin (drained), then the close.
    assert retired < query < drained < closed


def test_verbose_a_waiter_reclaims_the_idle_slot(
    verbose: subprocess.CompletedProcess[str],
) -> None:
    (reclaimed,) = events(verbose.stderr, "pool.resource.reclaimed")
    assert "key=globex" in reclaimed and "pool=leased" in reclaimed
    assert any(
        "key=globex" in line and "reason=reclaimed" in line
        for line in events(verbose.stderr, "pool.resource.closed")
    )
