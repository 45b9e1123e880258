"""Recformer's stage-two entry point (`downstream.model.kind: recformer`): the paper's two-stage fine-tuning.

Unlike the other kinds this one loads a text encoder: the Recformer checkpoint of the embeddings run
(`encoder/`, written by `align.method: recformer`), or `recformer.model` when `downstream.embeddings`
is null. Epochs are chosen by valid NDCG@K (the first K) from the standard full-ranking evaluation;
test is scored once, at the end. With `recformer.finetune.epochs` and `frozen_items_epochs` both 0 the
encoder is evaluated as it is (zero-shot). Stage two's kind table imports it only for this kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from pipeline.artifact_files import read_json, read_tensors
from pipeline.config import DownstreamConfig, PipelineConfig, RecformerConfig
from pipeline.contracts import downstream as downstream_run
from pipeline.contracts.embeddings import Embeddings
from pipeline.contracts.history import write_history
from pipeline.errors import BadInput
from pipeline.schema.renamed import upgrade_saved
from pipeline.store import write_json_atomic
from stages.accelerator import stage_accelerator
from stages.downstream import runs
from stages.downstream.evaluate import check_splits, evaluate_all, evaluate_scores, split_users
from stages.downstream.item_index import build_index
from stages.downstream.sequences import Sequences, load_sequences
from stages.downstream.warm_start import WarmStart
from stages.recformer import build, checkpoint
from stages.recformer.data import Examples, load_corpus
from stages.recformer.finetune import finetune
from stages.recformer.inputs import SequenceFormat
from stages.recformer.model import RecformerEncoder
from stages.recformer.recommender import RecformerRecommender

TABLE_FILE = "item_table.safetensors"
RECFORMER_FILE = "recformer.json"


def examples(seqs: Sequences, split: str) -> Examples:
    """Recformer examples over the dataset's sequences (catalog index = item - 1).

    "train": every train item with an earlier item; "valid" / "test": one per `split_users(seqs, split)`,
    in that order, its history every item before the target (as the standard evaluation reads it).
    """
    items = seqs.items - 1
    user_ids = np.asarray(seqs.user_ids, dtype=object)
    if split == "train":
        owner = np.repeat(np.arange(len(seqs.user_ids)), np.diff(seqs.offsets))
        where = np.arange(len(items)) - seqs.starts[owner]
        chosen = np.flatnonzero((where >= 1) & (where < seqs.n_train[owner]))
        return Examples(items, seqs.starts[owner[chosen]], chosen.astype(np.int64), user_ids[owner[chosen]])
    users = split_users(seqs, split)
    return Examples(items, seqs.starts[users], seqs.split_end(split)[users].astype(np.int64), user_ids[users])


def _encoder_folder(config: PipelineConfig, embeddings: Embeddings | None) -> str:
    """Where fine-tuning starts: the embeddings run's encoder, or `recformer.model` without embeddings."""
    if embeddings is None:
        return build.model_path(config.recformer.model)
    folder = embeddings.run_dir / checkpoint.ENCODER_DIR
    if not checkpoint.is_checkpoint(folder):
        raise BadInput(f"{embeddings.run_dir}: no Recformer encoder (method {embeddings.manifest.get('method')!r}); "
                       "align with align.method=recformer, or set downstream.embeddings=null to start from "
                       "recformer.model")
    return str(folder)


def _load(config: RecformerConfig, folder: str) -> tuple[RecformerEncoder, PreTrainedTokenizerBase]:
    start = config.model_copy(update={"model": folder})
    return build.load_encoder(start), build.load_tokenizer(start)


def _format(config: RecformerConfig, dataset_dir: Path, tokenizer: PreTrainedTokenizerBase) -> SequenceFormat:
    items, _ = load_corpus([dataset_dir], config.attributes, tokenizer, config.max_attribute_tokens, [])
    return build.sequence_format(items, tokenizer, config)


