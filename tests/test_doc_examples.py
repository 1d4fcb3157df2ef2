"""Every Python block of README.md and docs/ runs as written, or says it is a
fragment; the runnable ones are type-checked with `mypy --strict`.
A block that goes on with the program above it follows the HTML comment
`<!-- continues the block above -->`.

The marker is the fence's language (see docs/contributing.md): a block fenced
as ``python`` is a whole program; a fragment that cannot run on its own (it
needs a database, a Redis server, names defined elsewhere) is fenced as
``py``. README.md's blocks are one program, in order (test_readme.py runs
it); every other page's blocks are whole programs each. The guide pages'
programs are run by test_docs_snippets.py; this file runs the rest (the
reference pages), each in a fresh interpreter with a timeout, and
type-checks all of them, README's program included, in one mypy run.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_python
from test_docs_snippets import PAGES as GUIDE_PAGES

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.DOTALL | re.MULTILINE)
# Put just before a block that goes on with the program of the block above.
_CONTINUES = "<!-- continues the block above -->"
_LANGUAGES = {"python", "py", "sh", "console", "text", "json", "mermaid", "toml"}


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def programs() -> list[tuple[str, str]]:
    """Each page's runnable programs: README's blocks joined, one per block
    elsewhere (a block after `_CONTINUES` joined to the one before)."""
    found = []
    for path in pages():
        name = path.relative_to(ROOT).as_posix()
        text = path.read_text()
        codes: list[str] = []
        for m in _FENCE.finditer(text):
            if m.group(1) != "python":
                continue
            if codes and text[: m.start()].rstrip().endswith(_CONTINUES):
                codes[-1] += "\n\n" + m.group(2)  # one program in two blocks
            else:
                codes.append(m.group(2))
        if name == "README.md":
            found.append((name, "\n\n".join(codes)))
        else:
            found += [(f"{name}#{n}", code) for n, code in enumerate(codes, start=1)]
    return found


RUNNABLE = programs()
NOT_RUN_ELSEWHERE = [
    (where, code)
    for where, code in RUNNABLE
    if where != "README.md"
    and where.split("#")[0].removeprefix("docs/") not in GUIDE_PAGES
]


def test_every_fence_says_its_language() -> None:
    """A bare ``` fence (or an unknown language) is neither runnable nor a
    marked fragment: each block names one of the known kinds."""
    bad = []
    for path in pages():
        for match in _FENCE.finditer(path.read_text()):
            if match.group(1) not in _LANGUAGES:
                bad.append(f"{path.relative_to(ROOT)}: ```{match.group(1)}")
    assert bad == []


def test_there_are_runnable_blocks_outside_the_guides() -> None:
    assert NOT_RUN_ELSEWHERE


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("where", "code"), NOT_RUN_ELSEWHERE, ids=[w for w, _ in NOT_RUN_ELSEWHERE]
)
def test_block_runs(where: str, code: str, tmp_path: Path) -> None:
    # Any free port for a metrics endpoint (other runs may hold 9100).
    code = code.replace("start_http_server(9100)", "start_http_server(0)")
    done = run_python("-c", code, cwd=tmp_path, timeout=90)
    assert done.returncode == 0, f"{where}\n{done.stdout}\n{done.stderr}"


@pytest.mark.timeout(300)
def test_runnable_blocks_pass_mypy_strict(tmp_path: Path) -> None:
    files = {}
    for n, (where, code) in enumerate(RUNNABLE):
        path = tmp_path / f"block_{n:03d}.py"
        path.write_text(code)
        files[path.name] = where
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--scripts-are-modules",
            *sorted(files),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        # mypy does not follow the editable install's import hook.
        env={**os.environ, "MYPYPATH": str(ROOT)},
        timeout=280,
        check=False,
    )
    report = done.stdout
    for name, where in files.items():
        report = report.replace(name, f"{name} ({where})")
    assert done.returncode == 0, report


def test_every_name_in_the_api_reference_is_importable_from_where_it_says() -> None:
    names = re.findall(r"^::: ([\w.]+)$", (DOCS / "api.md").read_text(), re.M)
    assert len(names) > 20
    missing = []
    for name in names:
        module, _, attr = name.rpartition(".")
        try:
            mod = importlib.import_module(name)
        except ImportError:
            mod = importlib.import_module(module)
            exported = module != "pooler_actors" or attr in mod.__all__
            if not hasattr(mod, attr) or not exported:
                missing.append(name)
        else:
            assert mod.__name__ == name
    assert missing == []
