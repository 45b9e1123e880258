"""Run ids: one rule for every stage.

A run's id hashes exactly what the run reads: the stage's name, the config values it reads, its inputs
(upstream run ids, the raw files' sha256, a model's weights' sha256) and the identity of the code that makes
its results. Same id, same result: a published run is reused only when all of these are unchanged, and a
killed run's partial folder is resumed only by code that would have made the same run.

The code's identity is read from the code itself, never kept by hand: the sha256 of every project module
the stage's code imports (function-level imports included), docstrings and comments left out, so that a
change in any of them gives new run ids and a change in documentation does not. Modules that cannot change
a result are left out (`NOT_RESULTS`), and a stage leaves out the modules of the methods or model kinds a
run does not use, so a change to Recformer does not redo SAID's hours of alignment.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = ("pipeline", "stages")

# Settings reach a run as the values it hashes, and messages are not results.
NOT_RESULTS = frozenset({"pipeline.config", "pipeline.events", "pipeline.errors", "pipeline.faults"})


def fingerprint(*parts: Any) -> str:
    """A short, stable hash of JSON-able parts (config sections dumped with `model_dump(mode="json")`)."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def stage_run_id(stage: str, *parts: Any, code: str) -> str:
    """A run's id: its stage, the identity of the `code` that makes it (`code_identity`), and everything it
    reads (config values, input run ids and hashes)."""
    return fingerprint(stage, code, *parts)


@functools.cache
def code_identity(roots: tuple[str, ...], without: tuple[str, ...] = ()) -> str:
    """The sha256 of the project code that `roots` (module names) run: the modules themselves and every
    project module they import, transitively, except `without` and `NOT_RESULTS` (whose imports are not
    followed either)."""
    return fingerprint(sorted(modules_run(roots, without).items()))


def modules_run(roots: tuple[str, ...], without: tuple[str, ...] = ()) -> dict[str, str]:
    """The project modules `roots` run (see `code_identity`), each with the sha256 of its code."""
    skipped = NOT_RESULTS | set(without)
    code: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in code or name in skipped:
            continue
        read = _module_code(name)
        if read is not None:
            code[name], imports = read
            todo += imports
    return code


@functools.cache
def _module_code(name: str) -> tuple[str, list[str]] | None:
    """A project module's code hash and the modules it imports; None for anything else."""
    path = module_path(name)
    if path is None:
        return None
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imports = _imported(tree, name, path.name == "__init__.py")
    return hashlib.sha256(ast.dump(_without_docstrings(tree)).encode()).hexdigest(), imports


def module_path(name: str) -> Path | None:
    """The source file of a project module or package, None for anything else (a library, a name that is
    not a module)."""
    parts = name.split(".")
    if parts[0] not in PROJECT_PACKAGES:
        return None
    base = PROJECT_ROOT.joinpath(*parts)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported(tree: ast.Module, name: str, is_package: bool) -> list[str]:
    """Every module name `tree` imports (each with its parent packages, which Python runs first)."""
    package = name if is_package else name.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found += [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return [".".join(module.split(".")[:end]) for module in found for end in range(1, module.count(".") + 2)]


def _without_docstrings(tree: ast.Module) -> ast.Module:
    """`tree` without the docstrings of its module, classes and functions (comments never reach the tree)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree
