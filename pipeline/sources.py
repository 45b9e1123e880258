"""Where each config value came from, and paths in config files that mean the same from any folder.

A relative path in a config file is read against that file's folder, so `-c /etc/recs/daily.yaml` finds
the same data whether a person runs it from their home or a scheduler from a temporary folder. Values
given on the command line (`--set`, `--workspace`) and in `SEQREC_WORKSPACE` are read against the current
folder, as any command-line path is, and so is the default `workspace.root: artifacts`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

WORKSPACE_ENV = "SEQREC_WORKSPACE"
DEFAULT = "default"


def _names_a_file(value: str) -> bool:
    """Model settings also take hub ids (`org/name`): only values written as paths are paths."""
    return value.startswith(("./", "../")) or value.endswith(".gguf")


def _names_a_folder(value: str) -> bool:
    """Run references also take `latest` or a run id, which never hold a slash."""
    return "/" in value


# Dotted keys whose values are paths, with the test that tells a path from the other values the key takes.
PATH_KEYS: dict[str, Callable[[str], bool]] = {
    "workspace.root": lambda _: True,
    "data.path": lambda _: True,
    "align.model_cache": lambda _: True,
    "align.lm": _names_a_file,
    "align.encoder": _names_a_file,
    "recformer.model": _names_a_file,
    "downstream.embeddings": _names_a_folder,
    "recommend.run": _names_a_folder,
    "report.dir": lambda _: True,
    "tracking.dir": lambda _: True,
}


def leaves(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every (dotted key, value) of a nested mapping whose value is not itself a mapping."""
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from leaves(value, f"{dotted}.")
        else:
            yield dotted, value


def origins(tree: dict[str, Any], origin: str, under: str = "") -> dict[str, str]:
    """`origin` for every leaf of `tree` (for those at or below the dotted key `under` when given)."""
    return {key: origin for key, _ in leaves(tree)
            if not under or key == under or key.startswith(f"{under}.")}


def anchor_paths(tree: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A copy of a config file's `tree` with its relative path values made absolute against `folder`."""
    anchored = json.loads(json.dumps(tree, default=str))
    for key, is_path in PATH_KEYS.items():
        section, _, name = key.partition(".")
        values = anchored.get(section)
        value = values.get(name) if isinstance(values, dict) else None
        if isinstance(value, str) and is_path(value) and not value.startswith("~") and not Path(value).is_absolute():
            values[name] = os.path.normpath(folder / value)  # not resolved: a `latest` link stays a link
    return anchored


def fill_data_path(tree: dict[str, Any], found: dict[str, str]) -> None:
    """`data.path: null` follows the workspace: `<workspace.root>/raw/<data.name>`, where
    `fetch-default-data` puts ml-100k (for the default root, `artifacts/raw/ml-100k`, as before)."""
    data, workspace = tree.get("data"), tree.get("workspace")
    if not (isinstance(data, dict) and isinstance(workspace, dict)) or data.get("path") is not None:
        return
    root, name = workspace.get("root"), data.get("name")
    if isinstance(root, str) and isinstance(name, str):
        data["path"] = str(Path(root) / "raw" / name)
        found["data.path"] = f"{found.get('data.path', DEFAULT)}: <workspace.root>/raw/<data.name>"


def render(tree: dict[str, Any], found: dict[str, str], indent: str = "") -> list[str]:
    """The resolved config as YAML lines, each leaf followed by `# <where its value came from>`.

    Leaf values are written as JSON, which YAML reads back as the same value.
    """
    lines = []
    for key, value in tree.items():
        if isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            lines.extend(render(value, {k.partition(".")[2]: v for k, v in found.items()
                                        if k.startswith(f"{key}.")}, indent + "  "))
        else:
            lines.append(f"{indent}{key}: {json.dumps(value)}  # {found.get(key, DEFAULT)}")
    return lines
