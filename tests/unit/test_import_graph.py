"""The package's module-level imports form no cycle (issue "One way to do each thing", layers).

A cycle makes import order matter and hides which layer owns what; the modules import one way
(settings → store → tasks → queue/events → http → hosts/cli). Imports inside functions are not
counted: they are the deliberate, lazy ones (an optional extra, a heavy dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import tasklift

ROOT = Path(tasklift.__file__).parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        found[".".join(parts).removesuffix(".__init__")] = path
    return found


def _top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []
    for node in tree.body:
        for stmt in node.body if isinstance(node, ast.If | ast.Try) else [node]:
            if isinstance(stmt, ast.Import | ast.ImportFrom):
                found.append(stmt)
    return found


def import_graph() -> dict[str, set[str]]:
    """Each module of the package → the package modules it imports at module level."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for stmt in _top_level_imports(ast.parse(path.read_text())):
            if isinstance(stmt, ast.Import):
                graph[name] |= {alias.name for alias in stmt.names if alias.name in modules}
            elif stmt.module and stmt.level == 0 and stmt.module in modules:
                graph[name].add(stmt.module)
                graph[name] |= {f"{stmt.module}.{a.name}" for a in stmt.names if f"{stmt.module}.{a.name}" in modules}
        graph[name].discard(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_the_finder_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_level_import_cycle() -> None:
    graph = import_graph()
    assert "tasklift.http.guard" in graph["tasklift.http.routes"]  # the walk sees real imports
    assert cycles(graph) == []


def all_imports(path: Path) -> set[str]:
    """Every ``tasklift.*`` module ``path`` imports, at module level or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("tasklift")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("tasklift"):
            found.add(str(node.module))
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


#: Lower layers that must not reach up: telemetry is set up by every process and reads nothing above
#: it; events and security sit beside the queue, not on it (settings.redis_url is what they share).
FORBIDDEN = {
    "tasklift.telemetry": ("tasklift.queue", "tasklift.store", "tasklift.tasks", "tasklift.events", "tasklift.http"),
    "tasklift.events": ("tasklift.queue",),
    "tasklift.security": ("tasklift.queue",),
}


def test_telemetry_events_and_security_do_not_import_upward_even_lazily() -> None:
    offences = []
    for name, path in _modules().items():
        for package, banned in FORBIDDEN.items():
            if name == package or name.startswith(package + "."):
                offences += [(name, imported) for imported in sorted(all_imports(path)) if imported.startswith(banned)]
    assert offences == []


def test_the_layer_check_sees_a_lazy_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from tasklift.queue.app import celery_app\n")
    assert "tasklift.queue.app" in all_imports(module)