def train(folder: Path, config: PipelineConfig, dataset_dir: Path, dataset_run_id: str,
          embeddings: Embeddings | None) -> dict[str, Any]:
    """Fine-tune, evaluate (model and popularity, valid and test) and write the run's files; returns manifest facts."""
    downstream, recformer = config.downstream, config.recformer
    seqs = load_sequences(dataset_dir)
    check_splits(seqs, dataset_dir)
    start = _encoder_folder(config, embeddings)
    encoder, tokenizer = _load(recformer, start)
    fmt = _format(recformer, dataset_dir, tokenizer)
    valid = examples(seqs, "valid")
    metric = f"ndcg@{downstream.evaluate.ks[0]}"

    def valid_score(user_vectors: torch.Tensor, table: torch.Tensor) -> float:
        rows = np.empty(len(seqs.user_ids), np.int64)
        rows[split_users(seqs, "valid")] = np.arange(len(valid))  # valid examples are in split_users order
        # Cosine similarity = the product of unit vectors, so the blocked ranking serves here too.
        users_unit, table_unit = F.normalize(user_vectors, dim=-1), F.normalize(table, dim=-1)
        return evaluate_scores(lambda users, _: users_unit[rows[users]], table_unit,
                               seqs, "valid", downstream.evaluate)[metric]

    accelerator = stage_accelerator(recformer.finetune.mixed_precision)
    train_examples = examples(seqs, "train")
    result = finetune(encoder, fmt, train_examples, valid, valid_score, recformer.temperature,
                      recformer.finetune, recformer.encode, accelerator, folder / runs.CHECKPOINTS)
    model = RecformerRecommender(accelerator.unwrap_model(encoder), fmt, result.table).to(accelerator.device)
    metrics = evaluate_all(model, seqs, downstream.evaluate, downstream.model.max_length)
    best_epoch = next((f"stage {h['stage']} epoch {h['epoch']}" for h in result.history
                       if h["score"] == result.best_score), "before fine-tuning")
    if accelerator.is_main_process:
        _export(folder, model, tokenizer, config, {**metrics, "best_epoch": best_epoch, "history": result.history})
        write_history(folder, [{**record, "best": f"stage {record['stage']} epoch {record['epoch']}" == best_epoch}
                               for record in result.history])
    accelerator.wait_for_everyone()
    return {
        "kind": "downstream", "model": "recformer", "seed": recformer.finetune.seed,
        **runs.input_facts(folder, dataset_dir, dataset_run_id, embeddings),
        "embeddings_method": None if embeddings is None else embeddings.manifest.get("method"),
        "embedding_dim": encoder.hidden_size, "items_without_embedding": 0, "encoder_start": start,
        "zero_shot": recformer.finetune.epochs + recformer.finetune.frozen_items_epochs == 0,
        "num_items": seqs.num_items, "epochs": len(result.history), "best_epoch": best_epoch,
        "mixed_precision": accelerator.mixed_precision,
        "users": {"total": len(seqs.user_ids), "trained_on": len(np.unique(train_examples.user_ids))},
        "metrics": {"valid": metrics["model"]["valid"], "test": metrics["model"]["test"]},
    }


def _export(folder: Path, model: RecformerRecommender, tokenizer: PreTrainedTokenizerBase, config: PipelineConfig,
            metrics: dict[str, Any]) -> None:
    """The encoder (checkpoint folder), its item table, both configs, metrics and the item index."""
    model = model.cpu()
    checkpoint.save_encoder(model.encoder, tokenizer, folder / checkpoint.ENCODER_DIR)
    save_file({"table": model.items.all_items().contiguous()}, str(folder / TABLE_FILE))
    downstream_run.write_config(folder, config.downstream.model_dump(mode="json"))
    write_json_atomic(folder / RECFORMER_FILE, config.recformer.model_dump(mode="json"))
    downstream_run.write_metrics(folder, metrics)
    downstream_run.write_index(folder, build_index(model.items.all_items().numpy(), config.downstream.index))


def load(run_dir: Path, dataset_dir: Path) -> RecformerRecommender:
    """A published recformer run as a recommender (eval mode) over its dataset."""
    recformer = RecformerConfig.model_validate(upgrade_saved("recformer", read_json(run_dir / RECFORMER_FILE)))
    encoder = checkpoint.load_encoder(run_dir / checkpoint.ENCODER_DIR)
    tokenizer = AutoTokenizer.from_pretrained(run_dir / checkpoint.ENCODER_DIR)
    table = read_tensors(run_dir / TABLE_FILE)["table"]
    return RecformerRecommender(encoder, _format(recformer, dataset_dir, tokenizer), table).eval()


# The `downstream` settings a recformer run reads; its encoder and training are the `recformer` section's,
# so changing SASRec's settings does not re-train Recformer (hours on a CPU).
# The embeddings run counts by its id (an input), not by the path or word that named it.
READ = {"model": {"kind", "max_length"}, "missing_items": True, "evaluate": True, "index": True}


@dataclass(frozen=True)
class RecformerKind:
    """Recformer as stage two's kind table asks for it (`stages.downstream.kinds.Kind`)."""

    def settings_read(self, config: PipelineConfig) -> dict[str, Any]:
        return config.downstream.model_dump(mode="json", include=READ)

    def other_inputs(self, config: PipelineConfig) -> list[object]:
        return [config.recformer.model_dump(mode="json"), checkpoint.model_identity(config.recformer)]

    def warm_source(self, config: PipelineConfig, dataset_run_id: str,
                    embeddings: Embeddings | None) -> WarmStart | None:
        return None  # fine-tuning starts from the embeddings run's encoder, never from an earlier run

    def train(self, folder: Path, config: PipelineConfig, dataset_dir: Path, dataset_run_id: str,
              embeddings: Embeddings | None, warm: WarmStart | None) -> dict[str, Any]:
        return train(folder, config, dataset_dir, dataset_run_id, embeddings)

    def load(self, run_dir: Path, manifest: dict[str, Any], config: DownstreamConfig, dataset_dir: Path,
             seqs: Sequences) -> nn.Module:
        return load(run_dir, dataset_dir)


RECFORMER = RecformerKind()
