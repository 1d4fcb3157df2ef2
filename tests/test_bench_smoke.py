"""The benchmark suite runs: ``benchmarks/run.py --quick`` exits 0 with its table.

No timing is asserted here; figures belong to ``make bench``.
"""

from __future__ import annotations

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
