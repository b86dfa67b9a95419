"""The shape of the code: data flows one way, and nothing imports back up the flow.

Imports are read from the source (module level and inside functions alike), plus the
modules the extension packages import by discovery, and checked as a graph.
"""

from __future__ import annotations

import ast
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cgwatchdog"

# Pure logic: no sockets, files, processes or clock. They may import one another only.
LOGIC = (
    "cgwatchdog.alerts",
    "cgwatchdog.cluster",
    "cgwatchdog.config",  # the package's own __init__: models, fields, hosts, secrets
    "cgwatchdog.config.fields",
    "cgwatchdog.config.hosts",
    "cgwatchdog.config.models",
    "cgwatchdog.config.secrets",
    "cgwatchdog.errors",
    "cgwatchdog.gcpause",
    "cgwatchdog.history",
    "cgwatchdog.jsonstate",
    "cgwatchdog.protocol",
    "cgwatchdog.registry",
    "cgwatchdog.silences",
    "cgwatchdog.rules",
    "cgwatchdog.sandbox",
    "cgwatchdog.shard",
    "cgwatchdog.snapshot",
    "cgwatchdog.statemachine",
    "cgwatchdog.trend",
    "cgwatchdog.units",
    "cgwatchdog.web.fleetview",
)
# The wiring that may drive the poller (an I/O module): everything else works on results.
POLLER_USERS = {"cgwatchdog.watchdog", "cgwatchdog.daemon", "cgwatchdog.cli", "cgwatchdog.discover"}
# Packages whose __init__ imports every module in them (cgwatchdog.registry.import_all).
DISCOVERED = ("cgwatchdog.rules.types", "cgwatchdog.notify.receivers", "cgwatchdog.notify.formats")


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    known = modules()

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        for target in _imported(tree, name, path.name == "__init__.py"):
            if target.startswith("cgwatchdog"):
                resolved = resolve(target)
                if resolved is not None and resolved != name:
                    graph[name].add(resolved)
    for package in DISCOVERED:
        path = known[package].parent
        graph[package] |= {
            f"{package}.{info.name}"
            for info in pkgutil.iter_modules([str(path)])
            if not info.name.startswith("_")
        }
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _is_logic(name: str) -> bool:
    # cgwatchdog.config is logic, its loader (files) is not: packages count by their
    # own name, and by their submodules only where listed (cgwatchdog.rules.*).
    if name in LOGIC:
        return True
    return any(name.startswith(logic + ".") for logic in LOGIC if logic != "cgwatchdog.config")


def test_no_import_cycle_even_through_function_level_imports() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_check_sees_function_level_imports(tmp_path: Path) -> None:
    source = "def late():\n    from cgwatchdog.b import x\n"
    names = set(_imported(ast.parse(source), "cgwatchdog.a", False))
    assert "cgwatchdog.b" in names
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


def test_only_the_wiring_imports_the_poller() -> None:
    graph = import_graph()
    users = {name for name, targets in graph.items() if "cgwatchdog.poller" in targets}
    assert users <= POLLER_USERS, users - POLLER_USERS


@pytest.mark.parametrize("module", LOGIC)
def test_logic_modules_reach_only_logic_modules(module: str) -> None:
    graph = import_graph()
    names = [
        name
        for name in graph
        if name == module or (name.startswith(module + ".") and _is_logic(name))
    ]
    assert names, f"{module} is not a module of the package"
    for name in names:
        io = sorted(target for target in reachable(graph, name) if not _is_logic(target))
        assert io == [], f"{name} imports I/O modules {io}"
