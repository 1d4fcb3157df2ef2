"""``make charts``: the charts of ``docs/performance.md``, drawn from recorded results.

Reads what ``benchmarks/run.py`` recorded (``benchmarks/results/latest.json``)
and writes SVGs into ``docs/assets/charts/``:

- ``cost_per_operation.svg``: what one operation costs, the pool's beside
  its peers and floors (log scale), pinned and unpinned;
- ``postgresql.svg``: throughput and acquire+return p99 per shape against
  psycopg_pool (with and without a semaphore) and the dict+lock cache;
- ``scale.svg``: how the cost grows with open keys, and with one thread per
  resource (the two resource actor designs).

Each chart says under its title when, where and how its figures were
measured. A chart whose sections were not recorded is left as it is. Needs
matplotlib (the ``bench`` extra). Nothing is measured here: run it as often
as you like.

Usage: ``python benchmarks/charts.py [--results PATH] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

try:
    import matplotlib as mpl
except ImportError:  # pragma: no cover - says what to do instead
    sys.exit("benchmarks/charts.py needs matplotlib: pip install -e '.[bench]'")

mpl.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "latest.json"
OUT = ROOT / "docs" / "assets" / "charts"

# Reproducible SVGs: fixed element ids, no creation date, text kept as text.
mpl.rcParams.update(
    {
        "svg.hashsalt": "pooler_actors",
        "svg.fonttype": "none",
        "font.family": "sans-serif",
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "figure.facecolor": "white",
    }
)

TIMES = "\N{MULTIPLICATION SIGN}"
OURS = "#1f77b4"  # pooler_actors
PEER = "#ff7f0e"  # what a user would use instead
FLOOR = "#7f7f7f"  # the floor: no pool at all, or a bare pykka actor
UNPINNED_ALPHA = 0.45

Section = dict[str, Any]


class Results:
    """The recorded sections of one mode (``pinned`` or ``unpinned``)."""

    def __init__(self, runs: dict[str, dict[str, Section]], mode: str) -> None:
        self.mode = mode
        self.sections = runs.get(mode, {})
        self.values: dict[str, float] = {}
        for section in self.sections.values():
            for r in section["rows"]:
                if isinstance(r.get("value"), int | float):
                    self.values[r["name"]] = float(r["value"])

    def get(self, name: str) -> float | None:
        return self.values.get(name)

    def has(self, *sections: str) -> bool:
        return all(s in self.sections for s in sections)


def provenance(parts: Iterable[tuple[Results, Iterable[str]]]) -> str:
    """One line: when, with what, on what, pinned or not, for these sections."""
    days: set[str] = set()
    pythons: set[str] = set()
    machines: set[str] = set()
    commits: set[str] = set()
    modes: set[str] = set()
    for results, names in parts:
        for name in names:
            s = results.sections.get(name)
            if s is None:
                continue
            at = datetime.datetime.fromisoformat(s["measured_at"])
            days.add(at.strftime("%Y-%m-%d"))
            pythons.add(f"{s.get('implementation', 'Python')} {s['python']}")
            m = s["machine"]
            machines.add(f"{m['cpu_count']} CPUs ({m['cpu_model']}), {m['platform']}")
            commits.add(s.get("commit") or "?")
            modes.add(s["pinned"])
    return (
        f"measured {', '.join(sorted(days))} · {', '.join(sorted(pythons))} · "
        f"{'; '.join(sorted(machines))} · {', '.join(sorted(modes))} · "
        f"commit {', '.join(sorted(commits))} · make bench"
    )


def titled(fig: Figure, title: str, subtitle: str) -> None:
    fig.suptitle(title, x=0.01, ha="left", fontsize=11, fontweight="bold")
    fig.text(0.01, 0.935, subtitle, ha="left", va="top", fontsize=7, color="#555")


def save(fig: Figure, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="svg", metadata={"Date": None})
    plt.close(fig)
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


def _us(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:.3g} ms"
    return f"{value:.3g} µs"


def cost_per_operation(pinned: Results, unpinned: Results, out: Path) -> bool:
    """(a) µs per operation, log scale: the pool, its peers and the floors."""
    if not pinned.has("fast"):
        return False
    # (label, row, colour): a per-op time in µs, or ops/s turned into one.
    items: list[tuple[str, str, str]] = [
        ("lock + dict lookup (floor)", "fast.lock_dict", FLOOR),
        ("Pool.acquire(k): a hit", "fast.hit", OURS),
        ("with pool.lease(k): shared", "fast.shared_lease", OURS),
        ("with pool.lease(k): exclusive", "fast.exclusive_lease", OURS),
        ("generic-connection-pool checkout + return", "fast.gcp", PEER),
        ("ref.ask(Acquire(k)): a hit as a message", "hit.ref_ask_acquire", OURS),
        ("bare pykka ask round trip (floor)", "hit.pykka_ask", FLOOR),
        (f"8 threads {TIMES} 100 keys: lock + dict, per op",
         "fast.threads_8x100.lock_dict", FLOOR),
        (f"8 threads {TIMES} 100 keys: Pool.acquire, per op",
         "fast.threads_8x100.pool", OURS),
        ("contended: 8 threads' ref.ask(Acquire), p50",
         "contention.8x100.p50_us", OURS),
        ("contended: 8 threads' ref.ask(Acquire), p99",
         "contention.8x100.p99_us", OURS),
        ("churn: acquire a new key + release",
         "scale.executor.churn_acquire_new_release_us", OURS),
        ("bare pykka actor start + stop (floor)",
         "scale.executor.pykka_start_stop_us", FLOOR),
    ]  # fmt: skip

    def per_op_us(results: Results, name: str) -> float | None:
        value = results.get(name)
        if value is None or value <= 0:
            return None
        # Throughput rows (ops/s of all threads together): µs per operation.
        return 1e6 / value if name.startswith("fast.threads_") else value

    rows = [(label, name, colour) for label, name, colour in items]
    rows = [r for r in rows if per_op_us(pinned, r[1]) is not None]
    fig, ax = plt.subplots(figsize=(8.5, 0.36 * len(rows) + 1.6))
    height = 0.38
    ys = list(range(len(rows)))[::-1]
    for y, (_, name, colour) in zip(ys, rows, strict=True):
        value = per_op_us(pinned, name)
        assert value is not None
        ax.barh(y + height / 2, value, height, color=colour)
        ax.text(value * 1.08, y + height / 2, _us(value), va="center", fontsize=7)
        loose = per_op_us(unpinned, name)
        if loose is not None:
            ax.barh(y - height / 2, loose, height, color=colour, alpha=UNPINNED_ALPHA)
            ax.text(loose * 1.08, y - height / 2, _us(loose), va="center", fontsize=7)
    ax.set_yticks(ys, [label for label, _, _ in rows])
    ax.set_xscale("log")
    ax.set_xlabel("µs per operation (log scale; shorter is cheaper)")
    ax.grid(axis="y", visible=False)
    ax.set_xlim(right=ax.get_xlim()[1] * 3)
    handles = [
        Patch(color=OURS),
        Patch(color=PEER),
        Patch(color=FLOOR),
        Patch(color=OURS, alpha=UNPINNED_ALPHA),
    ]
    labels = ["pooler_actors", "peer", "floor", "unpinned (lighter, below)"]
    ax.legend(handles, labels, loc="upper right", fontsize=7, framealpha=0.9)
    sections = ["fast", "hit", "load", "scale"]
    titled(
        fig,
        "Cost per operation: pooler_actors against its peers and floors",
        provenance([(pinned, sections), (unpinned, sections)]),
    )
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    save(fig, out)
    return True


PG_WAYS = [
    ("pooler", "pooler_actors lease", OURS),
    ("psycopg_pool", "psycopg_pool, a pool per tenant", PEER),
    ("psycopg_pool_sem", "psycopg_pool + global semaphore", "#ffbb78"),
    ("dict_lock", "dict + lock cache", FLOOR),
]


def _shape_label(shape: str) -> str:
    """``24x8`` as "24 threads", then "x 8 tenants" on a second line."""
    threads, tenants = shape.split("x")
    plural = "" if threads == "1" else "s"
    return f"{threads} thread{plural}\n{TIMES} {tenants} tenants"


def postgresql(pinned: Results, out: Path) -> bool:
    """(b) PostgreSQL: ops/s and acquire+return p99 per shape and way."""
    if not pinned.has("pg"):
        return False
    rows = pinned.sections["pg"]["rows"]
    shapes: list[str] = []
    for r in rows:
        label = r["name"].split(".")[1]
        if r["name"].endswith(".ops") and label not in shapes:
            shapes.append(label)
    if not shapes:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    width = 0.8 / len(PG_WAYS)

    def bars(ax: Axes, metric: str, scale: float) -> None:
        for i, (way, label, colour) in enumerate(PG_WAYS):
            xs, heights = [], []
            for j, shape in enumerate(shapes):
                value = pinned.get(f"pg.{shape}.{way}.{metric}")
                if value is not None:
                    xs.append(j + (i - (len(PG_WAYS) - 1) / 2) * width)
                    heights.append(value * scale)
            ax.bar(xs, heights, width, color=colour, label=label)
        ax.set_xticks(
            range(len(shapes)),
            [_shape_label(shape) for shape in shapes],
        )
        ax.grid(axis="x", visible=False)

    bars(left, "ops", 1.0)
    left.set_ylabel("requests per second (higher is better)")
    left.set_title("Throughput, 8 connections at most", fontsize=9)
    bars(right, "overhead_p99", 1e-3)
    right.set_yscale("log")
    right.set_ylabel("acquire + return p99, ms (log; lower is better)")
    right.set_title("Tail latency of getting a connection", fontsize=9)
    fig.legend(
        *left.get_legend_handles_labels(),
        loc="lower center",
        ncol=len(PG_WAYS),
        fontsize=7,
        frameon=False,
    )
    titled(
        fig,
        "PostgreSQL: a lease per request (SELECT 1) against psycopg_pool",
        provenance([(pinned, ["pg"])]),
    )
    fig.tight_layout(rect=(0, 0.06, 1, 0.91))
    save(fig, out)
    return True


DESIGN_STYLE = {
    "executor": ("executor (in use)", OURS, "o"),
    "thread": ("thread per resource (for comparison)", PEER, "s"),
}


def scale(pinned: Results, out: Path) -> bool:
    """(c) How the cost grows with open keys, and with threads."""
    if not pinned.has("scale"):
        return False
    fig, (keys_ax, ask_ax, time_ax) = plt.subplots(
        1, 3, figsize=(10.5, 3.6), width_ratios=[1.2, 1, 1.2]
    )
    for design, (label, colour, marker) in DESIGN_STYLE.items():
        prefix = f"scale.{design}.hit_us@"
        points = sorted(
            (int(name[len(prefix) :]), value)
            for name, value in pinned.values.items()
            if name.startswith(prefix)
        )
        if points:
            keys_ax.plot(
                [k for k, _ in points],
                [v for _, v in points],
                marker=marker,
                color=colour,
                label=label,
            )
    keys_ax.set_xscale("log")
    keys_ax.set_ylim(bottom=0)
    keys_ax.set_xlabel("open keys (log)")
    keys_ax.set_ylabel("µs per hit, ref.ask(Acquire(k))")
    keys_ax.set_title("A hit as keys open", fontsize=9)
    keys_ax.legend(fontsize=7, loc="lower left")

    # A bare pykka ask at 10 open resources and at the most: idle threads
    # (one per resource in the thread design) slow every handoff down.
    big = max(
        (
            int(name.rsplit("@", 1)[1])
            for name in pinned.values
            if name.startswith("scale.executor.pykka_ask_us@")
        ),
        default=0,
    )
    names = list(DESIGN_STYLE)
    for i, design in enumerate(names):
        label, colour, _ = DESIGN_STYLE[design]
        for j, at in enumerate((10, big)):
            value = pinned.get(f"scale.{design}.pykka_ask_us@{at}")
            if value is None:
                continue
            x = j + (i - 0.5) * 0.38
            ask_ax.bar(x, value, 0.38, color=colour)
            ask_ax.text(x, value, f"{value:.3g}", ha="center", va="bottom", fontsize=7)
    ask_ax.set_xticks([0, 1], ["10 open", f"{big:,} open"])
    ask_ax.set_ylabel("µs per bare pykka ask, same process")
    ask_ax.set_title("Every handoff, beside idle resources", fontsize=9)
    ask_ax.grid(axis="x", visible=False)

    phases = [("open", "open_{big}_s"), ("health sweep", "sweep_{big}_s"),
              ("close", "close_{big}_s")]  # fmt: skip
    for i, design in enumerate(names):
        _, colour, _ = DESIGN_STYLE[design]
        for j, (_, pattern) in enumerate(phases):
            value = pinned.get(f"scale.{design}.{pattern.format(big=big)}")
            if value is None:
                continue
            x = j + (i - 0.5) * 0.38
            time_ax.bar(x, value, 0.38, color=colour)
            time_ax.text(x, value, f"{value:.2g}", ha="center", va="bottom", fontsize=7)
    time_ax.set_xticks(range(len(phases)), [p for p, _ in phases])
    time_ax.set_yscale("log")
    time_ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    time_ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    time_ax.yaxis.set_minor_formatter(NullFormatter())
    time_ax.set_ylabel(f"seconds for {big:,} resources (log)")
    time_ax.set_title(f"{big:,} resources: {big:,} threads or a few", fontsize=9)
    time_ax.grid(axis="x", visible=False)
    titled(
        fig,
        "Scale: cost as keys open, one resource actor design against the other",
        provenance([(pinned, ["scale"])]),
    )
    fig.tight_layout(rect=(0, 0, 1, 0.90))
    save(fig, out)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if not args.results.is_file():
        print(f"no results at {args.results}: run `make bench` first", file=sys.stderr)
        return 1
    runs = json.loads(args.results.read_text()).get("runs", {})
    pinned, unpinned = Results(runs, "pinned"), Results(runs, "unpinned")
    drawn = {
        "cost_per_operation": cost_per_operation(
            pinned, unpinned, args.out / "cost_per_operation.svg"
        ),
        "postgresql": postgresql(pinned, args.out / "postgresql.svg"),
        "scale": scale(pinned, args.out / "scale.svg"),
    }
    for name, done in drawn.items():
        if not done:
            print(f"{name}: its sections were not recorded; chart left as it is")
    return 0 if any(drawn.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
