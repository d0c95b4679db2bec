"""The package's module-level imports form no cycle (issue "One way to do each thing", layers).

A cycle makes import order matter and hides which layer owns what. The cycle check counts
module-level imports (a lazy import inside a function cannot form an import-time cycle); the layer
check counts every import, lazy ones too: the modules import one way (settings → store → security
→ tasks → queue/events → http → cli; :data:`LAYERS`).
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


#: The layers, lowest first (docs/architecture.md, "Layers"): a module imports only from its own layer or
#: below, even lazily (inside a function). A module takes the layer of its longest listed prefix.
LAYERS: dict[str, int] = {
    # 0: what every process sets up first, importing nothing above it
    "tasklift.settings": 0,
    "tasklift.tasks.states": 0,  # the lifecycle: a leaf every layer reads (it imports nothing of tasklift)
    "tasklift.jsoncodec": 0,
    "tasklift.version": 0,
    "tasklift.security.redaction": 0,
    "tasklift.logs": 0,
    "tasklift.telemetry": 0,
    # 1: the data: PostgreSQL and blob storage
    "tasklift.store": 1,
    "tasklift.blobs": 1,
    # 2: who is calling and what they may do (API keys and tokens read the store)
    "tasklift.security": 2,
    # 3: what a task is, and the context it runs with
    "tasklift.tasks": 3,
    "tasklift": 3,  # the package's public face for task authors: task, TaskContext
    "tasklift.builtin": 4,  # task types, plug-ins of the registry
    # 5: moving tasks and their events: Redis, Celery, the reaper
    "tasklift.queue": 5,
    "tasklift.events": 5,
    # 6: the host-neutral HTTP API over all of that
    "tasklift.http": 6,
    # 7: what runs it: the command line, the Python client, the embedded dev engines
    "tasklift.cli": 7,
    "tasklift.client": 7,
    "tasklift.embedded": 7,
}


def layer(module: str) -> int:
    """The layer of ``module``: that of its longest prefix in :data:`LAYERS`."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if (prefix := ".".join(parts[:end])) in LAYERS:
            return LAYERS[prefix]
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def _imported_modules(path: Path) -> set[str]:
    """The package modules ``path`` imports, anywhere in it (``from tasklift import x`` is ``tasklift.x``)."""
    modules = _modules()
    found = set()
    for name in all_imports(path):
        if name in modules:
            found.add(name)
        elif name.rpartition(".")[0] in modules:  # an attribute: `from tasklift.x import name`
            found.add(name.rpartition(".")[0])
    if "tasklift" in found and not _imports_the_package_itself(path):
        found.discard("tasklift")  # only `from tasklift import <module>`
    return found


def _imports_the_package_itself(path: Path) -> bool:
    """True when ``path`` takes names defined in ``tasklift/__init__.py`` (``from tasklift import task``)."""
    modules = _modules()
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module == "tasklift"
            and any(f"tasklift.{alias.name}" not in modules for alias in node.names)
        ):
            return True
    return False


def test_layers_point_one_way_even_lazily() -> None:
    offences = []
    for name, path in _modules().items():
        for imported in sorted(_imported_modules(path)):
            if layer(imported) > layer(name):
                offences.append(f"{name} (layer {layer(name)}) imports {imported} (layer {layer(imported)})")
    assert offences == []


def test_the_layer_check_sees_an_upward_import(tmp_path: Path) -> None:
    assert layer("tasklift.store.repository") < layer("tasklift.tasks.registry") < layer("tasklift.queue.runner")
    assert layer("tasklift.tasks.states") < layer("tasklift.store.repository") < layer("tasklift.tasks.service")
    module = tmp_path / "m.py"
    module.write_text("from tasklift.queue.dispatch import Enqueuer\nfrom tasklift import task\n")
    assert _imported_modules(module) == {"tasklift.queue.dispatch", "tasklift"}


def test_the_layer_check_sees_a_lazy_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from tasklift.queue.app import celery_app\n")
    assert "tasklift.queue.app" in all_imports(module)
