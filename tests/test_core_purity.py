"""The core is pure and the shell is small (SPEC 7; issue 10's "done when").

The core's modules import nothing that gives them threads, a clock, I/O or
randomness, and no actor or logging library: what they do is a function of
the events and times they are given. The shell stays a thin translation.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pykka
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pooler_actors"

#: The modules of the core: the state machine and the vocabulary it uses.
CORE = [
    "_core.py",
    "_counter.py",
    "_counter_state.py",
    "_counter_blocks.py",
    "_part.py",
    "_inventory.py",
    "_creations.py",
    "_fleet.py",
    "_waiters.py",
    "_placement.py",
    "_ops.py",
    "_health.py",
    "_sizing.py",
    "_lifecycle.py",
    "_timers.py",
    "_effects.py",
    "lease.py",
    "stats.py",
]

FORBIDDEN = {
    "pykka",
    "structlog",
    "threading",
    "time",
    "random",
    "asyncio",
    "os",
    "socket",
    "queue",
    "concurrent",
    "logging",
    "redis",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_no_threads_clock_io_or_actors(module: str) -> None:
    assert _imports(PACKAGE / module) & FORBIDDEN == set()


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_only_core_modules_of_the_package(module: str) -> None:
    # pooler_actors.errors is the one shared vocabulary the core borrows: the
    # exceptions callers catch (PoolClosedError subclasses pykka's
    # ActorDeadError for callers' sake; the core never uses pykka).
    allowed = {f"pooler_actors.{m[:-3]}" for m in CORE} | {
        "pooler_actors.errors",
        "pooler_actors.options",
    }
    tree = ast.parse((PACKAGE / module).read_text())
    ours = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and node.module
        and node.module.startswith("pooler_actors")
    }
    assert ours <= allowed


def test_the_shell_is_at_most_300_lines() -> None:
    lines = (PACKAGE / "supervisor.py").read_text().splitlines()
    assert len(lines) <= 300


def test_private_pykka_access_lives_in_one_module() -> None:
    offenders = [
        path.name
        for path in PACKAGE.glob("*.py")
        if path.name != "_pykka.py"
        and ("noqa: SLF001" in path.read_text() or "from pykka._" in path.read_text())
    ]
    assert offenders == []


#: The counter's state (see pooler_actors/_counter.py): shared with callers'
#: threads, so read and written only under its lock.
COUNTER_STATE = {
    "view",
    "idle",
    "queue",
    "waiting",
    "starved",
    "notes",
    "hits",
    "noted",
    "closed",
    "direct",
    "single",
    "used",
    "entered",
}
#: Where that state may be touched: the counter's own methods (its class,
#: `Counter`, is built in three modules: its state, its block path, the rest),
#: and the core, which runs only while the shell holds the counter's lock (one
#: core event is one atomic step; see the counter's first invariant).
COUNTER_OWNERS = {"_counter.py", "_counter_state.py", "_counter_blocks.py", "_core.py"}


def _counter_state_touched(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or node.attr not in COUNTER_STATE:
            continue
        owner = node.value
        name = (
            owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
        )
        if name in {"published", "counter", "_counter", "pub"}:
            found.append(f"{path.name}:{node.lineno} .{node.attr}")
    return found


def test_nothing_outside_the_counter_touches_its_state() -> None:
    offenders = [
        hit
        for path in sorted(PACKAGE.glob("*.py"))
        if path.name not in COUNTER_OWNERS
        for hit in _counter_state_touched(path)
    ]
    assert offenders == []


def test_the_counter_state_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f(ref):\n    return ref.counter.view.get('k')\n")
    assert _counter_state_touched(bad) == ["bad.py:2 .view"]


#: SPEC 11: the coordinator, and the most any other class or module may have.
COORDINATOR, MAX_COORDINATOR, MAX_CLASS, MAX_MODULE = "PoolCore", 600, 400, 600


def test_no_module_or_class_of_the_package_is_too_long() -> None:
    """`PoolCore` coordinates parts (`_inventory`, `_waiters`, ...); no part,
    nor any other class, grows past 400 lines, and no module past 600."""
    too_long = []
    for path in sorted(PACKAGE.glob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE:
            too_long.append(f"{path.name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                size = node.end_lineno - node.lineno + 1
                limit = MAX_COORDINATOR if node.name == COORDINATOR else MAX_CLASS
                if size > limit:
                    too_long.append(f"{path.name}: class {node.name}, {size} lines")
    assert too_long == []


def test_each_part_of_the_core_says_what_it_owns() -> None:
    for module in CORE:
        tree = ast.parse((PACKAGE / module).read_text())
        assert ast.get_docstring(tree), f"{module} has no docstring"


def _private_names_of_pykka_and_structlog() -> set[str]:
    """pykka's private method and attribute names (its documented hooks for
    actor implementors aside)."""
    classes = (pykka.Actor, pykka.ThreadingActor, pykka.ActorRef, pykka.Future)
    classes += (pykka.ThreadingFuture, pykka.ActorRegistry, pykka.ActorProxy)
    names = {
        n
        for c in classes
        for n in dir(c)
        if n.startswith("_") and not n.startswith("__")
    }
    names |= {"_actor_weakref", "_get_hook", "_get_hook_result", "_CONFIG"}
    return names - {"_create_actor_inbox", "_create_future", "_start_actor_loop"}


def _private_uses(path: Path, names: set[str]) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in names:
            found.append(f"{path.name}:{node.lineno} .{node.attr}")
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith(("pykka._", "structlog._"))
        ):
            found.append(f"{path.name}:{node.lineno} from {node.module}")
    return found


def test_pykka_and_structlog_insides_are_used_in_one_module() -> None:
    """Issue 20: pykka's and structlog's private names appear only in
    `_pykka.py`, each line there saying why."""
    names = _private_names_of_pykka_and_structlog()
    offenders = [
        hit
        for path in sorted(PACKAGE.glob("*.py"))
        if path.name != "_pykka.py"
        for hit in _private_uses(path, names)
    ]
    assert offenders == []


def test_the_private_use_check_can_fail(tmp_path: Path) -> None:
    names = _private_names_of_pykka_and_structlog()
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from structlog._config import _CONFIG\n"
        "def f(actor):\n    return actor._actor_loop\n"
    )
    assert _private_uses(bad, names) == [
        "bad.py:1 from structlog._config",
        "bad.py:3 ._actor_loop",
    ]
