"""The modules of src/rwm import each other without a cycle, counting imports inside functions.

An import inside a function hides a cycle from Python at import time, not from a reader: the
two modules still depend on each other. This test reads every import statement that can run (top
level, inside functions and classes; not those under ``if TYPE_CHECKING:``, which only serve
annotations), resolves relative ones, counts the ``__init__`` of every package an import enters
from outside, and fails on any cycle, printing it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "src" / "rwm"


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path, modules: set[str]) -> set[str]:
    """The package's modules `path` imports anywhere in its code: `from a.b import c` names a.b.c if that
    is a module, else a.b."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in walk_executed(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
    # importing a.b.c from outside package a.b first runs a.b's __init__, which may import more
    found |= {parent for module in found for parent in ancestors(module) if not is_inside(name, parent)}
    return {m for m in found if m in modules and m != name}


def walk_executed(tree: ast.AST):
    """Every node of `tree` (function and class bodies too) except the bodies of ``if TYPE_CHECKING:``,
    which hold imports for annotations only and never run."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                stack.extend(child.orelse)
            else:
                stack.append(child)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts))]


def is_inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def import_graph(root: Path = PACKAGE_ROOT) -> dict[str, set[str]]:
    """{module: the package's modules it imports} for every module of the package at `root`."""
    paths = sorted(root.rglob("*.py"))
    modules = {module_name(p, root) for p in paths}
    return {module_name(p, root): imported_modules(p, root, modules) for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_import_graph_sees_imports_inside_functions_relative_ones_and_package_inits(tmp_path):
    root = tmp_path / "rwm"
    for folder in (root / "sub", root / "other"):
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("from rwm.sub.b import g\n")
    (root / "sub" / "a.py").write_text("def f():\n    from . import b\n")
    (root / "sub" / "b.py").write_text("from rwm.sub.a import f\n")
    (root / "other" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                         "    from rwm.sub import a\nfrom rwm.sub.b import g\n")
    graph = import_graph(root)
    assert graph["rwm.sub.a"] == {"rwm.sub.b"} and graph["rwm.sub.b"] == {"rwm.sub.a"}
    assert graph["rwm.other.c"] == {"rwm.sub.b", "rwm.sub"}  # rwm.sub's __init__ runs first; TYPE_CHECKING never
    assert find_cycle(graph) == ["rwm.sub.b", "rwm.sub.a", "rwm.sub.b"]


def test_no_import_cycle_among_rwm_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_datasets_do_not_import_training():
    """`rwm.data` sits below `rwm.training` (training reads datasets; recording from a run's checkpoints
    is rwm.training.recording)."""
    graph = import_graph()
    offending = {module: sorted(t for t in targets if is_inside(t, "rwm.training"))
                 for module, targets in graph.items() if is_inside(module, "rwm.data")}
    assert not any(offending.values()), f"rwm.data imports rwm.training: {offending}"
