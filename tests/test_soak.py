"""The soak's short form: a few seconds of faults and 32 clients, all figures clean."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

SOAK = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"


def _load_soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak", SOAK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(120)  # a hang guard
def test_short_soak_runs_clean(capsys: pytest.CaptureFixture[str]) -> None:
    soak = _load_soak()

    status = soak.main(["--seconds", "3", "--seed", "7"])

    out = capsys.readouterr().out
    assert status == 0, out
    figures = dict(
        line.strip().split("  ", 1) for line in out.splitlines()[1:] if "  " in line
    )
    figures = {k.strip(): v.strip() for k, v in figures.items()}
    for name in soak.MUST_BE_ZERO:
        assert figures[name] == "0", out
    assert int(figures["operations done"]) > 0, out
    assert int(figures["faults injected"]) > 0, out
    assert out.rstrip().endswith("OK")
