"""Expose pools' [Stats][pooler_actors.Stats] to Prometheus.

Needs the optional extra: `pip install 'pooler_actors[prometheus]'`. It is
not imported by `pooler_actors` itself; import this module explicitly:

```py
from prometheus_client import start_http_server
from pooler_actors.prometheus import PoolCollector

PoolCollector(pool)  # registers with prometheus_client's default registry
start_http_server(9100)
```

Every stats field becomes one metric family, `pooler_actors_<field>`,
labelled by pool name: counters as counters (exposed with Prometheus'
`_total` suffix), gauges as gauges, and the two durations in seconds
(`pooler_actors_wait_duration_seconds_total`,
`pooler_actors_max_wait_seconds`). Stats are asked of each pool at scrape
time; a closed pool contributes no samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pykka
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

from pooler_actors.errors import PoolClosedError
from pooler_actors.messages import GetStats
from pooler_actors.stats import COUNTERS, GAUGES, HELP, Stats

__all__ = ["HELP", "PoolCollector", "metric_name"]


_SECONDS = frozenset({"wait_duration", "max_wait"})


def metric_name(field: str, namespace: str = "pooler_actors") -> str:
    """The metric family name of a [Stats][pooler_actors.Stats] field.

    Counters get Prometheus' `_total` suffix on top of it.
    """
    suffix = "_seconds" if field in _SECONDS else ""
    return f"{namespace}_{field}{suffix}"


class PoolCollector(Collector):
    """A `prometheus_client` collector of one or more pools' stats.

    Args:
        *pools: each a `Pool`, an `AsyncPool` or a pool's `ActorRef`;
            its samples carry its name in the `pool` label. Collect several
            pools with one collector: each metric family appears once.
        registry: where to register; `prometheus_client`'s default registry
            unless given, `None` for no registration.
        namespace: the prefix of every metric name.
        timeout: seconds to wait for one pool's stats during a scrape.
    """

    def __init__(
        self,
        *pools: Any,
        registry: CollectorRegistry | None = REGISTRY,
        namespace: str = "pooler_actors",
        timeout: float = 5.0,
    ) -> None:
        if not pools:
            raise TypeError("PoolCollector needs at least one pool")
        self._refs: list[pykka.ActorRef[Any]] = [_ref_of(pool) for pool in pools]
        self._names: list[str] = [_name_of(pool) for pool in pools]
        self._namespace = namespace
        self._timeout = timeout
        if registry is not None:
            registry.register(self)

    def describe(self) -> Iterable[Metric]:
        """The metric families, without samples (the registry checks names)."""
        return list(self._families().values())

    def collect(self) -> Iterator[Metric]:
        """Ask each pool for its stats and yield one family per stats field."""
        families = self._families()
        for name, ref in zip(self._names, self._refs, strict=True):
            stats = self._stats(ref)
            if stats is None:
                continue
            values = stats.as_dict()
            for field, family in families.items():
                family.add_metric([name], float(values[field]))
        yield from families.values()

    def _families(self) -> dict[str, CounterMetricFamily | GaugeMetricFamily]:
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for field in GAUGES:
            families[field] = GaugeMetricFamily(
                metric_name(field, self._namespace), HELP[field], labels=["pool"]
            )
        for field in COUNTERS:
            families[field] = CounterMetricFamily(
                metric_name(field, self._namespace), HELP[field], labels=["pool"]
            )
        return families

    def _stats(self, ref: pykka.ActorRef[Any]) -> Stats | None:
        try:
            stats = ref.ask(GetStats(), timeout=self._timeout)
        except (PoolClosedError, pykka.ActorDeadError, pykka.Timeout):
            return None
        return stats if isinstance(stats, Stats) else None


def _ref_of(pool: Any) -> pykka.ActorRef[Any]:
    if isinstance(pool, pykka.ActorRef):
        return pool
    ref = getattr(pool, "actor_ref", None)
    if not isinstance(ref, pykka.ActorRef):
        raise TypeError(f"expected a Pool, AsyncPool or pool ActorRef, got {pool!r}")
    return ref


def _name_of(pool: Any) -> str:
    name = getattr(_ref_of(pool), "pool_name", None)  # set on every PoolRef
    if not isinstance(name, str):
        raise TypeError(f"not the ref of a pool: {pool!r}")
    return name
