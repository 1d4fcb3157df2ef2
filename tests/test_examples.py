"""Each script in examples/ prints exactly the Output lines of the Go seed's example."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from conftest import run_python

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

WORKER = "Worker(closed=False)"  # Go's %+v of a fresh Worker

# Transcribed from the seed's "Output:" lines.
EXPECTED: dict[str, list[str]] = {
    "pool.py": [
        "OpenResources: 1",
        "WaitCount: 1",
        "OpenResources: 1",
        "WaitCount: 0",
        "Duration took longer than 100ms: True",
    ],
    "health_check.py": [
        "OpenResources before health check: 1",
        "OpenResources after health check: 0",
    ],
    "release.py": [f"Worker acquired: {WORKER}", "Worker released"],
    "all.py": [f"key0 {WORKER}", f"key1 {WORKER}", f"key2 {WORKER}"],
    "release_all.py": [
        "OpenResources before ReleaseAll: 3",
        "OpenResources after ReleaseAll: 0",
    ],
    "walk.py": [f"key0 {WORKER}", f"key1 {WORKER}", f"key2 {WORKER}"],
}

# Printed by three threads: any order, in Go as here.
UNORDERED: dict[str, list[str]] = {
    "acquire_concurrent.py": [
        "Worker acquired: key0",
        "Worker acquired: key1",
        "Worker acquired: key2",
    ],
}


def run_example(script: str) -> list[str]:
    """Run one example in a fresh interpreter; return its stdout lines."""
    done = run_python(str(EXAMPLES / script), timeout=45)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_prints_seed_output(script: str) -> None:
    assert run_example(script) == EXPECTED[script]


@pytest.mark.parametrize("script", sorted(UNORDERED))
def test_concurrent_example_prints_seed_lines_in_any_order(script: str) -> None:
    assert Counter(run_example(script)) == Counter(UNORDERED[script])
