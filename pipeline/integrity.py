"""What a published run holds, recorded at publish time so `verify` can tell a damaged run from a sound one."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in blocks (source files and models can be large)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def run_files(folder: Path, skip: Iterable[str]) -> list[Path]:
    """Every file under `folder` (links not followed), less the top-level entries named in `skip`."""
    skipped = set(skip)
    found = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if relative.parts[0] not in skipped and path.is_file() and not path.is_symlink():
            found.append(path)
    return found


def record_files(folder: Path, skip: Iterable[str]) -> dict[str, dict[str, Any]]:
    """`{relative path: {"size", "sha256"}}` of the files `run_files` finds."""
    return {path.relative_to(folder).as_posix(): {"size": path.stat().st_size, "sha256": sha256_file(path)}
            for path in run_files(folder, skip)}


def non_finite(value: Any, where: str = "") -> list[str]:
    """The dotted paths of every NaN or infinite float inside `value` (dicts, lists, numbers)."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [where or "(value)"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in non_finite(v, f"{where}.{k}" if where else str(k))]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in non_finite(v, f"{where}[{i}]")]
    return []
