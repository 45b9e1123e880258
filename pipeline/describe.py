"""`seqrec-pipeline inspect`: the facts of a dataset or any other artifact run, as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.contracts.dataset import read_interactions, read_items
from pipeline.errors import BadInput
from pipeline.store import LATEST, read_manifest

PERCENTILES = (0, 10, 25, 50, 75, 90, 99, 100)


def resolve_run(path: Path) -> Path:
    """A run folder, or the run an output folder's `latest` points to."""
    if not path.exists():
        raise BadInput(f"{path}: not found")
    if (path / LATEST).is_symlink():
        return (path / LATEST).resolve()
    return path


def distribution(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    stats = {f"p{p}": float(v) for p, v in zip(PERCENTILES, np.percentile(values, PERCENTILES))}
    return {"mean": round(float(values.mean()), 3), **stats}


def dataset_facts(run_dir: Path) -> dict[str, Any]:
    interactions = read_interactions(run_dir, ["user_id", "split"])
    items = read_items(run_dir, ["text"])
    lengths = pc.value_counts(interactions.column("user_id").combine_chunks()).field("counts").to_numpy()
    splits = pc.value_counts(interactions.column("split").combine_chunks())
    text_chars = pc.utf8_length(items.column("text")).to_numpy()
    return {
        "users": len(lengths),
        "items": items.num_rows,
        "interactions": interactions.num_rows,
        "split_rows": {s["values"]: s["counts"] for s in splits.to_pylist()},
        "sequence_length": distribution(lengths),
        "text_chars": distribution(text_chars),
    }


def describe(path: Path) -> dict[str, Any]:
    """Manifest, Parquet row counts (every file, parts in folders included) and, for a dataset, its distributions."""
    run_dir = resolve_run(path)
    manifest = read_manifest(run_dir)
    facts: dict[str, Any] = {"run_dir": str(run_dir), "manifest": manifest}
    facts["parquet_rows"] = {str(p.relative_to(run_dir)): pq.ParquetFile(p).metadata.num_rows
                             for p in sorted(run_dir.rglob("*.parquet"))}  # an embeddings run's parts too
    if manifest.get("kind") == "dataset":
        facts["dataset"] = dataset_facts(run_dir)
    return facts
