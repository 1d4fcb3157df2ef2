"""``make docs-check``: the built site, page by page, in headless Chromium.

Serves the built site (``make docs``, ``site/``) on 127.0.0.1 at a free port
(``http.server``, in this process), opens every page in the system's headless
Chromium over the Chrome DevTools Protocol (a small client over
``websocket-client``: the ``docs-check`` extra) and fails if a page

- logs a console error or throws an uncaught exception;
- gets a response of 400 or more, or a failed load, for any resource;
- shows an image that did not load (``naturalWidth`` 0);
- keeps a Mermaid diagram undrawn: a ``.mermaid`` element with no ``svg``
  inside (Material for MkDocs draws it in a shadow root, which the protocol's
  DOM sees), or one drawn as mermaid's syntax-error picture, after waiting.

It saves a screenshot of each page (full length, up to ``--max-height``
pixels) under ``--shots``. It installs nothing: Chromium comes from the
system (``apt-get install chromium`` on Debian, or set ``CHROMIUM`` to a
Chrome or Chromium binary), ``websocket-client`` from the ``docs-check``
extra, which the committed lock installs; it says so when one is missing.

Usage: ``python tools/docs_check.py [--site site] [--shots site-shots]``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import websocket
except ImportError:  # pragma: no cover - says what to do instead
    sys.exit(
        "docs-check needs websocket-client: python -m pip install -e '.[docs-check]'"
    )

HOW_TO_GET = (
    "headless Chromium not found: apt-get install chromium "
    "(or set CHROMIUM to a Chrome/Chromium binary)"
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
]
WIDTH, HEIGHT = 1280, 900

# Run in each page once it has loaded: images that did not load.
_BROKEN_IMAGES = """
(async () => {
  const imgs = Array.from(document.images);
  imgs.forEach((img) => { img.loading = "eager"; });  // none waits to be seen
  await Promise.all(imgs.map((img) => img.decode().catch(() => null)));
  return {
    count: imgs.length,
    broken: imgs.filter((img) => img.naturalWidth === 0)
                .map((img) => img.currentSrc || img.src),
  };
})()
"""


def find_chromium() -> str | None:
    """The Chromium to drive: ``$CHROMIUM``, else the usual names on PATH."""
    candidates = [os.environ.get("CHROMIUM", "")]
    candidates += ["chromium", "chromium-browser", "google-chrome", "chrome"]
    for name in candidates:
        if name and (path := shutil.which(name)):
            return path
    return None


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve(site: Path) -> Iterator[str]:
    """The site over HTTP on 127.0.0.1 and a free port: its base URL."""
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class DevTools:
    """A Chrome DevTools Protocol session with one page, over a websocket."""

    def __init__(self, url: str, timeout: float) -> None:
        self.ws = websocket.create_connection(
            url, timeout=timeout, suppress_origin=True
        )
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command and return its result; events meanwhile are kept."""
        self.next_id += 1
        ident = self.next_id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message: dict[str, Any] = json.loads(self.ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            if "method" in message:
                self.events.append(message)

    def wait_for(self, method: str, deadline: float) -> None:
        """Read events until ``method`` arrives (or raise at ``deadline``)."""
        while not any(e["method"] == method for e in self.events):
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} in time")
            message: dict[str, Any] = json.loads(self.ws.recv())
            if "method" in message:
                self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate",
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"evaluate: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        self.ws.close()


