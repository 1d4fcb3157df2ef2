"""The benchmark suite runs: ``benchmarks/run.py --quick`` exits 0 with its table.

No timing is asserted here; figures belong to ``make bench``.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_python

ROOT = Path(__file__).resolve().parent.parent


def test_bench_quick_prints_the_table() -> None:
    result = run_python(
        str(ROOT / "benchmarks" / "run.py"), "--quick", timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    for name in (
        "hit.pool_acquire_vs_pykka_ask",
        "hit.gcp_connection",
        "contention.8x100.p99_us",
        "waking.p99_ms",
        "scale.executor.rss_per_resource_kib",
        "scale.thread.hit_p99_sweep_vs_idle",
        "scale.thread_vs_executor.open_time",
        "fast.hit_vs_lock_dict",  # the gcp rows need the [bench] extra
        "fast.shared_lease_vs_lock_dict",
        "fast.storm.max_mailbox_depth",
    ):
        assert name in out, f"{name} missing from:\n{out}"
    assert "targets hold" in out
    assert "✔" in out  # each target says whether it holds


def test_a_run_records_its_sections_and_keeps_the_others(tmp_path: Path) -> None:
    """--json: each section with when, where and how; --only replaces its own."""
    out = tmp_path / "results.json"
    run = str(ROOT / "benchmarks" / "run.py")
    for args in (["load", "hit"], ["load"]):
        done = run_python(
            run, "--quick", "--only", *args, "--json", str(out), timeout=120, cwd=ROOT
        )
        assert done.returncode == 0, done.stderr[-2000:]
        if args == ["load", "hit"]:
            first = json.loads(out.read_text())
    data = json.loads(out.read_text())
    [mode] = data["runs"]  # pinned where the OS can pin, else unpinned
    sections = data["runs"][mode]
    assert set(sections) == {"load", "hit"}
    # The second run replaced `load` and kept the first run's `hit`.
    assert sections["hit"] == first["runs"][mode]["hit"]
    assert sections["load"]["measured_at"] >= first["runs"][mode]["load"]["measured_at"]
    load = sections["load"]
    assert load["mode"] == "quick"
    assert load["python"] and load["machine"]["cpu_count"] >= 1
    assert load["machine"]["platform"] and load["machine"]["cpu_model"]
    assert load["pinned"].startswith(("pinned to CPU", "unpinned"))
    names = {r["name"] for r in load["rows"]}
    assert {"contention.8x100.p99_us", "waking.p99_ms"} <= names


def test_a_quick_run_records_nothing_unless_told() -> None:
    results = ROOT / "benchmarks" / "results" / "latest.json"
    before = results.read_bytes() if results.exists() else None
    done = run_python(
        str(ROOT / "benchmarks" / "run.py"), "--quick", "--only", "load", cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "recorded in" not in done.stdout
    assert (results.read_bytes() if results.exists() else None) == before
