"""The Prometheus collector, read back through a real registry's text output."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import run_python
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pooler_actors import AcquireTimeout, AsyncPool, Pool
from pooler_actors.prometheus import HELP, PoolCollector, metric_name
from pooler_actors.stats import COUNTERS, GAUGES


class Conn:
    def ping(self) -> None:
        pass

    def close(self) -> None:
        pass


def scrape(registry: CollectorRegistry) -> dict[str, Any]:
    """family name -> family, parsed from the registry's exposition text."""
    text = generate_latest(registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(registry: CollectorRegistry, name: str, pool: str) -> float | None:
    return registry.get_sample_value(name, {"pool": pool})


def test_counters_and_gauges_labelled_by_pool_name() -> None:
    registry = CollectorRegistry()
    with Pool(
        Conn, name="web", max_open_resources=1, health_check_interval=None
    ) as pool:
        PoolCollector(pool, registry=registry)
        pool.acquire("a")
        pool.acquire("a")
        with pytest.raises(AcquireTimeout):
            pool.acquire("b", timeout=0.01)
        families = scrape(registry)
        assert sample(registry, "pooler_actors_acquires_total", "web") == 3
        assert sample(registry, "pooler_actors_hits_total", "web") == 1
        assert sample(registry, "pooler_actors_created_total", "web") == 1
        assert sample(registry, "pooler_actors_timeouts_total", "web") == 1
        assert sample(registry, "pooler_actors_waits_total", "web") == 1
        assert sample(registry, "pooler_actors_max_open_resources", "web") == 1
        assert sample(registry, "pooler_actors_open_resources", "web") == 1
        assert sample(registry, "pooler_actors_open", "web") == 1
        assert sample(registry, "pooler_actors_wait_count", "web") == 0
        wait = sample(registry, "pooler_actors_wait_duration_seconds_total", "web")
        assert wait is not None and wait >= 0.01
        stats = pool.stats()
    assert families["pooler_actors_hits"].type == "counter"
    assert families["pooler_actors_wait_duration_seconds"].type == "counter"
    assert families["pooler_actors_open_resources"].type == "gauge"
    assert families["pooler_actors_max_wait_seconds"].type == "gauge"
    assert families["pooler_actors_hits"].documentation == HELP["hits"]
    assert families["pooler_actors_max_wait_seconds"].samples[0].value == stats.max_wait
    assert stats.max_wait > 0


def test_every_stats_field_is_exported_with_its_type() -> None:
    registry = CollectorRegistry()
    with Pool(Conn, name="all", health_check_interval=None) as pool:
        PoolCollector(pool, registry=registry)
        families = scrape(registry)
        stats = pool.stats().as_dict()
    assert set(HELP) == set(COUNTERS) | set(GAUGES)
    for field in GAUGES:
        family = families[metric_name(field)]
        assert family.type == "gauge", field
        assert [s.labels for s in family.samples] == [{"pool": "all"}], field
        assert family.samples[0].value == stats[field], field
    for field in COUNTERS:
        family = families[metric_name(field)]
        assert family.type == "counter", field
        (total,) = [s for s in family.samples if s.name.endswith("_total")]
        assert total.labels == {"pool": "all"}, field
        assert total.value == stats[field], field


def test_one_collector_for_several_pools_and_refs() -> None:
    registry = CollectorRegistry()
    with (
        Pool(Conn, name="a", health_check_interval=None) as first,
        Pool(Conn, name="b", health_check_interval=None) as second,
    ):
        PoolCollector(first, second.actor_ref, registry=registry)
        first.acquire("k")
        second.acquire("k")
        second.acquire("k")
        text = generate_latest(registry).decode()
        assert sample(registry, "pooler_actors_hits_total", "a") == 0
        assert sample(registry, "pooler_actors_hits_total", "b") == 1
    assert text.count("# TYPE pooler_actors_hits_total counter") == 1


def test_a_second_collector_with_the_same_names_is_refused() -> None:
    registry = CollectorRegistry()
    with (
        Pool(Conn, name="a", health_check_interval=None) as first,
        Pool(Conn, name="b", health_check_interval=None) as second,
    ):
        PoolCollector(first, registry=registry)
        with pytest.raises(ValueError, match="Duplicated timeseries"):
            PoolCollector(second, registry=registry)
        PoolCollector(second, registry=registry, namespace="other")
        assert sample(registry, "other_acquires_total", "b") == 0


def test_a_closed_pool_contributes_no_samples() -> None:
    registry = CollectorRegistry()
    pool: Pool[str, Conn] = Pool(Conn, name="gone", health_check_interval=None)
    PoolCollector(pool, registry=registry)
    assert sample(registry, "pooler_actors_acquires_total", "gone") == 0
    pool.close()
    assert sample(registry, "pooler_actors_acquires_total", "gone") is None
    assert (
        "# TYPE pooler_actors_acquires_total counter"
        in generate_latest(registry).decode()
    )


def test_an_async_pool_is_collected() -> None:
    registry = CollectorRegistry()

    async def main() -> float | None:
        async with AsyncPool(Conn, name="aio", health_check_interval=None) as pool:
            PoolCollector(pool, registry=registry)
            await pool.acquire("k")
            return await asyncio.to_thread(
                sample, registry, "pooler_actors_created_total", "aio"
            )

    assert asyncio.run(main()) == 1


def test_default_registry_and_unregistered_use() -> None:
    with Pool(Conn, name="default-reg", health_check_interval=None) as pool:
        collector = PoolCollector(pool)
        try:
            assert sample(REGISTRY, "pooler_actors_open_resources", "default-reg") == 0
        finally:
            REGISTRY.unregister(collector)
        loose = PoolCollector(pool, registry=None)
        (family,) = [m for m in loose.collect() if m.name == "pooler_actors_acquires"]
        assert [s.value for s in family.samples if s.name.endswith("_total")] == [0]


def test_rejects_what_is_not_a_pool() -> None:
    with pytest.raises(TypeError):
        PoolCollector(object(), registry=None)
    with pytest.raises(TypeError):
        PoolCollector(registry=None)


def test_importing_the_package_does_not_need_prometheus_client() -> None:
    code = "import sys, pooler_actors; assert 'prometheus_client' not in sys.modules"
    done = run_python("-c", code)
    assert done.returncode == 0, done.stderr
