"""The import graph of `stages/` and `pipeline/`, read from the source with `ast` (imports inside functions
included, where a circle hides): stage two's sequence kinds reach neither stage one nor Recformer, and no
module reaches itself."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("stages", "pipeline")
# The one import allowed across: stage two's kind table imports Recformer's kind when a run asks for it.
LAZY_KIND = ("stages.downstream.kinds", "_recformer", "stages.recformer.downstream")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path, known: set[str]) -> list[tuple[str | None, str]]:
    """(enclosing function or None, imported module) for every import in `path` that names a known module."""
    edges: list[tuple[str | None, str]] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, function or child.name)
                continue
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                names = [f"{child.module}.{alias.name}" if f"{child.module}.{alias.name}" in known else child.module
                         for alias in child.names]
            edges.extend((function, name) for name in names if name in known)
            visit(child, function)

    visit(ast.parse(path.read_text(encoding="utf-8")), None)
    return edges


def _graph() -> dict[str, set[tuple[str | None, str]]]:
    modules = _modules()
    return {name: set(_imports(path, set(modules))) for name, path in modules.items()}


def test_the_sequence_kinds_reach_neither_stage_one_nor_recformer() -> None:
    graph = _graph()
    assert (LAZY_KIND[1], LAZY_KIND[2]) in graph[LAZY_KIND[0]]  # the exemption below names a real import
    start = [name for name in graph if name.startswith("stages.downstream.")]
    seen, todo = set(start), list(start)
    while todo:
        module = todo.pop()
        for function, target in graph[module]:
            if (module, function, target) != LAZY_KIND and target not in seen:
                seen.add(target)
                todo.append(target)
    assert sorted(name for name in seen if name.startswith(("stages.align", "stages.recformer"))) == []


def test_no_module_of_stages_or_pipeline_reaches_itself() -> None:
    graph = {name: {target for _, target in edges if target != name} for name, edges in _graph().items()}
    circles, done = [], set()

    def walk(module: str, path: list[str]) -> None:
        for target in sorted(graph[module]):
            if target in path:
                circles.append(path[path.index(target):] + [target])
            elif target not in done:
                walk(target, [*path, target])
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            walk(module, [module])
    assert circles == []
