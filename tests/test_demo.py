"""``make demo`` (examples/tenant_demo.py) shows the tenant scenario end to end."""

from __future__ import annotations

import re
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest
from conftest import run_python

from pooler_actors import Stats

DEMO = Path(__file__).resolve().parent.parent / "examples" / "tenant_demo.py"


@pytest.fixture(scope="module")
def demo() -> subprocess.CompletedProcess[str]:
    """One run of the demo, shared by the tests of this module."""
    return run_python(str(DEMO), timeout=50)


def events(output: str, name: str) -> list[str]:
    """The lines of the event stream for the event ``name``."""
    return [line for line in output.splitlines() if f"] {name} " in line]


def stats_table(output: str) -> dict[str, str]:
    """The final stats table, as field name -> printed value."""
    lines = output.splitlines()
    start = lines.index("Final pool stats") + 2  # skip the title and the rule
    end = lines.index(lines[start - 1], start)  # the closing rule
    return dict(line.split() for line in lines[start:end])


def test_demo_exits_cleanly(demo: subprocess.CompletedProcess[str]) -> None:
    assert demo.returncode == 0, demo.stderr
    assert "Traceback" not in demo.stderr
    assert demo.stdout.splitlines()[-1].startswith("Demo finished:")


def test_demo_creates_connections(demo: subprocess.CompletedProcess[str]) -> None:
    created = {
        key
        for line in events(demo.stdout, "pool.acquire.created")
        for key in re.findall(r"key=(\S+)", line)
    }
    assert created == {
        "acme",
        "globex",
        "initech",
        "umbrella",
        "hooli",
        "stark",
        "wayne",
        "wonka",
    }


def test_demo_callers_queue_and_are_granted(
    demo: subprocess.CompletedProcess[str],
) -> None:
    queued = events(demo.stdout, "pool.acquire.queued")
    granted = events(demo.stdout, "pool.acquire.granted")
    assert queued
    assert granted
    # The callers' bound context travels with their Acquire.
    assert all("client=client-" in line for line in queued + granted)


def test_demo_health_check_evicts_broken_connection(
    demo: subprocess.CompletedProcess[str],
) -> None:
    evicted = events(demo.stdout, "pool.health.evicted")
    assert len(evicted) == 1
    assert "key=acme" in evicted[0]
    assert "reason=ping_failed" in evicted[0]
    assert events(demo.stdout, "demo.reconnected")


def test_demo_prints_every_stats_field(
    demo: subprocess.CompletedProcess[str],
) -> None:
    table = stats_table(demo.stdout)
    assert list(table) == [f.name for f in fields(Stats)]
    assert table["max_open_resources"] == "3"
    assert int(table["created"]) >= 8
    assert int(table["waits"]) >= 1
    assert int(table["hits"]) >= 1
    assert table["health_evictions"] == "1"
    assert int(table["open_resources"]) <= 3


def test_demo_shows_the_lifecycle_policies(
    demo: subprocess.CompletedProcess[str],
) -> None:
    refreshed = events(demo.stdout, "demo.refreshed")
    assert refreshed and "fresh=True" in refreshed[0]
    assert events(demo.stdout, "pool.refresh")
    prewarmed = events(demo.stdout, "demo.prewarmed")
    assert prewarmed and "created" in prewarmed[0] and "not_created" in prewarmed[0]
    idle = [
        line
        for line in events(demo.stdout, "pool.resource.expired")
        if "reason=max_idle_time" in line
    ]
    assert idle
    assert "open_resources=0" in events(demo.stdout, "demo.idle_closed")[0]
    renewed = events(demo.stdout, "demo.lifetime_renewed")
    assert renewed and "fresh=True" in renewed[0]
    assert "lifetime_expired=1" in renewed[0]
