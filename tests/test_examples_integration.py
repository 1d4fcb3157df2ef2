"""The integration examples run to completion and print what they promise."""

from __future__ import annotations

from pathlib import Path

from conftest import run_python

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(script: str) -> str:
    """Run one example in a fresh interpreter; return its stdout."""
    done = run_python(str(EXAMPLES / script))
    assert done.returncode == 0, done.stderr
    # Pool events go to stderr; stdout holds only the example's own lines.
    assert "pool.acquire" not in done.stdout
    assert "pool.acquire" in done.stderr
    return done.stdout


def test_supervision_tree_survives_and_restarts_its_pool() -> None:
    out = run_example("supervision_tree.py")
    assert "acme: SELECT 1 -> ok" in out
    failed = "failed: ZeroDivisionError('division by zero')"
    assert f"service: pool sessions-1 stopped ({failed})" in out
    assert "service: restarted the pool as sessions-2" in out
    assert "first pool alive: False" in out
    assert "acme: SELECT 2 -> ok" in out
    assert "service alive: True" in out
    assert "all actors stopped; 3 sessions, each closed once: True" in out


def test_asyncio_service_serves_every_tenant_through_a_capped_pool() -> None:
    out = run_example("asyncio_service.py")
    for tenant in ("acme", "globex", "initech", "umbrella", "hooli"):
        assert f"{tenant}: 6 orders" in out
    assert (
        "created 5 connections, at most 2 open; 3 tenants queued for a slot; "
        "open now: 0" in out
    )
    assert "heartbeat ticked while tenants waited: True" in out
    assert "after reopening: [6, 6]" in out
    assert "open tenants: ['acme', 'hooli']" in out
    assert "pool closed; 5 database files:" in out


def test_tcp_clients_evicts_dead_sockets_and_reconnects() -> None:
    out = run_example("tcp_clients.py")
    for name in ("billing", "search", "users"):
        assert f"{name}: hello from {name}" in out
    assert "health checks evicted 3 dead connections" in out
    assert (
        "acquire while the server is down: FactoryError (ConnectionRefusedError)"
        in (out)
    )
    assert "billing: hello again" in out
    assert "reconnected with a new socket: True" in out
    assert out.rstrip().endswith("done")


def test_fleet_example_keeps_four_workers_under_the_global_limit(
    valkey_binary: str,  # skips where no Valkey server binary is installed
) -> None:
    done = run_python(str(EXAMPLES / "fleet.py"), timeout=50)
    assert done.returncode == 0, done.stdout + done.stderr
    out = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    limit = int(out["global limit"])
    high = int(out["global high-water mark"])
    assert limit == 5
    assert out["workers"] == "4, local caps add up to 16"
    # Measured by the connections themselves, on the server.
    assert 1 <= high <= limit
    assert out["open at the end"] == "0; global slots held at the end: 0"
    assert out["worker exit codes"] == "[0, 0, 0, 0]"
    for n in range(4):
        assert out[f"worker-{n}"].startswith("48 requests, ")
        assert out[f"worker-{n}"].endswith(", 0 failed")
