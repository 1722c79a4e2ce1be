"""The import graph of ``src/outboxhub`` reads top-down, with no cycle (issue #15).

    cli, app                      the entry points; app is the composition root
    gateway, ops, outbox, bench   serve or feed the hub
    bus                           consumer groups, live fan-out
    store                         the log
    protocol, auth                the wire format, tokens
    model, topics, errors, ids, retry, protocol.codes, tracing   the base: import only each other

The graph is built from the source (every ``import``, including those inside functions and under
``TYPE_CHECKING``: a cycle that only type checking sees is still a cycle), so this test describes the
rules rather than the current layout, and flags new code that breaks them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src"
ROOT = "outboxhub"

BASE = {"model", "topics", "errors", "ids", "retry", "protocol.codes", "urls", "tracing"}
"""The bottom layer: these import nothing from outboxhub but each other."""

CLIENT_MAY_USE = {"model", "topics", "errors", "ids", "retry", "protocol", "tracing"}
"""What the SDK may import besides itself: the client never pulls in the server."""

NEVER = {
    "store": {"bus", "gateway", "ops", "app", "cli", "outbox", "client"},
    "bus": {"gateway", "ops", "app", "cli", "outbox", "client"},
    "gateway": {"ops", "app", "cli"},
    "ops": {"app", "cli"},
    "outbox": {"ops", "app", "cli"},
    "protocol": {"store", "bus", "gateway", "ops", "app", "cli", "outbox", "client", "auth"},
    "auth": {"store", "bus", "gateway", "ops", "app", "cli", "outbox", "client"},
}
"""``NEVER[a]``: the packages that package ``a`` must not import (they are above it)."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / ROOT).rglob("*.py"))}


MODULES = _modules()


class Import:
    __slots__ = ("deferred", "line", "target")

    def __init__(self, target: str, line: int, *, deferred: bool) -> None:
        self.target = target
        self.line = line
        self.deferred = deferred
        """Inside a function or under ``if TYPE_CHECKING``."""


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports(module: str) -> Iterator[Import]:
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))

    def visit(node: ast.AST, deferred: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            inner = deferred or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                inner = True
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(alias.name, child.lineno, deferred=inner)
            elif isinstance(child, ast.ImportFrom):
                # ``from pkg import sub`` imports the module pkg.sub (pkg, its parent, is imported first
                # anyway, as for every module); ``from pkg import name`` needs pkg itself.
                target = _resolve(module, child)
                names = [alias.name for alias in child.names]
                if any(f"{target}.{name}" not in MODULES for name in names):
                    yield Import(target, child.lineno, deferred=inner)
                for name in names:
                    if f"{target}.{name}" in MODULES:
                        yield Import(f"{target}.{name}", child.lineno, deferred=inner)
            yield from visit(child, inner)

    yield from visit(tree, False)


GRAPH: dict[str, list[Import]] = {
    name: [i for i in _imports(name) if i.target in MODULES and i.target != name] for name in MODULES
}


def _rel(module: str) -> str:
    return module.removeprefix(ROOT).removeprefix(".")


def _package(module: str) -> str:
    return _rel(module).split(".")[0]


def _in(module: str, names: set[str]) -> bool:
    rel = _rel(module)
    return any(rel == n or rel.startswith(n + ".") for n in names)


def _edges() -> Iterator[tuple[str, str, int]]:
    for source, imports in GRAPH.items():
        for imp in imports:
            yield source, imp.target, imp.line


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    succ = {m: sorted({i.target for i in GRAPH[m]}) for m in GRAPH}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(succ):
        if root in index:
            continue
        work = [(root, iter(succ[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(succ[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _show(edges: list[tuple[str, str, int]]) -> str:
    return "\n".join(f"  {_rel(s)} (line {line}) imports {_rel(t)}" for s, t, line in edges)


def test_the_graph_was_read() -> None:
    assert {"outboxhub.app", "outboxhub.ops", "outboxhub.retry", "outboxhub.protocol.codes"} <= set(GRAPH)
    assert any(i.target == "outboxhub.errors" for i in GRAPH["outboxhub.topics"])


def test_no_import_cycle() -> None:
    cycles = _cycles()
    details = []
    for component in cycles:
        members = set(component)
        edges = [(s, t, line) for s, t, line in _edges() if s in members and t in members]
        details.append(f"cycle among {', '.join(_rel(m) for m in component)}:\n{_show(edges)}")
    assert not cycles, "\n".join(details)


def test_the_base_imports_only_the_base() -> None:
    bad = [(s, t, line) for s, t, line in _edges() if _in(s, BASE) and not _in(t, BASE)]
    assert not bad, f"the base layer imports from above it:\n{_show(bad)}"


@pytest.mark.parametrize("package", sorted(NEVER))
def test_no_package_imports_a_layer_above_it(package: str) -> None:
    above = NEVER[package]
    bad = [
        (s, t, line)
        for s, t, line in _edges()
        if _package(s) == package and not _in(s, BASE) and _package(t) in above
    ]
    assert not bad, f"{package} imports a layer above it:\n{_show(bad)}"


def test_the_client_imports_no_server_side_package() -> None:
    bad = [
        (s, t, line)
        for s, t, line in _edges()
        if _package(s) == "client" and _package(t) != "client" and not _in(t, CLIENT_MAY_USE)
    ]
    assert not bad, f"the client imports server-side code:\n{_show(bad)}"


def test_nothing_but_the_entry_points_imports_the_app() -> None:
    bad = [
        (s, t, line) for s, t, line in _edges() if _rel(t) == "app" and _package(s) not in {"cli", "bench"}
    ]
    assert not bad, f"only the entry points may import the composition root:\n{_show(bad)}"


def test_no_module_reaches_into_another_package_private_module() -> None:
    bad = []
    for s, t, line in _edges():
        parts = t.split(".")
        for depth, part in enumerate(parts):
            if part.startswith("_") and not part.startswith("__"):
                owner = ".".join(parts[:depth])  # the package the private module belongs to
                if not (s == owner or s.startswith(owner + ".")):
                    bad.append((s, t, line))
                break
    assert not bad, f"private modules used from outside their package:\n{_show(bad)}"


@pytest.mark.parametrize("package", ["app", "ops"])
def test_the_app_and_ops_import_outboxhub_at_the_top(package: str) -> None:
    """No import of outboxhub code inside a function or under TYPE_CHECKING (the way cycles hide)."""
    bad = [
        (name, imp.target, imp.line)
        for name, imports in GRAPH.items()
        if _package(name) == package
        for imp in imports
        if imp.deferred
    ]
    assert not bad, f"deferred imports in {package}:\n{_show(bad)}"
