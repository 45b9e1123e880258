"""Online recommendation latency: one user's history -> top-10 of 100k items, on one CPU thread, through
`stages.downstream.recommend.Online` (SASRec user encoding + HNSW inner-product search + history filter).

Run from the repository root: python -m benchmarks.recommend_latency [--items 100000 --calls 2000]
"""

from __future__ import annotations

import time
from pathlib import Path

import faiss
import numpy as np
import torch

from benchmarks import _args, _results
from benchmarks.evaluation_throughput import synthetic
from pipeline.config import load_config
from stages.downstream.item_index import build_index
from stages.downstream.kinds import build_recommender
from stages.downstream.recommend import Online
from stages.downstream.runs import Trained

TARGET_P99_MS = 5.0


@_args.reports_errors
def main() -> None:
    parser = _args.parser(__doc__)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--history", type=int, default=20)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    torch.manual_seed(0)
    config = load_config(None, ["downstream.embeddings=null", "downstream.index.kind=hnsw"]).downstream
    seqs = synthetic(args.calls, args.items, args.history, seed=0)
    model = build_recommender(config.model, args.items, None, None).eval()
    started = time.perf_counter()
    with torch.no_grad():
        index = build_index(model.items.all_items().numpy(), config.index)
    build_s = time.perf_counter() - started
    online = Online(Trained(Path("."), model, seqs, config, {}), index)
    histories = [[seqs.item_ids[i - 1] for i in seqs.items[seqs.offsets[u]:seqs.offsets[u + 1]]] for u in range(args.calls)]
    for history in histories[:50]:  # warm-up
        online.recommend(history, args.k, filter_history=True)
    latencies = []
    for history in histories:
        started = time.perf_counter()
        picks = online.recommend(history, args.k, filter_history=True)
        latencies.append((time.perf_counter() - started) * 1000)
        assert len(picks) == args.k
    p50, p99 = np.percentile(latencies, [50, 99])
    results = {"items": args.items, "calls": args.calls, "history": args.history + 2, "k": args.k,
               "model": config.model.kind, "hidden_size": config.model.hidden_size,
               "index": f"HNSW M={config.index.hnsw_m} efSearch={config.index.ef_search}",
               "index_build_s": round(build_s, 2), "p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3),
               "target_p99_ms": TARGET_P99_MS, "meets_target": bool(p99 < TARGET_P99_MS)}
    _results.write("recommend_latency", results, [
        ("items", f"{args.items:,}"), ("calls (one user each, 1 thread)", f"{args.calls:,}"),
        ("model", f"{config.model.kind}, hidden {config.model.hidden_size}, history {args.history + 2}"),
        ("index", results["index"]), ("p50 ms", f"{p50:.2f}"), ("p99 ms", f"{p99:.2f}"),
        ("p99 < 5 ms", "yes" if p99 < TARGET_P99_MS else "no")])


if __name__ == "__main__":
    main()
