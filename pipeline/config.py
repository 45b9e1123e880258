"""Typed configuration mirroring `pipeline.yaml` one-to-one.

`pipeline.yaml` at the repository root is the single source of defaults and documents every key (the package
holds it through the link `pipeline/pipeline.yaml`, which a built wheel stores as a file); the classes in
`pipeline.schema` fix names, types, ranges and each key's description. A user's file is laid over those
defaults, then dotted overrides (`--set data.kcore_users=0`), then everything is validated at once: a renamed
key fails naming its new name (`pipeline.schema.renamed`); an unknown key, a wrong type or an out-of-range value
fails with its dotted path.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.resources
import json
import os
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline import sources
from pipeline.errors import BadInput
from pipeline.schema import *
from pipeline.schema import PipelineConfig, descriptions, renamed

DEFAULTS_PATH = Path(str(importlib.resources.files("pipeline") / "pipeline.yaml"))


class _Loader(yaml.SafeLoader):
    """YAML as PyYAML reads it, except as YAML 1.2: `5e-5` is a float (YAML 1.1 alone wants `5.0e-5`), and only
    true/false are booleans (YAML 1.1 reads `--set align.mixed_precision=no` as false)."""


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `tree` with `a.b.c=value` overrides applied; values are parsed as YAML."""
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"--set {override!r}: expected KEY=VALUE, e.g. data.kcore_users=5")
        nested: Any = yaml.load(raw, Loader=_Loader) if raw.strip() else None
        for part in reversed(key.strip().split(".")):
            nested = {part: nested}
        tree = _merge(tree, nested)
    return tree


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        tree = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_Loader) or {}
    except FileNotFoundError:
        raise BadInput(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: a folder, not a config file") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read the config file ({exc.strerror})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(tree, dict):
        raise BadInput(f"{path}: the top level must be a mapping of sections")
    return tree


def _format_errors(error: ValidationError, source: str) -> str:
    problems = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        problems.append(f"{key}: {message}")
    return f"{source}: " + "; ".join(problems)


@dataclass(frozen=True)
class Resolved:
    """A validated config, the tree it was validated from, and where each leaf's value came from."""

    config: PipelineConfig
    tree: dict[str, Any]
    sources: dict[str, str]  # dotted key -> "default", a config file's path, $SEQREC_WORKSPACE, --workspace, --set


def resolve_config(path: Path | None = None, overrides: list[str] | None = None,
                   workspace: str | None = None) -> Resolved:
    """The defaults from `pipeline.yaml`, then the file at `path` (its relative paths read against its folder),
    then `$SEQREC_WORKSPACE`, `workspace` (`--workspace`) and the overrides, validated.

    Raises:
        BadInput: a file is missing or not YAML, or keys are renamed, unknown, mistyped or out of range;
            every problem is listed with its dotted key (a renamed one with its new name).
    """
    tree = _read_yaml(DEFAULTS_PATH)
    found = sources.origins(tree, sources.DEFAULT)
    source = str(DEFAULTS_PATH.name)
    if path is not None and Path(path).resolve() != DEFAULTS_PATH.resolve():
        mine = sources.anchor_paths(_read_yaml(path), Path(path).absolute().parent)
        tree = _merge(tree, mine)
        found.update(sources.origins(mine, str(path)))
        source = str(path)
    from_env = os.environ.get(sources.WORKSPACE_ENV)
    for origin, root in ((f"${sources.WORKSPACE_ENV}", from_env), ("--workspace", workspace)):
        if root:
            tree = _merge(tree, {"workspace": {"root": root}})
            found["workspace.root"] = origin
    for override in overrides or []:
        tree = apply_overrides(tree, [override])
        found.update(sources.origins(tree, "--set", under=override.partition("=")[0].strip()))
    sources.fill_data_path(tree, found)
    renamed.refuse(tree, found)
    try:
        return Resolved(PipelineConfig.model_validate(tree), tree, found)
    except ValidationError as exc:
        raise BadInput(_format_errors(exc, source)) from None


def load_config(path: Path | None = None, overrides: list[str] | None = None,
                workspace: str | None = None) -> PipelineConfig:
    """The validated config of `resolve_config` (the defaults, `path`, the workspace, the overrides)."""
    return resolve_config(path, overrides, workspace).config


def explained(tree: dict[str, Any], key: str) -> list[str]:
    """`config --explain KEY`: each key at or under `key`, its value in the resolved `tree`, and its description.

    Raises:
        BadInput: no such key (a renamed one says its new name).
    """
    described = descriptions()
    keys = [name for name in described if name == key or name.startswith(f"{key}.")]
    if not keys:
        raise BadInput(f"--explain {key}: " + (f"renamed to {renamed.RENAMED[key]}" if key in renamed.RENAMED
                                               else "no such key (`seqrec-pipeline config` lists them)"))
    lines = []
    for name in keys:
        value: Any = tree
        for part in name.split("."):
            value = value[part]
        lines.append(name if isinstance(value, dict) else f"{name}: {json.dumps(value)}")
        lines.extend(textwrap.wrap(described[name], 116, initial_indent="    ", subsequent_indent="    "))
    return lines


def saved_section(section: str, saved: dict[str, Any]) -> dict[str, Any]:
    """A config section saved beside an older run, under today's key names and completed with the keys added
    since at today's default (an added setting's default keeps what older runs did), so the run can still be
    loaded and served."""
    def complete(values: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
        out = dict(values)
        for key, default in defaults.items():
            if isinstance(default, dict) and isinstance(out.get(key), dict):
                out[key] = complete(out[key], default)
            elif key not in out:
                out[key] = default
        return out

    return complete(renamed.upgrade_saved(section, saved), _read_yaml(DEFAULTS_PATH)[section])


@functools.cache
def code_release() -> str:
    """The installed release of this package ("source" when run from an uninstalled checkout)."""
    try:
        return importlib.metadata.version("seqrec-pipeline")
    except importlib.metadata.PackageNotFoundError:
        return "source"
