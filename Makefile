# Every target creates .venv on first use; nothing else needs installing.
# .venv is installed from the committed lock (requirements/dev.lock: every
# package of the `dev`, `bench` and `docs-check` extras at an exact version, with hashes),
# so every machine gets the same one; plain pip installs it. `make lock`
# refreshes the lock; `make test-latest` meets new releases on purpose.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements/dev.lock
PIP := -m pip install -q --disable-pip-version-check

# `make lock`'s tool, in a venv of its own, installed from its own lock.
UV_VENV := .venv-uv
UV := $(UV_VENV)/bin/uv
UV_STAMP := $(UV_VENV)/.installed
COMPILE := $(UV) pip compile --no-config --quiet --universal --python-version 3.11 \
	--generate-hashes --upgrade --refresh --custom-compile-command "make lock"

# `make test-latest`'s throwaway venv: the newest releases pyproject.toml allows.
LATEST := .venv-latest

.PHONY: demo test lint pytest docs bench soak sim clean lock test-latest

# The venv is built anew whenever the lock or pyproject.toml changes: a package
# the lock dropped does not linger (tests/test_lock.py checks the venv against
# the lock both ways). The bundled pip installs the lock: no unpinned upgrade.
.venv/.installed: pyproject.toml $(LOCK)
	rm -rf .venv
	$(PYTHON) -m venv .venv
	.venv/bin/python $(PIP) --require-hashes -r $(LOCK)
	.venv/bin/python $(PIP) --no-deps --no-build-isolation -e .
	touch $@

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
	$(PY) benchmarks/run.py
	@echo
	@echo "# The hit path again, unpinned (threads on both CPUs, as applications run):"
	$(PY) benchmarks/run.py --no-pin --only fast hit
	$(MAKE) --no-print-directory charts

.PHONY: charts docs-check

# The charts of docs/performance.md, drawn again from the results `make bench`
# recorded (benchmarks/results/latest.json) into docs/assets/charts/.
charts: $(STAMP)
	$(PY) benchmarks/charts.py

# The built site in headless Chromium (the system's: apt-get install chromium;
# it installs none and says so when it is missing; websocket-client comes
# from the lock): every page opened, failing on a
# console error, a missing image or resource, or a Mermaid diagram left
# undrawn; a screenshot of each page in site-shots/.
docs-check: docs
	$(PY) tools/docs_check.py --site site --shots site-shots

# Deterministic simulation of the core and its counter (tests/simulation.py):
# over a million steps across seeds, every invariant checked after each;
# SEED=n replays one; STRICT=1 excuses no known library bug.
sim: $(STAMP)
	$(PY) tests/simulation.py $(if $(SEED),--seed $(SEED),) $(if $(STRICT),--strict,)

soak: $(STAMP)
	$(PY) benchmarks/soak.py $(if $(SECONDS),--seconds $(SECONDS),)

# The lock, refreshed to the newest versions the ranges in pyproject.toml
# allow (and uv's own lock to the version requirements/tools.in pins). The
# same input gives the same file: one universal resolution (any platform,
# Python 3.11 and newer), every file's hash, no paths or dates in it.
$(UV_STAMP): requirements/tools.lock
	rm -rf $(UV_VENV)
	$(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/python $(PIP) --require-hashes -r requirements/tools.lock
	touch $@

# A lock file is replaced only when its text changed: a venv is rebuilt
# when its lock is newer than its stamp.
lock: $(UV_STAMP)
	$(COMPILE) requirements/tools.in -o $(UV_VENV)/tools.lock
	$(COMPILE) pyproject.toml --extra dev --extra bench --extra docs-check -o $(UV_VENV)/dev.lock
	for f in tools dev; do cmp -s $(UV_VENV)/$$f.lock requirements/$$f.lock \
		|| cp $(UV_VENV)/$$f.lock requirements/$$f.lock; done

# The same lint, pytest and docs in a throwaway venv built from the ranges in
# pyproject.toml alone (no lock): the newest releases, met on purpose. Not part
# of `make test`; tests/test_lock.py is skipped there (POOLER_UNLOCKED=1).
$(LATEST)/.installed:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python $(PIP) --upgrade pip
	$(LATEST)/bin/python $(PIP) -e '.[dev,bench,docs-check]'
	touch $@

test-latest:
	rm -f $(LATEST)/.installed
	POOLER_UNLOCKED=1 MYPY_CACHE_DIR=$(LATEST)/.mypy_cache \
		$(MAKE) --no-print-directory VENV=$(LATEST) lint pytest docs

clean:
	rm -rf $(VENV) $(UV_VENV) $(LATEST) .mypy_cache .pytest_cache .ruff_cache site
