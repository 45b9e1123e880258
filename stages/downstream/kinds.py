"""Stage two's model kinds (`downstream.model.kind`): one table names them, each says what it reads and does.

A kind is asked once, where a run starts; the stage then calls it. A sequence kind is a sequence model over
the item side (ID vectors or frozen embeddings through an adapter), trained by `fit`: adding one takes its
model's file and a line in `KINDS` (the config takes any name; this table refuses an unknown one, and the main
job asks it before any stage runs). Recformer, which fine-tunes a text encoder, lives in `stages/recformer/`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from torch import nn

from pipeline.config import DownstreamConfig, ModelConfig, PipelineConfig
from pipeline.contracts import downstream as downstream_run
from pipeline.contracts.embeddings import Embeddings, read_embeddings
from pipeline.errors import BadInput
from pipeline.store import read_manifest
from pipeline.workspace import input_run
from stages.downstream import fit, runs, warm_start
from stages.downstream.gru4rec import GRU4Rec
from stages.downstream.item_encoder import WHITENING
from stages.downstream.recommender import Recommender, build
from stages.downstream.said_light import SAIDLight
from stages.downstream.sasrec import SASRec
from stages.downstream.sequences import Sequences, load_sequences
from stages.downstream.warm_start import WarmStart


class Kind(Protocol):
    """What stage two asks of a model kind."""

    def settings_read(self, config: PipelineConfig) -> dict[str, Any]:
        """The `downstream` settings its runs read: the run id hashes exactly these."""

    def other_inputs(self, config: PipelineConfig) -> list[object]:
        """What else its runs read (other config sections, a starting model's identity), hashed after the inputs."""

    def warm_source(self, config: PipelineConfig, dataset_run_id: str,
                    embeddings: Embeddings | None) -> WarmStart | None:
        """The earlier run a `downstream.train.init: previous` run starts from (None: a fresh start)."""

    def train(self, folder: Path, config: PipelineConfig, dataset_dir: Path, dataset_run_id: str,
              embeddings: Embeddings | None, warm: WarmStart | None) -> dict[str, Any]:
        """Train, evaluate and write the run's files into `folder`; the manifest's facts."""

    def load(self, run_dir: Path, manifest: dict[str, Any], config: DownstreamConfig, dataset_dir: Path,
             seqs: Sequences) -> nn.Module:
        """A published run's model in eval mode, scoring as a `Recommender` does."""


@dataclass(frozen=True)
class SequenceKind:
    """A sequence model over the item side, built from `downstream.model` by `sequence` (flat arguments)."""

    sequence: Callable[[ModelConfig], nn.Module]

    def settings_read(self, config: PipelineConfig) -> dict[str, Any]:
        # full_softmax_max_items is read only to resolve `loss: auto`, and the resolved loss is hashed; the
        # embeddings run counts by its id (an input), not by the path or word (`latest`) that named it
        return config.downstream.model_dump(mode="json", exclude={"embeddings": True,
                                                                   "train": {"full_softmax_max_items"}})

    def other_inputs(self, config: PipelineConfig) -> list[object]:
        return []

    def recommender(self, config: ModelConfig, num_items: int, embeddings: np.ndarray | None,
                    has_embedding: np.ndarray | None) -> Recommender:
        return build(config, self.sequence, num_items, embeddings, has_embedding)

    def warm_source(self, config: PipelineConfig, dataset_run_id: str,
                    embeddings: Embeddings | None) -> WarmStart | None:
        found = warm_start.find_source(config, dataset_run_id, embeddings)
        if found is None:
            return None
        def read() -> tuple[dict[str, Any], list[str]]:
            # Loaded as a run, not its weights file alone: a run saved before its whitening was kept gets it
            # recomputed from its own embeddings, the table its adapter was trained on.
            source = load_trained(found.run_dir)
            return source.model.state_dict(), source.seqs.item_ids

        return WarmStart(found.run_id, read)

    def train(self, folder: Path, config: PipelineConfig, dataset_dir: Path, dataset_run_id: str,
              embeddings: Embeddings | None, warm: WarmStart | None) -> dict[str, Any]:
        return fit.train(folder, config.downstream, dataset_dir, dataset_run_id, embeddings, warm, self.recommender)

    def load(self, run_dir: Path, manifest: dict[str, Any], config: DownstreamConfig, dataset_dir: Path,
             seqs: Sequences) -> nn.Module:
        embeddings_dir = input_run(run_dir, manifest, "embeddings")
        embeddings = None if embeddings_dir is None else read_embeddings(embeddings_dir)
        weights = run_dir / downstream_run.WEIGHTS_FILE
        if embeddings is not None and embeddings.dim != manifest["embedding_dim"]:
            raise BadInput(f"{embeddings.run_dir}: embeddings have dim {embeddings.dim}, but {weights} "
                           f"was trained on dim {manifest['embedding_dim']}")
        model = self.recommender(config.model, seqs.num_items, *runs.item_vectors(embeddings, seqs, config))
        try:
            missing, unexpected = model.load_state_dict(downstream_run.read_weights(run_dir), strict=False)
            if unexpected or set(missing) - set(WHITENING):  # runs saved before the whitening was kept lack only it
                raise RuntimeError(f"missing {sorted(missing)}, unexpected {sorted(unexpected)}")
        except RuntimeError as exc:
            raise BadInput(f"{weights}: does not fit the model built from {downstream_run.CONFIG_FILE} "
                           f"({' '.join(str(exc).split())[:300]})") from None
        return model.eval()


def _recformer() -> Kind:
    """Recformer's kind lives with Recformer. It loads a text encoder (transformers), so it is imported only
    when a run asks for it: the sequence kinds never import it (tests/test_import_graph.py checks)."""
    from stages.recformer.downstream import RECFORMER

    return RECFORMER


# Kinds whose code is a module of its own, imported only for their runs: left out of the other kinds' code
# identity (pipeline/run_ids.py), so a change to Recformer never redoes a SASRec run. The sequence kinds share
# their training code, and so one identity.
OWN_CODE = {"recformer": "stages.recformer.downstream"}

# Each entry gives its kind when asked (Recformer's is imported then).
KINDS: dict[str, Callable[[], Kind]] = {
    "sasrec": lambda: SequenceKind(lambda c: SASRec(c.hidden_size, c.layers, c.heads, c.dropout, c.max_length,
                                                    c.feedforward_size or 4 * c.hidden_size, c.norm, c.positions)),
    "gru4rec": lambda: SequenceKind(lambda c: GRU4Rec(c.hidden_size, c.layers, c.dropout)),
    "said_light": lambda: SequenceKind(lambda c: SAIDLight(c.hidden_size, c.layers, c.dropout, c.max_length,
                                                           c.pooling)),
    "recformer": _recformer,
}


def kind_of(name: str) -> Kind:
    """The kind `downstream.model.kind` names.

    Raises:
        BadInput: no kind of that name.
    """
    if name not in KINDS:
        raise BadInput(f"downstream.model.kind: no model kind {name!r} (known: {', '.join(KINDS)})")
    return KINDS[name]()


def build_recommender(config: ModelConfig, num_items: int, embeddings: np.ndarray | None,
                      has_embedding: np.ndarray | None) -> Recommender:
    """A sequence kind's recommender, untrained (tests and benchmarks build one without a run).

    Raises:
        BadInput: `config.kind` is no sequence kind.
    """
    kind = kind_of(config.kind)
    if not isinstance(kind, SequenceKind):
        raise BadInput(f"downstream.model.kind: {config.kind!r} is no sequence model over item vectors "
                       f"(those are: {', '.join(name for name in KINDS if isinstance(kind_of(name), SequenceKind))})")
    return kind.recommender(config, num_items, embeddings, has_embedding)


def load_trained(run_dir: Path) -> runs.Trained:
    """A published downstream run of any kind, its model loaded by its kind.

    Raises:
        BadInput: the run, its dataset or its embeddings are gone, or the weights do not fit them
            (e.g. embeddings of another dimension than the checkpoint was trained on).
    """
    manifest = read_manifest(run_dir)
    if manifest.get("kind") != "downstream":
        raise BadInput(f"{run_dir}: manifest kind is {manifest.get('kind')!r}, not 'downstream'")
    config = downstream_run.read_config(run_dir)
    dataset = input_run(run_dir, manifest, "dataset")
    assert dataset is not None  # every downstream run is trained on a dataset run
    seqs = load_sequences(dataset)
    model = kind_of(config.model.kind).load(run_dir, manifest, config, dataset, seqs)
    return runs.Trained(run_dir, model, seqs, config, manifest)
