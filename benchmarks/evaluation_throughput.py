"""Full-ranking evaluation throughput: users ranked per second against every item, and the scoring
stage's share of this machine's float32 matmul peak.

Two figures, because they are limited by different things:
- the scoring+ranking stage (`pipeline.metrics.BlockedRanks`, as `evaluate` runs it: one blocked product
  of user vectors with every item, rank counting per tile) on user vectors computed beforehand; this is
  the "matrix product plus top-K" whose FLOPs (2·U·N·d) are compared with the matmul peak;
- end to end through the real evaluation code (`stages.downstream.evaluate.evaluate_model`), SASRec
  user encoding included.

The matmul peak is measured in the same run, before and after, and the higher one is used.
The SASRec is the product's default (`pipeline.yaml`), ID-only, `--dim` wide.

Run from the repository root: python -m benchmarks.evaluation_throughput [--users 100000 --items 100000]
"""

from __future__ import annotations

import time

import numpy as np
import torch

from benchmarks import _args, _results
from pipeline.config import load_config
from pipeline.metrics import BlockedRanks
from stages.downstream.evaluate import ITEM_BLOCK, evaluate_model, split_users
from stages.downstream.kinds import build_recommender
from stages.downstream.recommender import Recommender
from stages.downstream.sequences import Sequences, padded


def synthetic(users: int, items: int, history: int, seed: int) -> Sequences:
    """`users` sequences of `history` train items + a valid and a test item, drawn uniformly."""
    rng = np.random.default_rng(seed)
    length = history + 2
    flat = rng.integers(1, items + 1, size=users * length)
    offsets = np.arange(users + 1, dtype=np.int64) * length
    return Sequences([f"i{i}" for i in range(items)], [f"u{u}" for u in range(users)], offsets, flat,
                     np.full(users, history), flat[offsets[:-1] + history], flat[offsets[:-1] + history + 1])


@torch.no_grad()
def encode_users(model: Recommender, seqs: Sequences, users: np.ndarray, batch_size: int,
                 max_length: int) -> torch.Tensor:
    """(U, H) test-time user vectors, batch by batch as `evaluate_model` makes them."""
    ends = seqs.split_end("test")[users]
    return torch.cat([model.user_vectors(torch.from_numpy(padded(seqs, users[s:s + batch_size], ends[s:s + batch_size],
                                                                 max_length)))
                      for s in range(0, len(users), batch_size)])


def time_ranking(vectors: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Scoring+ranking every user: (total seconds, median seconds per batch of `batch_size` users)."""
    rank = BlockedRanks(items, ITEM_BLOCK)
    per_batch = []
    for start in range(0, len(vectors), batch_size):
        began = time.perf_counter()
        rank(vectors[start:start + batch_size], targets[start:start + batch_size])
        per_batch.append(time.perf_counter() - began)
    return sum(per_batch), float(np.median(per_batch[:-1] or per_batch))  # the last batch may be short


@_args.reports_errors
def main() -> None:
    parser = _args.parser(__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--history", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=1024)
    _args.add_peak_size(parser)
    args = parser.parse_args()
    torch.manual_seed(0)
    peak_before = _results.matmul_peak_gflops(args.peak_size)
    seqs = synthetic(args.users, args.items, args.history, seed=0)
    # The product's own defaults (pipeline.yaml), ID-only: a setting added there reaches this benchmark too.
    config = load_config(None, ["downstream.embeddings=null", f"downstream.model.hidden_size={args.dim}",
                                f"downstream.evaluate.batch_size={args.batch_size}"]).downstream
    model = build_recommender(config.model, args.items, None, None).eval()
    max_length = config.model.max_length
    users = split_users(seqs, "test")
    started = time.perf_counter()
    vectors = encode_users(model, seqs, users, args.batch_size, max_length)
    encode_seconds = time.perf_counter() - started
    with torch.no_grad():
        items = model.items.all_items()
    targets = torch.from_numpy(seqs.test[users] - 1)
    rank_seconds, batch_seconds = time_ranking(vectors, items, targets, args.batch_size)
    started = time.perf_counter()
    evaluate_model(model, seqs, "test", config.evaluate, max_length=max_length)
    end_to_end_seconds = time.perf_counter() - started
    peak_after = _results.matmul_peak_gflops(args.peak_size)
    peak = max(peak_before, peak_after)
    flops = 2 * len(users) * args.items * args.dim
    results = {"users": len(users), "items": args.items, "dim": args.dim, "history": args.history,
               "model": config.model.model_dump(mode="json"),
               "batch_size": args.batch_size, "item_block": ITEM_BLOCK,
               "ranking_seconds": round(rank_seconds, 2),
               "users_per_s": round(len(users) / rank_seconds, 1),
               "scoring_gflops": round(flops / rank_seconds / 1e9, 2),
               "matmul_peak_gflops": round(peak, 2),
               "matmul_peak_gflops_before_after": [round(peak_before, 2), round(peak_after, 2)],
               "fraction_of_matmul_peak": round(flops / rank_seconds / 1e9 / peak, 3),
               "median_batch_users_per_s": round(args.batch_size / batch_seconds, 1),
               "median_batch_fraction_of_matmul_peak": round(flops / len(users) * args.batch_size / batch_seconds / 1e9 / peak, 3),
               "encoding_seconds": round(encode_seconds, 2),
               "end_to_end_seconds": round(end_to_end_seconds, 2),
               "end_to_end_users_per_s": round(len(users) / end_to_end_seconds, 1)}
    _results.write("evaluation_throughput", results, [
        ("users x items, dim", f"{len(users):,} x {args.items:,}, {args.dim}"),
        ("users/s, scoring+ranking (blocked product + rank counting)", f"{results['users_per_s']:,.0f}"),
        ("scoring GFLOP/s (2·U·N·d / ranking wall time)", f"{results['scoring_gflops']:.1f}"),
        (f"float32 matmul peak GFLOP/s ({args.peak_size}², same run, best of before/after)", f"{peak:.1f}"),
        ("fraction of matmul peak (scoring+ranking)", f"{results['fraction_of_matmul_peak']:.2f}"),
        ("fraction of matmul peak, median batch", f"{results['median_batch_fraction_of_matmul_peak']:.2f}"),
        ("users/s end to end (SASRec encoding included)", f"{results['end_to_end_users_per_s']:,.0f}"),
        ("SASRec encoding alone, seconds", f"{encode_seconds:.1f}")])


if __name__ == "__main__":
    main()