@contextlib.contextmanager
def chromium(binary: str, timeout: float) -> Iterator[DevTools]:
    """Headless Chromium in a fresh profile, and a session with its page."""
    with tempfile.TemporaryDirectory(prefix="docs-check-") as profile:
        proc = subprocess.Popen(
            [
                binary,
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={WIDTH},{HEIGHT}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            # Chromium writes its port to DevToolsActivePort once it listens.
            active = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + timeout
            while not (active.is_file() and active.read_text().count("\n") >= 1):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{binary} did not start (exit {proc.poll()})")
                time.sleep(0.05)
            port = active.read_text().split("\n")[0].strip()
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/json/list", timeout=timeout
            ) as reply:
                targets = json.loads(reply.read())
            page = next(t for t in targets if t["type"] == "page")
            tools = DevTools(page["webSocketDebuggerUrl"], timeout)
            try:
                for domain in ("Page", "Runtime", "Network", "Log"):
                    tools.call(f"{domain}.enable")
                yield tools
            finally:
                tools.close()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class PageReport:
    path: str
    problems: list[str] = field(default_factory=list)
    images: int = 0
    diagrams: int = 0


def _walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A DOM node and everything under it, shadow roots and frames included."""
    yield node
    for key in ("children", "shadowRoots"):
        for child in node.get(key, []):
            yield from _walk(child)
    if "contentDocument" in node:
        yield from _walk(node["contentDocument"])


def _attrs(node: dict[str, Any]) -> dict[str, str]:
    flat = node.get("attributes", [])
    return dict(zip(flat[::2], flat[1::2], strict=True))


def mermaid_state(tools: DevTools) -> tuple[int, list[str]]:
    """How many ``.mermaid`` elements there are, and which are not drawn."""
    root = tools.call("DOM.getDocument", depth=-1, pierce=True)["root"]
    count, undrawn = 0, []
    for node in _walk(root):
        classes = _attrs(node).get("class", "").split()
        if "mermaid" not in classes or node.get("nodeName") in ("svg", "SVG"):
            continue
        count += 1
        svgs = [n for n in _walk(node) if n.get("nodeName", "").lower() == "svg"]
        if not svgs:
            text = " ".join(
                n.get("nodeValue", "") for n in _walk(node) if n.get("nodeType") == 3
            )
            undrawn.append(f"not drawn: {text.strip()[:60]!r}")
        elif any(_attrs(s).get("aria-roledescription") == "error" for s in svgs):
            undrawn.append("drawn as mermaid's syntax error")
    return count, undrawn


def check_page(
    tools: DevTools, url: str, path: str, *, shots: Path, timeout: float, tall: int
) -> PageReport:
    report = PageReport(path)
    tools.events.clear()
    tools.call("Emulation.clearDeviceMetricsOverride")
    tools.call("Page.navigate", url=url)
    deadline = time.monotonic() + timeout
    tools.wait_for("Page.loadEventFired", deadline)
    images = tools.evaluate(_BROKEN_IMAGES)
    report.images = images["count"]
    report.problems += [f"image did not load: {src}" for src in images["broken"]]
    # Material draws the diagrams after the load, asynchronously: wait.
    while True:
        report.diagrams, undrawn = mermaid_state(tools)
        if not undrawn or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    report.problems += [f"mermaid diagram {u}" for u in undrawn]
    tools.call("Runtime.evaluate", expression="1")  # collect pending events
    report.problems += problems_in(tools.events)
    shot(tools, shots / (path.replace("/", "__").removesuffix(".html") + ".png"), tall)
    return report


def problems_in(events: list[dict[str, Any]]) -> list[str]:
    """Console errors, exceptions, failed and 4xx/5xx responses among events."""
    out = []
    for event in events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params["type"] in (
            "error",
            "assert",
        ):
            text = " ".join(
                str(a.get("value", a.get("description", ""))) for a in params["args"]
            )
            out.append(f"console {params['type']}: {text[:200]}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details["text"]
            out.append(f"uncaught: {text[:200]}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            out.append(f"console ({entry['source']}): {entry['text'][:200]}")
        elif method == "Network.responseReceived":
            response = params["response"]
            if response["status"] >= 400:
                out.append(f"HTTP {response['status']}: {response['url']}")
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            out.append(f"load failed ({params['errorText']}): {params['requestId']}")
    return out


def shot(tools: DevTools, out: Path, tall: int) -> None:
    """A PNG of the page, full length up to ``tall`` CSS pixels."""
    size = tools.call("Page.getLayoutMetrics")["cssContentSize"]
    height = min(tall, max(HEIGHT, int(size["height"])))
    tools.call(
        "Emulation.setDeviceMetricsOverride",
        width=WIDTH,
        height=height,
        deviceScaleFactor=1,
        mobile=False,
    )
    data = tools.call("Page.captureScreenshot", format="png")["data"]
    out.write_bytes(base64.b64decode(data))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, default=Path("site"))
    parser.add_argument("--shots", type=Path, default=Path("site-shots"))
    parser.add_argument("--timeout", type=float, default=20.0, help="s per page")
    parser.add_argument(
        "--max-height", type=int, default=12_000, help="screenshot height cap, px"
    )
    args = parser.parse_args(argv)
    binary = find_chromium()
    if binary is None:
        print(f"docs-check: {HOW_TO_GET}", file=sys.stderr)
        return 2
    if not (args.site / "index.html").is_file():
        print(f"docs-check: no site in {args.site}: run `make docs`", file=sys.stderr)
        return 2
    found = args.site.rglob("*.html")
    pages = sorted(p.relative_to(args.site).as_posix() for p in found)
    args.shots.mkdir(parents=True, exist_ok=True)
    for old in args.shots.glob("*.png"):
        old.unlink()
    failed = 0
    with serve(args.site) as base, chromium(binary, args.timeout) as tools:
        for path in pages:
            report = check_page(
                tools,
                base + path,
                path,
                shots=args.shots,
                timeout=args.timeout,
                tall=args.max_height,
            )
            verdict = "FAIL" if report.problems else "ok  "
            print(
                f"{verdict} {path} ({report.images} images, {report.diagrams} diagrams)"
            )
            for problem in report.problems:
                print(f"       {problem}")
            failed += bool(report.problems)
    print(
        f"# {len(pages) - failed}/{len(pages)} pages clean in {binary}; "
        f"screenshots in {args.shots}/"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
