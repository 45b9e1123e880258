"""Recformer's stage-one entry point (`align.method: recformer`): pretrain the encoder on one or more datasets,
then embed items.

The catalog of `data.name` comes first in the pretraining corpus, so its items are rows 0..N-1 of the
corpus' token cache and a dataset row is its corpus row. Each item is encoded alone (a one-item
sequence), as Recformer scores items. The encoder is saved with the run (`encoder/`), so an
incremental run embeds new items with it and no training, and fine-tuning starts from it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from accelerate import Accelerator
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from pipeline.config import PipelineConfig, RecformerConfig
from pipeline.contracts.history import write_history
from pipeline.run_ids import fingerprint
from pipeline.store import read_manifest, workspace_output
from stages.align.dist import my_range
from stages.align.method import CHECKPOINTS, MODEL_PLACES, STAGE_READS, AlignPlan, Embedded, check_dim, mean
from stages.recformer import build, checkpoint
from stages.recformer.data import load_corpus
from stages.recformer.encode import encode_catalog
from stages.recformer.model import RecformerEncoder
from stages.recformer.pretrain import pretrain


def pretraining_datasets(config: PipelineConfig) -> list[Path]:
    """The latest runs of `recformer.pretrain.datasets` (data.name itself is not listed here).

    Raises:
        BadInput: a named dataset has no published run.
    """
    return [workspace_output(config, "datasets", name).require_latest(
        f"recformer.pretrain.datasets: no dataset {name!r} yet (run `prepare` for it first)")
            for name in config.recformer.pretrain.datasets]


def dataset_run_ids(dirs: list[Path]) -> list[str]:
    return [read_manifest(folder)["run_id"] for folder in dirs]


@dataclass
class Encoded:
    vectors: np.ndarray  # (this process's share of rows, H) float32: rows[offset:offset + len(vectors)]
    offset: int
    encoder: RecformerEncoder
    tokenizer: PreTrainedTokenizerBase
    facts: dict[str, object]
    history: list[dict[str, float]]  # pretraining, per step (empty when nothing was pretrained)


def _start(config: RecformerConfig, base_dir: Path | None) -> tuple[RecformerEncoder, PreTrainedTokenizerBase]:
    """The base run's encoder (incremental), else the configured model or checkpoint."""
    if base_dir is not None:
        folder = base_dir / checkpoint.ENCODER_DIR
        return checkpoint.load_encoder(folder), AutoTokenizer.from_pretrained(folder)
    return build.load_encoder(config), build.load_tokenizer(config)


def embed(accelerator: Accelerator, config: RecformerConfig, dataset_dirs: list[Path], rows: list[int],
          base_dir: Path | None, checkpoints: Path, checkpoint_every: int) -> Encoded:
    """Pretrain (unless incremental or `pretrain.epochs` is 0), then encode dataset rows `rows` of dataset_dirs[0].

    Every process pretrains its share (DDP), resuming from a complete checkpoint in `checkpoints`, then
    encodes its share of the rows (its part of the run).
    """
    encoder, tokenizer = _start(config, base_dir)
    train = base_dir is None and config.pretrain.epochs != 0
    corpus = dataset_dirs if train else dataset_dirs[:1]
    items, splits = load_corpus(corpus, config.attributes, tokenizer, config.max_attribute_tokens,
                                ["train"] if train else [])
    fmt = build.sequence_format(items, tokenizer, config)
    facts: dict[str, object] = {"evidence": {}}
    history: list[dict[str, float]] = []
    if train:
        _, position = pretrain(encoder, fmt, splits["train"], tokenizer.mask_token_id, config.temperature,
                               config.pretrain, accelerator, checkpoints, checkpoint_every)
        history = position.history
        facts["training"] = {"steps": len(history), "resumed_from_step": position.resumed_from, "examples": len(splits["train"]), "corpus_items": len(items),
                             **{f"{edge}_{name}": mean([h[name] for h in part]) for edge, part in
                                (("first", history[:5]), ("last", history[-5:]))
                                for name in ("loss", "contrastive", "mlm")}}
    encoder.to(accelerator.device)
    share = my_range(accelerator, len(rows))  # each process encodes its share and writes it as its part
    local = np.empty((len(share), encoder.hidden_size), np.float32)
    done = 0
    for _, chunk in encode_catalog(encoder, fmt, config.encode.batch_size, config.encode.chunk_items,
                                   np.asarray(rows, np.int64)[share.start:share.stop]):
        local[done:done + len(chunk)] = chunk
        done += len(chunk)
    return Encoded(local, share.start, encoder, tokenizer, facts, history)


def save(embedded: Encoded, folder: Path) -> None:
    checkpoint.save_encoder(embedded.encoder, embedded.tokenizer, folder / checkpoint.ENCODER_DIR)
    write_history(folder, embedded.history)


@dataclass(frozen=True)
class RecformerMethod:
    """Recformer as stage one's method table asks for it (`stages.align.method.Method`)."""

    def model_name(self, config: PipelineConfig) -> str:
        return build.model_name(config.recformer)

    def pooling(self, config: PipelineConfig) -> str:
        return config.recformer.pooling

    def model_identity(self, config: PipelineConfig) -> None:
        return None  # no frozen model: the starting checkpoint is a full run's input (`full_run_inputs`)

    def settings_read(self, config: PipelineConfig) -> list[object]:
        # The align settings enter by their own fingerprint, and where a frozen model would be found
        # (MODEL_PLACES) with them, as run ids were first made: kept so that published runs keep their ids.
        align = config.align.model_dump(mode="json", include=STAGE_READS | MODEL_PLACES)
        return [fingerprint(align), config.recformer.model_dump(mode="json", exclude={"finetune"})]

    def pretrain_dirs(self, config: PipelineConfig) -> list[Path]:
        return pretraining_datasets(config)

    def full_run_inputs(self, config: PipelineConfig, dataset_run: str, pretrain_dirs: list[Path]) -> list[object]:
        # pretrains on the train split (the dataset run) from the starting model
        return [dataset_run, checkpoint.model_identity(config.recformer), *dataset_run_ids(pretrain_dirs)]

    def describe(self, config: PipelineConfig, items: int) -> str:
        return ""

    def embed(self, accelerator: Accelerator, config: PipelineConfig, planned: AlignPlan, dataset_dir: Path,
              folder: Path) -> Embedded:
        recformer = config.recformer
        encoded = embed(accelerator, recformer, [dataset_dir, *planned.pretrain_dirs], planned.rows.train,
                        planned.base_dir, folder / CHECKPOINTS, config.align.checkpoint_every)
        check_dim(planned.base, encoded.vectors.shape[1])
        facts = {**encoded.facts, "pretrain_datasets": dict(zip(recformer.pretrain.datasets,
                                                                 dataset_run_ids(planned.pretrain_dirs)))}
        return Embedded(encoded.vectors, facts, self.model_name(config), None, lambda out: save(encoded, out),
                        encoded.offset)

    def carry_over(self, planned: AlignPlan, folder: Path) -> None:
        assert planned.base_dir is not None  # nothing to embed happens only over a base run
        shutil.copytree(planned.base_dir / checkpoint.ENCODER_DIR, folder / checkpoint.ENCODER_DIR)
