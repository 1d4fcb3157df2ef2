"""Types as a user sees them: `mypy --strict` accepts the README's code and
flags a wrong key; the user-style file tests/typing/user_code.py runs.

`make lint` type-checks tests/typing/ and examples/; here one mypy run (with
its cache in a temporary directory) checks code that must fail to type-check.
"""

from __future__ import annotations

import re
from pathlib import Path

from conftest import run_python

ROOT = Path(__file__).resolve().parent.parent

# Each `# E: code` marks a line mypy must flag with that error code; no other
# line of the file may be flagged.
WRONG = """\
from pooler_actors import AsyncPool, Pool


class Conn:
    def ping(self) -> None:
        pass

    def close(self) -> None:
        pass


def connect(tenant: str) -> Conn:
    return Conn()


def connect_two(tenant: str, region: str) -> Conn:
    return Conn()


with Pool(connect) as pool:
    pool.acquire("fine")
    pool.acquire(12345)  # E: arg-type
    pool.release(b"tenant")  # E: arg-type
    pool.contains(("a", 1))  # E: arg-type
    with pool.lease(1.5) as held:  # E: arg-type
        pass
    number: int = pool.acquire("a")  # E: assignment
    pool.prewarm([1, 2])  # E: list-item

Pool(connect_two)  # E: arg-type


async def aconnect(db: int) -> Conn:
    return Conn()


async def main() -> None:
    async with AsyncPool(connect) as apool:
        await apool.acquire(12345)  # E: arg-type
    async with AsyncPool(aconnect) as native:
        await native.acquire("zero")  # E: arg-type
        text: str = await native.acquire(0)  # E: assignment
"""


def mypy_errors(output: str, path: Path) -> set[tuple[int, str]]:
    """`(line, code)` of each error mypy reported in `path`."""
    found = set()
    for line in output.splitlines():
        match = re.match(rf"{re.escape(str(path))}:(\d+): error: .*\[([\w-]+)\]$", line)
        if match:
            found.add((int(match.group(1)), match.group(2)))
    return found


def expected_errors(source: str) -> set[tuple[int, str]]:
    return {
        (n, match.group(1))
        for n, line in enumerate(source.splitlines(), start=1)
        if (match := re.search(r"# E: ([\w-]+)$", line))
    }


def test_mypy_strict_accepts_the_readme_and_flags_wrong_keys(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks, "the README has no python blocks"
    readme = tmp_path / "readme_code.py"
    readme.write_text("\n\n".join(blocks))
    wrong = tmp_path / "wrong_code.py"
    wrong.write_text(WRONG)
    # cwd=ROOT: the package is found as the user's checkout would be (mypy
    # cannot follow setuptools' editable-install hooks), with its py.typed.
    done = run_python(
        "-m",
        "mypy",
        "--strict",
        "--no-color-output",
        "--cache-dir",
        str(tmp_path / "mypy_cache"),
        str(readme),
        str(wrong),
        cwd=ROOT,
        timeout=180,
    )
    assert "error: Cannot find implementation" not in done.stdout, done.stdout
    # The README's code, first example included, passes the user's --strict.
    assert mypy_errors(done.stdout, readme) == set(), done.stdout
    # Every marked line is flagged with its code, and nothing else is.
    assert mypy_errors(done.stdout, wrong) == expected_errors(WRONG), done.stdout
    assert done.returncode == 1


def test_the_user_style_code_runs() -> None:
    done = run_python(str(ROOT / "tests" / "typing" / "user_code.py"), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
