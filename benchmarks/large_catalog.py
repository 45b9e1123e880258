"""Stage two on a large catalog: the full softmax against the sampled softmax `loss: auto` switches to.

A generated log over `--items` items (default 100,000) in topics: each user follows one or two topics and
picks items by a Zipf popularity inside them, so there is structure a sequence model can learn and a long
tail of rare items, as in real catalogs. Through the real CLI (`table` format, ID-only SASRec, the same
epoch budget for both): `downstream.train.loss=ce` against `loss=auto` (above
`full_softmax_max_items`: sampled softmax over popularity-drawn negatives with the logQ correction).
Then the same time for both: the sampled softmax trains again for as many epochs as the full softmax's
training time buys at the sampled epoch time just measured (`sampled_matched_*`), since a cheaper epoch
pays off only through the extra epochs it affords.

    python -m benchmarks.large_catalog [--items 100000 --users 20000 --epochs 3]
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks import _args, _results
from benchmarks._cli import ROOT
from pipeline.contracts.downstream import read_metrics, read_saved_config

RAW_INTERACTIONS, RAW_ITEMS = "events.parquet", "catalog.parquet"  # the raw table input prepare reads


def generate(folder: Path, items: int, users: int, length: int, seed: int) -> None:
    """Raw input in `folder`: `RAW_INTERACTIONS` (user_id, item_id, timestamp) and `RAW_ITEMS` (item_id, title)."""
    rng = np.random.default_rng(seed)
    topics = max(items // 100, 1)
    topic_of = rng.integers(0, topics, items)
    members = [np.flatnonzero(topic_of == t) for t in range(topics)]
    zipf = [1.0 / np.arange(1, len(m) + 1) ** 1.1 for m in members]
    user_ids, item_ids = [], []
    for user in range(users):
        followed = rng.choice(topics, size=rng.integers(1, 3), replace=False)
        n = int(rng.integers(length // 2, length * 3 // 2))
        for topic in rng.choice(followed, size=n):
            pool, weights = members[topic], zipf[topic]
            if len(pool):
                user_ids.append(f"u{user}")
                item_ids.append(f"i{pool[rng.choice(len(pool), p=weights / weights.sum())]}")
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"user_id": user_ids, "item_id": item_ids,
                             "timestamp": np.arange(len(user_ids), dtype=np.int64)}), folder / RAW_INTERACTIONS)
    pq.write_table(pa.table({"item_id": [f"i{i}" for i in range(items)],
                             "title": [f"item {i} of topic {topic_of[i]}" for i in range(items)]}),
                   folder / RAW_ITEMS)


def train(workspace: Path, raw: Path, loss: str, epochs: int, overrides: list[str]) -> dict:
    """One ID-only stage-two run through the CLI; its manifest, metrics and config."""
    sets = [f"workspace.root={workspace}", f"data.path={raw}", "data.name=large", "data.format=table",
            f"data.interactions_file={RAW_INTERACTIONS}", f"data.items_file={RAW_ITEMS}",
            "data.kcore_users=0", "data.kcore_items=0", "downstream.embeddings=null",
            f"downstream.train.loss={loss}", f"downstream.train.epochs={epochs}",
            f"downstream.train.patience={epochs}", *overrides]
    args = [arg for key in sets for arg in ("--set", key)]
    for command in ("prepare", "train-downstream"):
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", command, *args], cwd=ROOT,
                              capture_output=True, text=True, check=False)
        if done.returncode:
            sys.stderr.write(done.stderr[-3000:])
            _args.fail(f"{command} --set downstream.train.loss={loss} failed", done.returncode)
    run = Path(done.stdout.strip().splitlines()[-1])
    return {"manifest": json.loads((run / "manifest.json").read_text()),
            "metrics": read_metrics(run), "config": read_saved_config(run)}


@_args.reports_errors
def main() -> None:
    parser = _args.parser(__doc__)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--length", type=int, default=20, help="mean interactions per user")
    parser.add_argument("--epochs", type=int, default=3, help="epochs each loss trains (the same budget)")
    parser.add_argument("--workspace", type=Path, default=ROOT / "artifacts" / "bench-large-catalog")
    parser.add_argument("--name", default="large_catalog", help="results file name")
    _args.add_overrides(parser)
    args = parser.parse_args()
    shutil.rmtree(args.workspace, ignore_errors=True)
    generate(args.workspace / "raw", args.items, args.users, args.length, seed=0)
    runs = {loss: train(args.workspace, args.workspace / "raw", loss, args.epochs, args.overrides)
            for loss in ("ce", "auto")}

    def epoch_s(run: dict) -> float:
        return round(statistics.median(h["train_s"] for h in run["metrics"]["history"] if "train_s" in h), 2)

    def train_s(run: dict) -> float:
        return _results.training_seconds(run["metrics"])

    ce, sampled = runs["ce"], runs["auto"]
    matched_epochs = max(args.epochs, int(train_s(ce) // max(epoch_s(sampled), 1e-9)))
    matched = train(args.workspace, args.workspace / "raw", "auto", matched_epochs, args.overrides)
    figures = {
        "items": ce["manifest"]["num_items"], "users": ce["manifest"]["users"]["total"], "epochs": args.epochs,
        "sampled_loss": sampled["config"]["train"]["loss"], "sampled_sampler": sampled["config"]["train"]["sampler"],
        "negatives": sampled["config"]["train"]["negatives"],
        "ce_epoch_s": epoch_s(ce), "sampled_epoch_s": epoch_s(sampled),
        "ce_ndcg10": round(ce["metrics"]["model"]["test"]["ndcg@10"], 4),
        "sampled_ndcg10": round(sampled["metrics"]["model"]["test"]["ndcg@10"], 4),
        "ce_recall10": round(ce["metrics"]["model"]["test"]["recall@10"], 4),
        "sampled_recall10": round(sampled["metrics"]["model"]["test"]["recall@10"], 4),
        "popularity_ndcg10": round(ce["metrics"]["popularity"]["test"]["ndcg@10"], 4),
        "ce_train_s": train_s(ce), "sampled_matched_epochs": matched_epochs,
        "sampled_matched_train_s": train_s(matched),
        "sampled_matched_ndcg10": round(matched["metrics"]["model"]["test"]["ndcg@10"], 4),
        "sampled_matched_recall10": round(matched["metrics"]["model"]["test"]["recall@10"], 4),
    }
    figures["epoch_speedup"] = round(figures["ce_epoch_s"] / max(figures["sampled_epoch_s"], 1e-9), 2)
    _results.write(args.name, figures, [(key, value) for key, value in figures.items()])


if __name__ == "__main__":
    main()
