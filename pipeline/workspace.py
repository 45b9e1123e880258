"""Reading a workspace as a whole: the published runs of an output, newest first, and what they refer to."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import BadInput
from pipeline.store import MANIFEST, Output

# Manifest keys that name another run (by id) or its folder: a run they name is still in use.
REFERENCE_KEYS = ("dataset_run_id", "embeddings_run_id", "downstream_run_id", "incremental_base_run_id",
                  "init_run_id")


@dataclass(frozen=True)
class Published:
    """One published run: its folder and manifest."""

    run_dir: Path
    manifest: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id", self.run_dir.name))

    @property
    def created(self) -> str:
        return str(self.manifest.get("created", ""))


def published_runs(output: Output) -> list[Published]:
    """Every complete run of `output`, newest first (by the manifest's creation time)."""
    if not output.path.is_dir():
        return []
    found = []
    for folder in output.path.iterdir():
        if folder.name.startswith(".") or folder.is_symlink() or not (folder / MANIFEST).is_file():
            continue
        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(manifest, dict):
            found.append(Published(folder, manifest))
    return sorted(found, key=lambda run: run.created, reverse=True)


def newest(output: Output, accepts: Callable[[Published], bool]) -> Published | None:
    """The run `latest` points to if `accepts` it, else the newest published run it accepts."""
    runs = [run for run in published_runs(output) if accepts(run)]
    latest = output.latest()
    chosen = [run for run in runs if latest is not None and run.run_dir.name == latest.name]
    return (chosen or runs or [None])[0]


def references(manifest: dict[str, Any]) -> set[str]:
    """Run ids a manifest names (its inputs), including Recformer's pretraining datasets."""
    named = {str(manifest[key]) for key in REFERENCE_KEYS if manifest.get(key)}
    named.update(str(run) for run in (manifest.get("pretrain_datasets") or {}).values())
    return named


INPUT_OUTPUTS = {"dataset": "datasets", "embeddings": "embeddings"}  # manifest prefix -> output kind


def workspace_root(run_dir: Path) -> Path:
    """The workspace a run folder lies in: `<root>` of `<root>/<kind>/<name>/<run_id>`."""
    return run_dir.absolute().parents[2]


def sibling_output(run_dir: Path, kind: str) -> Output:
    """Output `kind` of the same dataset name in the run folder's own workspace (wherever it was moved)."""
    return Output(workspace_root(run_dir) / kind / run_dir.absolute().parent.name)


def input_run(run_dir: Path, manifest: dict[str, Any], kind: str) -> Path | None:
    """The input run of `kind` (dataset, embeddings) that a published run's manifest names by run id.

    It is looked up in the run folder's own workspace, so a workspace copied, moved or mounted elsewhere
    still loads; runs published before manifests named inputs by id alone, and inputs outside the
    workspace, are found by the absolute `<kind>_run_dir` stored beside the id.

    Raises:
        BadInput: the input run is in neither place.
    """
    run_id = manifest.get(f"{kind}_run_id")
    if run_id is None:
        return None
    here = sibling_output(run_dir, INPUT_OUTPUTS[kind]).run_dir(str(run_id))
    stored = manifest.get(f"{kind}_run_dir")
    for candidate in (here, *([Path(stored)] if stored else [])):
        if (candidate / MANIFEST).is_file():
            return candidate
    raise BadInput(f"{run_dir / MANIFEST}: its {kind} run {run_id} is not at {here}"
                   + (f" nor at {stored}" if stored else "") + " (deleted, or the workspace copied without it)")
