# Every target creates .venv on first use; nothing else needs installing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint pytest docs bench soak sim clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# VERBOSE=1 adds the pool's event stream (structlog, on stderr).
demo: $(STAMP)
	$(PY) examples/tenant_demo.py $(if $(VERBOSE),--verbose,)

# mypy --strict twice: the library, then the user's view of it (examples/ and
# the user-style code of tests/typing/).
lint: $(STAMP)
	$(PY) -m ruff check pooler_actors tests examples benchmarks tools
	$(PY) -m ruff format --check pooler_actors tests examples benchmarks tools
	$(PY) -m mypy --strict pooler_actors tools
	$(PY) -m mypy --strict examples tests/typing

pytest: $(STAMP)
	$(PY) -m pytest

test: lint pytest docs

# The documentation site, built into site/; --strict fails on any warning.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(PY) -c 'import generic_connection_pool' 2>/dev/null || $(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/run.py
	@echo
	@echo "# The hit path again, unpinned (threads on both CPUs, as applications run):"
	$(PY) benchmarks/run.py --no-pin --only fast hit

# Deterministic simulation of the core and its counter (tests/simulation.py):
# over a million steps across seeds, every invariant checked after each;
# SEED=n replays one; STRICT=1 excuses no known library bug.
sim: $(STAMP)
	$(PY) tests/simulation.py $(if $(SEED),--seed $(SEED),) $(if $(STRICT),--strict,)

soak: $(STAMP)
	$(PY) benchmarks/soak.py $(if $(SECONDS),--seconds $(SECONDS),)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache site
