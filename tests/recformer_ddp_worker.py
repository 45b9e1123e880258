"""Run under `torchrun --nproc_per_node 2` (CPU, gloo): Recformer's cross-process pieces against one process.

Usage: recformer_ddp_worker.py DATASET_RUN_DIR RESULT_JSON. Rank 0 writes what it measured.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from transformers import BertConfig, BertModel

from pipeline.config import load_config
from stages.recformer import build
from stages.recformer.data import load_corpus
from stages.recformer.encode import encode_catalog, item_table
from stages.recformer.finetune import finetune
from stages.recformer.pretrain import pretrain


def weight_checksums(encoder: torch.nn.Module, accelerator: Accelerator) -> list[float]:
    """Each process's sum of all its weights: equal when DDP kept the processes in step."""
    checksum = torch.cat([p.detach().flatten() for p in encoder.parameters()]).double().sum().reshape(1)
    return accelerator.gather(checksum.to(accelerator.device)).tolist()


def main(run_dir: Path, result: Path) -> None:
    torch.set_num_threads(1)
    accelerator = Accelerator(cpu=True)
    overrides = {"max_items": 8, "max_tokens": 64, "pretrain.batch_size": 8, "pretrain.max_steps": 3,
                 "finetune.epochs": 1, "finetune.frozen_items_epochs": 0, "encode.batch_size": 128}
    config = load_config(None, [f"recformer.{k}={v}" for k, v in overrides.items()]).recformer
    tokenizer = build.load_tokenizer(config)
    torch.manual_seed(0)  # the same initial weights on every process
    backbone = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64, max_position_embeddings=128))
    encoder = build.build_encoder(backbone, config).to(accelerator.device)
    items, splits = load_corpus([run_dir], None, tokenizer, config.max_attribute_tokens, ["train", "valid"])
    fmt = build.sequence_format(items, tokenizer, config)

    sharded = item_table(encoder, fmt, 128, 300, accelerator).cpu().numpy()
    whole = np.concatenate([v for _, v in encode_catalog(encoder, fmt, 128, 10_000)])
    table_error = float(np.abs(sharded - whole).max())

    _, position = pretrain(encoder, fmt, splits["train"], tokenizer.mask_token_id,
                          config.temperature, config.pretrain, accelerator)
    checksums = weight_checksums(encoder, accelerator)

    calls = itertools.count()  # each validation scores higher: the fine-tuned weights are kept
    tuned = finetune(encoder, fmt, splits["train"].subset(slice(32)), splits["valid"],
                     lambda users, table: float(len(users) + len(table) + next(calls)),
                     config.temperature, config.finetune, config.encode, accelerator)
    tuned_checksums = weight_checksums(encoder, accelerator)
    if accelerator.is_main_process:
        result.write_text(json.dumps({"processes": accelerator.num_processes, "table_error": table_error,
                                      "table_rows": len(sharded), "items": len(items), "steps": len(position.history),
                                      "checksums": checksums, "finetune_score": tuned.best_score,
                                      "finetune_epochs": len(tuned.history), "tuned_checksums": tuned_checksums}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
