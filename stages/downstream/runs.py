"""Finding stage two's inputs (dataset run, embeddings run) and a run's resume state; the published files' contract
is `pipeline.contracts.downstream`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from pipeline.config import DownstreamConfig, PipelineConfig
from pipeline.contracts.embeddings import Embeddings, align_to_items, read_embeddings
from pipeline.errors import BadInput
from pipeline.store import Output, read_manifest, workspace_output
from pipeline.workspace import workspace_root
from stages.downstream.sequences import Sequences

CHECKPOINTS = "checkpoints"
BEST_FILE = "best.safetensors"
SCRATCH = (CHECKPOINTS, BEST_FILE)  # resume state: removed by the store once the run is published


def resolve(out: Output, ref: str, what: str) -> Path:
    """A run folder from `latest`, a run id in `out`, or a path.

    Raises:
        BadInput: the folder holds no complete run.
    """
    if ref == "latest":
        return out.require_latest(f"no published {what} run yet")
    path = Path(ref) if ("/" in ref or Path(ref).is_dir()) else out.run_dir(ref)
    read_manifest(path)
    return path


def outside_facts(folder: Path, **inputs: Path | None) -> dict[str, str]:
    """`<kind>_run_dir` for each input folder outside the workspace of the run built in `folder`: it cannot be
    found there by run id. Inputs inside it are named by run id alone, so the workspace can move."""
    root = workspace_root(folder)
    return {f"{kind}_run_dir": str(path.resolve()) for kind, path in inputs.items()
            if path is not None and not path.absolute().is_relative_to(root)}


def input_facts(folder: Path, dataset_dir: Path, dataset_run_id: str, embeddings: Embeddings | None) -> dict[str, Any]:
    """How the manifest of the downstream run built in `folder` names its dataset and embeddings runs."""
    return {"dataset_run_id": dataset_run_id, "embeddings_run_id": None if embeddings is None else embeddings.run_id,
            **outside_facts(folder, dataset=dataset_dir, embeddings=None if embeddings is None else embeddings.run_dir)}


def dataset_dir(config: PipelineConfig) -> Path:
    return workspace_output(config, "datasets").require_latest("no dataset yet (run `seqrec-pipeline prepare` first)")


def item_vectors(embeddings: Embeddings | None, seqs: Sequences,
                 config: DownstreamConfig) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The embeddings in dataset item order and which items have one (both None in ID-only mode).

    Any embeddings run that covers the dataset's items will do (matched by item id): stage one is keyed by
    the catalog, so one run serves every dataset run made over the same items.
    """
    if embeddings is None:
        return None, None
    return align_to_items(embeddings, seqs.item_ids, allow_missing=config.missing_items == "id_vector")


def embeddings_for(config: PipelineConfig, run_dir: Path | None = None) -> Embeddings | None:
    """The embeddings run `downstream.embeddings` names, or `run_dir` when a caller has just published one."""
    if config.downstream.embeddings is None:
        return None
    if run_dir is None:
        output = workspace_output(config, "embeddings")
        if config.downstream.embeddings == "latest" and output.latest() is None:
            raise BadInput(f"{output.path}: no published embeddings run yet; run `seqrec-pipeline align` first, "
                           "or set downstream.embeddings=null to train on item IDs alone")
        run_dir = resolve(output, config.downstream.embeddings, "embeddings")
    return read_embeddings(run_dir)


@dataclass
class Trained:
    """A published downstream run, loaded: its model (eval mode), data, config and manifest."""

    run_dir: Path
    model: nn.Module  # scores items as a `Recommender` does (`scores`, `user_vectors`, `items.all_items`)
    seqs: Sequences
    config: DownstreamConfig
    manifest: dict[str, Any]
