"""Finding stage two's inputs (dataset run, embeddings run) and loading a trained downstream run back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from pipeline.artifact_files import read_json, read_tensors
from pipeline.config import DownstreamConfig, PipelineConfig, saved_section
from pipeline.embeddings import Embeddings, align_to_items, read_embeddings
from pipeline.errors import BadInput
from pipeline.schema.renamed import upgrade_saved
from pipeline.store import Output, read_manifest, workspace_output
from pipeline.workspace import input_run, workspace_root
from stages.downstream.item_encoder import WHITENING
from stages.downstream.recommender import Recommender, build
from stages.downstream.sequences import Sequences, load_sequences

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
INDEX_FILE = "index.faiss"


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


def _run_config(path: Path) -> DownstreamConfig:
    """The downstream settings a run was trained with (settings added since at their old behaviour).

    Raises:
        BadInput: the file is unreadable or no longer a valid `downstream` section.
    """
    saved = read_json(path)
    if not isinstance(saved, dict):
        raise BadInput(f"{path}: not a downstream config (a JSON {type(saved).__name__}, not an object)")
    try:
        return DownstreamConfig.model_validate(saved_section("downstream", upgrade_saved("downstream", saved)))
    except ValidationError as exc:
        raise BadInput(f"{path}: not a valid downstream config ({exc.error_count()} problems, first: "
                       f"{'.'.join(map(str, exc.errors()[0]['loc']))}: {exc.errors()[0]['msg']})") from None


@dataclass
class Trained:
    """A published downstream run, loaded: its model (eval mode), data, config and manifest."""

    run_dir: Path
    model: Recommender  # for kind recformer a RecformerRecommender (the same scoring interface)
    seqs: Sequences
    config: DownstreamConfig
    manifest: dict[str, Any]


def load_trained(run_dir: Path) -> Trained:
    """Rebuild a run's model from its config, dataset and embeddings, and load its weights.

    Raises:
        BadInput: the run, its dataset or its embeddings are gone, or the weights do not fit them
            (e.g. embeddings of another dimension than the checkpoint was trained on).
    """
    manifest = read_manifest(run_dir)
    if manifest.get("kind") != "downstream":
        raise BadInput(f"{run_dir}: manifest kind is {manifest.get('kind')!r}, not 'downstream'")
    config = _run_config(run_dir / CONFIG_FILE)
    dataset = input_run(run_dir, manifest, "dataset")
    assert dataset is not None  # every downstream run is trained on a dataset run
    seqs = load_sequences(dataset)
    if config.model.kind == "recformer":  # loads its text encoder: imported only for this kind
        from stages.downstream import recformer_train

        return Trained(run_dir, recformer_train.load(run_dir, dataset), seqs, config, manifest)
    embeddings_dir = input_run(run_dir, manifest, "embeddings")
    embeddings = None if embeddings_dir is None else read_embeddings(embeddings_dir)
    if embeddings is not None and embeddings.dim != manifest["embedding_dim"]:
        raise BadInput(f"{embeddings.run_dir}: embeddings have dim {embeddings.dim}, but {run_dir / WEIGHTS_FILE} "
                       f"was trained on dim {manifest['embedding_dim']}")
    vectors, has = item_vectors(embeddings, seqs, config)
    model = build(config.model, seqs.num_items, vectors, has)
    try:
        missing, unexpected = model.load_state_dict(read_tensors(run_dir / WEIGHTS_FILE), strict=False)
        if unexpected or set(missing) - set(WHITENING):  # runs saved before the whitening was kept lack only it
            raise RuntimeError(f"missing {sorted(missing)}, unexpected {sorted(unexpected)}")
    except RuntimeError as exc:
        raise BadInput(f"{run_dir / WEIGHTS_FILE}: does not fit the model built from {CONFIG_FILE} "
                       f"({' '.join(str(exc).split())[:300]})") from None
    return Trained(run_dir, model.eval(), seqs, config, manifest)
