"""``make bench``: the side-by-side benchmark suite of issue 6, as one table.

Every ratio in the table pairs figures from the same process run (most from
the same interleaved rounds). Rows with a target say whether it holds.

By default the process is pinned to one CPU: on a 2-vCPU VM a wakeup across
vCPUs costs ~60 µs, and which actor thread lands on which vCPU changes from
run to run, so unpinned round trips flip between ~10 µs and ~75 µs per thread
and ratios between two actors are noise. ``--no-pin`` measures unpinned.

A full run (not ``--quick``) also records its rows in
``benchmarks/results/latest.json`` (``--json PATH`` elsewhere, ``--no-json``
not at all), under ``pinned`` or ``unpinned``, one entry per section with
when, where and how long it ran: a run of some sections (``--only``) replaces
those and keeps the others. ``benchmarks/charts.py`` draws the charts of
``docs/performance.md`` from that file.

Usage: ``python benchmarks/run.py [--quick] [--no-pin] [--only SECTION ...]
[--json PATH | --no-json]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import bench_fast
import bench_hit
import bench_load
import bench_pg
import bench_scale
from _common import Row

SECTIONS: dict[str, Callable[[bool], list[Row]]] = {
    "fast": bench_fast.run,
    "hit": bench_hit.run,
    "load": bench_load.run,
    "scale": bench_scale.run,
    "pg": bench_pg.run,
}


def _logging(quick: bool) -> list[Row]:
    try:
        import bench_logging  # noqa: PLC0415 - optional, written separately
    except ImportError:
        return [_common.row("logging", math.nan, "", note="bench_logging.py missing")]
    rows: list[Row] = bench_logging.run(quick)
    _common.quiet_logging()  # it resets structlog when done
    return rows


SECTIONS["logging"] = _logging


ROOT = Path(__file__).resolve().parent.parent
#: Where a full run records its rows unless told otherwise.
RESULTS = ROOT / "benchmarks" / "results" / "latest.json"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _machine() -> str:
    return (
        f"{os.cpu_count()} CPUs ({_cpu_model()}), "
        f"Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def _commit() -> str | None:
    """The checkout's commit (``+`` if it has changes), if git can tell."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("+" if dirty else "")


def environment(pinned: str) -> dict[str, object]:
    """When, where and how a section ran: recorded beside its rows."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "platform": platform.platform(),
            "summary": _machine(),
        },
        "pinned": pinned,
        "commit": _commit(),
    }


def _jsonable(row: Row) -> Row:
    """``row`` with NaN as ``None`` (JSON has no NaN)."""
    return {
        k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()
    }


def record(path: Path, pinned: bool, sections: dict[str, dict[str, object]]) -> None:
    """Put ``sections`` under ``pinned``/``unpinned`` in ``path``, keeping the rest."""
    data: dict[str, Any] = {}
    if path.is_file():
        data = json.loads(path.read_text())
    runs = data.setdefault("runs", {})
    runs.setdefault("pinned" if pinned else "unpinned", {}).update(sections)
    data["schema"] = 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


def print_table(rows: list[Row]) -> None:
    """One line per figure: name, value, unit, target and whether it holds."""
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        verdict = ""
        if "target" in r:
            verdict = f"  target {r['target']}: {'✔' if r['ok'] else '✘ MISSED'}"
            if r.get("reference"):
                verdict += " [design not in use]"
        note = f"  ({r['note']})" if r.get("note") else ""
        value = _fmt(r["value"])
        print(f"{r['name']:<{width}}  {value:>12} {r['unit']:<6}{verdict}{note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small, fast smoke run")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one CPU")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), default=None)
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help=f"record the rows here (default for a full run: {RESULTS})",
    )
    parser.add_argument("--no-json", action="store_true", help="record nothing")
    args = parser.parse_args(argv)
    out = args.json
    if out is None and not args.quick and not args.no_json:
        out = RESULTS
    pinned = "unpinned"
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        cpu = max(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        pinned = f"pinned to CPU {cpu}"
    _common.quiet_logging()
    mode = "quick" if args.quick else "full"
    print(f"# pooler_actors benchmarks ({mode}, {pinned}): {_machine()}")
    rows: list[Row] = []
    sections: dict[str, dict[str, object]] = {}
    env = environment(pinned)
    start = time.perf_counter()
    for name in args.only or list(SECTIONS):
        began = datetime.datetime.now(datetime.UTC)
        section_start = time.perf_counter()
        section_rows = SECTIONS[name](args.quick)
        took = time.perf_counter() - section_start
        rows += section_rows
        print(f"# {name}: {took:.1f} s", flush=True)
        sections[name] = {
            **env,
            "measured_at": began.isoformat(timespec="seconds"),
            "seconds": round(took, 1),
            "mode": mode,
            "rows": [_jsonable(r) for r in section_rows],
        }
        if out is not None:  # section by section: a run cut short keeps the rest
            record(out, pinned != "unpinned", {name: sections[name]})
    print()
    print_table(rows)
    targets = [r for r in rows if "target" in r and not r.get("reference")]
    missed = [r["name"] for r in targets if not r["ok"]]
    print()
    print(
        f"# {len(targets) - len(missed)}/{len(targets)} targets hold"
        + (f"; missed: {', '.join(missed)}" if missed else "")
        + f" ({time.perf_counter() - start:.1f} s)"
    )
    if out is not None:
        print(f"# recorded in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
