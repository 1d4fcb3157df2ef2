"""``make bench``: the side-by-side benchmark suite of issue 6, as one table.

Every ratio in the table pairs figures from the same process run (most from
the same interleaved rounds). Rows with a target say whether it holds.

By default the process is pinned to one CPU: on a 2-vCPU VM a wakeup across
vCPUs costs ~60 µs, and which actor thread lands on which vCPU changes from
run to run, so unpinned round trips flip between ~10 µs and ~75 µs per thread
and ratios between two actors are noise. ``--no-pin`` measures unpinned.

Usage: ``python benchmarks/run.py [--quick] [--no-pin] [--only SECTION ...]``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

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


def _machine() -> str:
    model = "?"
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


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
    args = parser.parse_args(argv)
    pinned = "unpinned"
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        cpu = max(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        pinned = f"pinned to CPU {cpu}"
    _common.quiet_logging()
    mode = "quick" if args.quick else "full"
    print(f"# pooler_actors benchmarks ({mode}, {pinned}): {_machine()}")
    rows: list[Row] = []
    start = time.perf_counter()
    for name in args.only or list(SECTIONS):
        section_start = time.perf_counter()
        rows += SECTIONS[name](args.quick)
        print(f"# {name}: {time.perf_counter() - section_start:.1f} s", flush=True)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
