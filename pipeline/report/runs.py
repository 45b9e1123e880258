"""The runs a report covers: downstream runs, and the dataset and embeddings runs each one read."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.contracts.downstream import CONFIG_FILE, read_metrics
from pipeline.contracts.history import read_history
from pipeline.errors import BadInput
from pipeline.run_ids import fingerprint
from pipeline.store import Output, read_manifest
from pipeline.workspace import input_run


@dataclass(frozen=True)
class Run:
    """One published run: its folder, manifest, saved config (if any) and training curve (if any)."""

    run_dir: Path
    manifest: dict[str, Any]
    config: dict[str, Any]
    history: list[dict[str, Any]]

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id", self.run_dir.name))

    @property
    def item_side(self) -> str:
        """What a downstream run's items are made of: its embeddings' method (plus an ID vector), or IDs."""
        method = self.manifest.get("embeddings_method")
        with_ids = method is not None and self.config.get("model", {}).get("id_embedding")
        return f"{method} + ID vector" if with_ids else method or "ID only"

    @property
    def kind(self) -> str:
        return str(self.manifest.get("kind", "?"))

    @property
    def model(self) -> str:
        """A downstream run's model, with how many it trains as one where that is more than one ("sasrec x3"):
        three members and one model of the same recipe are different variants."""
        members = self.config.get("model", {}).get("members", 1)
        name = str(self.manifest.get("model", "?"))
        return f"{name} x{members}" if members > 1 else name


@dataclass(frozen=True)
class Trained:
    """A downstream run with its inputs (None: an ID-only run has no embeddings run)."""

    downstream: Run
    dataset: Run
    embeddings: Run | None
    metrics: dict[str, Any]

    @property
    def variant(self) -> str:
        """What the run is apart from its seed: runs of one variant differ by `downstream.train.seed` only."""
        settings = copy.deepcopy(self.downstream.config)
        settings.get("train", {}).pop("seed", None)
        embeddings = None if self.embeddings is None else self.embeddings.run_id
        return fingerprint(settings, self.dataset.run_id, embeddings, self.downstream.manifest.get("model"))

    @property
    def label(self) -> str:
        return f"{self.downstream.model} on {self.downstream.item_side}"


def read_run(run_dir: Path) -> Run:
    """A published run folder as a `Run` (its config.json is the resolved config a stage saved beside it)."""
    manifest = read_manifest(run_dir)
    config_file = run_dir / CONFIG_FILE
    config = json.loads(config_file.read_text()) if config_file.is_file() else manifest.get("config") or {}
    return Run(run_dir.resolve(), manifest, config, read_history(run_dir))


def resolve(output: Output, ref: str) -> Path:
    """A downstream run folder from `latest`, a run id in `output`, or a path.

    Raises:
        BadInput: nothing published there.
    """
    if ref == "latest":
        return output.require_latest(f"{output.path}: no published downstream run yet; run train-downstream first")
    path = Path(ref)
    return path if path.is_dir() else output.run_dir(ref)


def read_trained(run_dir: Path) -> Trained:
    """A downstream run and the dataset and embeddings runs its manifest names.

    Raises:
        BadInput: the run is not a downstream run, or an input run was deleted.
    """
    downstream = read_run(run_dir)
    if downstream.kind != "downstream":
        raise BadInput(f"{run_dir}: a {downstream.kind} run; report takes downstream runs (they name their inputs)")
    dataset = read_run(input_run(run_dir, downstream.manifest, "dataset"))
    folder = input_run(run_dir, downstream.manifest, "embeddings")
    embeddings = read_run(folder) if folder else None
    metrics = read_metrics(run_dir)
    if not downstream.history:  # a run made before history.jsonl: its metrics.json kept the epochs
        downstream = Run(downstream.run_dir, downstream.manifest, downstream.config, metrics.get("history", []))
    return Trained(downstream, dataset, embeddings, metrics)
