"""The Grafana dashboard queries only metrics the Prometheus collector exports.

The names are taken from the collector itself (a live pool, scraped through a
registry), not from a list: renaming a stats field or a metric breaks this
test until the dashboard (docs/assets/grafana/pooler_actors.json) follows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from pooler_actors import Pool
from pooler_actors.prometheus import PoolCollector

DASHBOARD = (
    Path(__file__).resolve().parent.parent
    / "docs"
    / "assets"
    / "grafana"
    / "pooler_actors.json"
)

# What in a PromQL expression is not a metric name: strings (label values),
# label matchers, range and subquery brackets, the label lists of grouping
# and vector matching, and function calls; then keywords and numbers.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)"
)
_IDENT = re.compile(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*")  # not 5m, 1e3
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})


class Conn:
    def ping(self) -> None:
        pass

    def close(self) -> None:
        pass


def metric_names(expr: str) -> set[str]:
    """Every metric name a PromQL expression selects."""
    text = _STRING.sub(" ", expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("("):  # a function or an aggregation
            continue
        if match.group().lower() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def exported() -> tuple[set[str], set[str]]:
    """The sample names and label names a pool's collector exports."""
    registry = CollectorRegistry()
    with Pool(Conn, name="dash", health_check_interval=None) as pool:
        PoolCollector(pool, registry=registry)
        pool.acquire("k")
        samples = [s for family in registry.collect() for s in family.samples]
    return {s.name for s in samples}, {label for s in samples for label in s.labels}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]
            text = query["query"] if isinstance(query, dict) else query
            # label_values(metric, label): the metric is what must exist.
            inner = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", text.strip())
            yield f"variable {var['name']!r}", inner.group(1) if inner else text


def unknown_metrics(dashboard: dict[str, Any], known: set[str]) -> list[str]:
    return [
        f"{where}: {name}"
        for where, expr in queries(dashboard)
        for name in sorted(metric_names(expr) - known)
    ]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def test_every_metric_the_dashboard_queries_is_exported(
    dashboard: dict[str, Any],
) -> None:
    known, labels = exported()
    assert "pool" in labels
    graphs = [p for p in panels(dashboard) if p["type"] != "row"]
    assert graphs, "no panels"
    for panel in graphs:
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
    used = {name for _, expr in queries(dashboard) for name in metric_names(expr)}
    assert len(used) >= 10, used
    assert unknown_metrics(dashboard, known) == []
    # A doctored query is caught: a misspelt name, and a counter's family
    # name without the `_total` Prometheus exposes.
    doctored = json.loads(json.dumps(dashboard))
    first = next(p for p in panels(doctored) if p.get("targets"))
    first["targets"][0]["expr"] = (
        'sum by (pool) (pooler_actors_open_resourcez{pool=~"$pool"})'
        " / on (pool) rate(pooler_actors_hits[5m])"
    )
    assert unknown_metrics(doctored, known) == [
        f"panel {first['title']!r} A: pooler_actors_hits",
        f"panel {first['title']!r} A: pooler_actors_open_resourcez",
    ]


def test_the_names_of_an_expression_are_found() -> None:
    expr = (
        'sum by (pool) (rate(a_total{pool=~"$pool", x="b_total"}[$__rate_interval]))'
        " / on (pool) group_left (le) max without (job) (c_seconds offset 5m) > bool 0"
    )
    assert metric_names(expr) == {"a_total", "c_seconds"}


def test_panels_use_the_datasource_and_pool_variables(
    dashboard: dict[str, Any],
) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert variables["pool"]["type"] == "query"
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        for target in panel["targets"]:
            assert '{pool=~"$pool"}' in target["expr"], (panel["title"], target)
