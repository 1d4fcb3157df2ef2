"""MkDocs hooks: Mermaid is served from the site itself, never from a CDN.

Material for MkDocs draws the ```` ```mermaid ```` blocks with mermaid.js,
which it fetches from a CDN unless a global `mermaid` already exists; offline,
the diagrams then stay raw text. No PyPI package ships mermaid.js for our
Python, so at build time this hook takes `dist/mermaid.min.js` from the
official npm package (`npm pack`, the npm registry's ordinary client, checked
against a pinned sha512), and adds it to the site as
`assets/javascripts/mermaid.min.js`, which `mkdocs.yml` loads through
`extra_javascript`. Nothing is committed: the file is cached under `.cache/`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

MERMAID_VERSION = "11.17.2"  # the major version Material for MkDocs expects
# The npm registry's `dist.integrity` of mermaid-11.17.2.tgz.
MERMAID_INTEGRITY = (
    "sha512-V6K3C8EBdEsPFZXSKMJe6ppQOENxuHARr9GvHX4hh47lAbhMRD9qf4oEK7LoaRQx"
    "ULMa80/qt5gHO73aCleBBg=="
)
SITE_PATH = "assets/javascripts/mermaid.min.js"
LICENSE_PATH = "assets/javascripts/mermaid.LICENSE.txt"
CACHE = Path(__file__).resolve().parent.parent / ".cache" / f"mermaid-{MERMAID_VERSION}"
# What the hook takes from the npm tarball, and where it caches each.
WANTED = {
    "package/dist/mermaid.min.js": "mermaid.min.js",
    "package/LICENSE": "LICENSE.txt",
}


def on_files(files: Files, config: Any) -> Files:
    """Add mermaid.js and its licence to the site's files."""
    folder = mermaid_files()
    files.append(
        File.generated(config, SITE_PATH, abs_src_path=str(folder / "mermaid.min.js"))
    )
    files.append(
        File.generated(config, LICENSE_PATH, abs_src_path=str(folder / "LICENSE.txt"))
    )
    return files


def mermaid_files() -> Path:
    """The cached folder with mermaid.min.js and its licence; fetched if absent."""
    if all((CACHE / name).is_file() for name in WANTED.values()):
        return CACHE
    npm = shutil.which("npm")
    if npm is None:
        raise PluginError(
            "the docs need npm (Node.js) once, to fetch mermaid.js "
            f"{MERMAID_VERSION} into {CACHE}"
        )
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE.parent) as tmp:
        done = subprocess.run(
            [npm, "pack", f"mermaid@{MERMAID_VERSION}", "--pack-destination", tmp],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=tmp,
        )
        tarball = Path(tmp) / f"mermaid-{MERMAID_VERSION}.tgz"
        if done.returncode != 0 or not tarball.is_file():
            raise PluginError(
                f"npm pack mermaid@{MERMAID_VERSION} failed: {done.stderr}"
            )
        digest = hashlib.sha512(tarball.read_bytes()).digest()
        if "sha512-" + base64.b64encode(digest).decode() != MERMAID_INTEGRITY:
            raise PluginError(f"{tarball.name} does not match its pinned sha512")
        staged = Path(tmp) / "staged"
        staged.mkdir()
        with tarfile.open(tarball) as archive:
            for member, name in WANTED.items():
                source = archive.extractfile(member)
                if source is None:
                    raise PluginError(f"{member} missing from {tarball.name}")
                (staged / name).write_bytes(source.read())
        # Another build may have finished first: either copy will do.
        try:
            os.replace(staged, CACHE)
        except OSError:
            if not CACHE.is_dir():
                raise
    return CACHE
