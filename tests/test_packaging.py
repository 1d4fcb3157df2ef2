"""The package builds, installs from its wheel, and ships what users need.

The sdist is built from a clean copy of the source tree (so nothing in it
comes from the developer's files around it) and the wheel from that sdist, as
`python -m build` does; `--no-isolation` uses this environment's setuptools
and `build` (the `dev` extra), so the test needs no download. The wheel is
then installed into a new virtual environment (`--no-deps`; pykka and
structlog come from this environment through a `.pth` file) and used there.
"""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv*", ".cache", "site", "build", "dist", "*.egg-info", "__pycache__",
    ".*_cache", ".hypothesis",
)  # fmt: skip


class Built:
    """The sdist and wheel of one build, and what the build printed."""

    def __init__(self, folder: Path, output: str) -> None:
        (self.sdist,) = folder.glob("*.tar.gz")
        (self.wheel,) = folder.glob("*.whl")
        self.output = output

    def sdist_names(self) -> set[str]:
        with tarfile.open(self.sdist) as archive:
            # Drop the leading "pooler_actors-<version>/".
            return {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}

    def wheel_names(self) -> set[str]:
        with zipfile.ZipFile(self.wheel) as archive:
            return set(archive.namelist())

    def metadata(self) -> email.message.Message:
        with zipfile.ZipFile(self.wheel) as archive:
            (name,) = [
                n for n in archive.namelist() if n.endswith(".dist-info/METADATA")
            ]
            return email.message_from_bytes(archive.read(name))


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,  # a hang guard, not a timing assertion
        check=False,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    source = tmp_path_factory.mktemp("source") / "pooler_actors"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    out = tmp_path_factory.mktemp("dist")
    done = run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, source)
    return Built(out, done.stdout + done.stderr)


def test_the_build_says_nothing_about_the_license(built: Built) -> None:
    complaints = [
        line
        for line in built.output.splitlines()
        if re.search(r"warn|deprecat", line, re.I) and re.search(r"licen", line, re.I)
    ]
    assert complaints == []
    assert "adding license file 'LICENSE'" in built.output


def test_the_sdist_carries_the_tests_with_their_helpers_and_the_docs(
    built: Built,
) -> None:
    names = built.sdist_names()
    helpers = {"tests/conftest.py", "tests/resources.py", "tests/faults.py"}
    assert helpers <= names
    tests = {f"tests/{p.name}" for p in (ROOT / "tests").glob("test_*.py")}
    assert tests <= names, sorted(tests - names)
    docs = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert docs <= names, sorted(docs - names)
    for name in ("LICENSE", "CHANGELOG.md", "README.md", "mkdocs.yml", "Makefile"):
        assert name in names
    assert "tools/mkdocs_hooks.py" in names  # mkdocs.yml's hook
    assert "requirements/dev.lock" in names  # the Makefile's venv
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_the_wheel_is_typed_and_licensed(built: Built) -> None:
    names = built.wheel_names()
    assert "pooler_actors/py.typed" in names
    assert "pooler_actors-0.1.0.dist-info/licenses/LICENSE" in names
    assert not [n for n in names if n.startswith("tests/")]
    meta = built.metadata()
    assert meta["License-Expression"] == "MIT"
    assert meta["Requires-Python"] == ">=3.11"
    classifiers = meta.get_all("Classifier") or []
    for wanted in (
        "Typing :: Typed",
        "Framework :: AsyncIO",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
    ):
        assert wanted in classifiers
    # An SPDX expression replaces the license classifiers (PEP 639).
    assert not [c for c in classifiers if c.startswith("License ::")]


def test_the_wheel_installs_and_works_in_a_new_environment(
    built: Built, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    # pykka and structlog from this environment, behind the venv's own packages.
    purelib = Path(
        run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        ).stdout.strip()
    )
    (purelib / "_deps_from_test_env.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    run(
        sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
        "--no-index", built.wheel,
    )  # fmt: skip
    check = textwrap.dedent(
        """
        import importlib.metadata, importlib.resources, pathlib, sys
        import pooler_actors
        from pooler_actors import Pool

        here = pathlib.Path(pooler_actors.__file__).resolve()
        assert here.is_relative_to(pathlib.Path(sys.prefix).resolve()), here
        assert importlib.resources.files("pooler_actors").joinpath("py.typed").is_file()
        assert importlib.metadata.version("pooler_actors") == pooler_actors.__version__

        class Conn:
            def ping(self) -> None: ...
            def close(self) -> None: ...

        with Pool(lambda key: Conn(), max_open_resources=2) as pool:
            conn = pool.acquire("a")
            assert pool.acquire("a") is conn
            assert pool.release("a")
        print("ok", importlib.metadata.version("pooler_actors"))
        """
    )
    done = run(python, "-c", check, cwd=tmp_path)  # not ROOT: no source on path
    # The quiet default holds for an installed wheel too: only our own line.
    assert done.stdout == "ok 0.1.0\n"
    assert done.stderr == ""
