"""The Python snippets in README.md run, and print what their comments say."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import run_python

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_snippets_print_what_they_promise(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2
    source = "\n\n".join(blocks)
    # Each `print(...)  # shown` line promises one line of output.
    promised = re.findall(r"^\s*print\(.*\)  # (.+)$", source, re.M)
    assert promised
    script = tmp_path / "readme_snippets.py"
    script.write_text(source)
    done = run_python(str(script), timeout=45)
    assert done.returncode == 0, done.stderr
    # Logging left unconfigured, the pool prints nothing of its own.
    assert done.stdout.splitlines() == promised
    assert done.stderr == ""
