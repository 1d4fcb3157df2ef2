"""The reference pages name everything the package has.

docs/observability.md has a catalogue row for every event the package emits
and a line for every `Stats` field; docs/api.md documents every public name.
A new event, stats field or export without its documentation fails here.
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pooler_actors
from pooler_actors.stats import Stats

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pooler_actors"
DOCS = ROOT / "docs"

# An event name as the package writes it: a string literal "pool.<a>.<b>".
_EVENT = re.compile(r"""["'](pool\.[a-z_]+(?:\.[a-z_]+)*)["']""")


def emitted_events() -> set[str]:
    found: set[str] = set()
    for path in PACKAGE.glob("*.py"):
        found |= set(_EVENT.findall(path.read_text()))
    return found


def test_the_package_emits_events_we_can_find() -> None:
    events = emitted_events()
    # A guard for the pattern itself: these exist in the core and the shell.
    assert {"pool.started", "pool.acquire.hit", "pool.failed"} <= events
    assert len(events) > 30


def test_every_event_has_a_catalogue_row() -> None:
    page = (DOCS / "observability.md").read_text()
    missing = sorted(e for e in emitted_events() if f"| `{e}` |" not in page)
    assert missing == []


def test_every_stats_field_is_described() -> None:
    page = (DOCS / "observability.md").read_text()
    missing = [f.name for f in fields(Stats) if f"- `{f.name}` —" not in page]
    assert missing == []


def test_every_public_name_is_on_the_api_page() -> None:
    page = (DOCS / "api.md").read_text()
    missing = [
        name
        for name in pooler_actors.__all__
        if f"::: pooler_actors.{name}\n" not in page
    ]
    assert missing == []
