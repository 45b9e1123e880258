"""Full-ranking evaluation throughput: users ranked per second against every item, through the real
evaluation code (`stages.downstream.evaluate.evaluate_model`: SASRec user encoding, one matrix product
per batch, rank counting), and the scoring product's share of this machine's float32 matmul peak.

Run from the repository root: python -m benchmarks.evaluation_throughput [--users 100000 --items 100000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks import _results
from pipeline.config import EvaluateConfig, ModelConfig
from stages.downstream.evaluate import evaluate_model
from stages.downstream.recommender import build
from stages.downstream.sequences import Sequences


def synthetic(users: int, items: int, history: int, seed: int) -> Sequences:
    """`users` sequences of `history` train items + a valid and a test item, drawn uniformly."""
    rng = np.random.default_rng(seed)
    length = history + 2
    flat = rng.integers(1, items + 1, size=users * length)
    offsets = np.arange(users + 1, dtype=np.int64) * length
    return Sequences([f"i{i}" for i in range(items)], [f"u{u}" for u in range(users)], offsets, flat,
                     np.full(users, history), flat[offsets[:-1] + history], flat[offsets[:-1] + history + 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--history", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args()
    torch.manual_seed(0)
    peak = _results.matmul_peak_gflops()
    seqs = synthetic(args.users, args.items, args.history, seed=0)
    model = build(ModelConfig(kind="sasrec", hidden_size=args.dim, layers=2, heads=2, dropout=0.2, max_length=50,
                              pooling="attention", adapter="linear", id_embedding=False, freeze_embeddings=True),
                  args.items, None, None)
    config = EvaluateConfig(ks=[10, 50], mask_history=False, batch_size=args.batch_size)
    started = time.perf_counter()
    evaluate_model(model, seqs, "test", config, max_length=50)
    seconds = time.perf_counter() - started
    scoring_gflops = 2 * args.users * args.items * args.dim / seconds / 1e9
    results = {"users": args.users, "items": args.items, "dim": args.dim, "history": args.history,
               "batch_size": args.batch_size, "seconds": round(seconds, 2),
               "users_per_s": round(args.users / seconds, 1),
               "scoring_gflops": round(scoring_gflops, 2), "matmul_peak_gflops": round(peak, 2),
               "fraction_of_matmul_peak": round(scoring_gflops / peak, 3)}
    _results.write("evaluation_throughput", results, [
        ("users x items, dim", f"{args.users:,} x {args.items:,}, {args.dim}"),
        ("users/s (full ranking, SASRec encoding included)", f"{results['users_per_s']:,.0f}"),
        ("scoring GFLOP/s (2·U·N·d / wall time)", f"{scoring_gflops:.1f}"),
        ("float32 matmul peak GFLOP/s (4096², same run)", f"{peak:.1f}"),
        ("fraction of matmul peak", f"{results['fraction_of_matmul_peak']:.2f}")])


if __name__ == "__main__":
    main()
