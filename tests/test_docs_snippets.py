"""Every ```python block of the user guide pages is a complete program that runs.

Convention in those pages: a block fenced as ``python`` is a whole runnable
program (checked here, each in a fresh interpreter); a fragment that cannot
run on its own is fenced as ``py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import run_python

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = [
    "index.md",
    "getting-started.md",
    "concepts.md",
    "leases.md",
    "from-go.md",
    "guides/tenant-databases.md",
    "guides/asyncio.md",
    "guides/actor-applications.md",
    "guides/health-checks.md",
]
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def snippets() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        path = DOCS / page
        if not path.exists():
            continue
        for n, match in enumerate(_BLOCK.finditer(path.read_text()), start=1):
            found.append((f"{page}#{n}", match.group(1)))
    return found


SNIPPETS = snippets()


def test_the_guide_pages_have_runnable_snippets() -> None:
    assert len(SNIPPETS) >= 8


@pytest.mark.parametrize(("where", "code"), SNIPPETS, ids=[w for w, _ in SNIPPETS])
def test_snippet_runs(where: str, code: str, tmp_path: Path) -> None:
    done = run_python("-c", code, cwd=tmp_path)
    assert done.returncode == 0, f"{where}\n{done.stdout}\n{done.stderr}"
    # No snippet configures logging, and the pool is silent by default.
    assert done.stderr == "", f"{where}\n{done.stderr}"
