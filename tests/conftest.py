"""Shared fixtures: the real datasets beside the checkout, and an isolated workspace per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from align_support import tiny_bert, tiny_llama  # noqa: F401 - session fixtures for stage one

from pipeline.config import PipelineConfig, load_config

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("SEQREC_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))


def shared_dataset(name: str) -> Path:
    """The raw folder of a shared dataset; the test is skipped where the shared data is absent."""
    folder = SHARED_DATASETS / name / "raw"
    if not folder.is_dir():
        pytest.skip(f"shared dataset {folder} not present")
    return folder


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one torch thread avoids threads spinning against each other."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def make_config(tmp_path: Path):
    """Build a validated config whose workspace is the test's own temporary folder."""
    def build(*overrides: str) -> PipelineConfig:
        return load_config(None, [f"workspace.root={tmp_path / 'artifacts'}", *overrides])
    return build


def write_embeddings_run(root: Path, dataset_dir: Path, dim: int, item_ids: list[str] | None = None,
                         dataset_run_id: str | None = None, run_id: str = "hash0001") -> Path:
    """Publish a stage-one-shaped embeddings run made from a deterministic bag-of-words text hash.

    Words of each item's text are hashed to signed buckets, so items sharing words (genres, years) get
    similar vectors: a real, if weak, text signal with no language model involved.
    """
    import hashlib

    import faiss
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.store import Output, publish_run, read_manifest

    items = pq.read_table(dataset_dir / "items.parquet").to_pylist()
    if item_ids is not None:
        keep = set(item_ids)
        items = [row for row in items if row["item_id"] in keep]
    vectors = np.zeros((len(items), dim), dtype=np.float32)
    for row, item in enumerate(items):
        for word in item["text"].lower().split():
            digest = hashlib.sha256(word.encode()).digest()
            vectors[row, int.from_bytes(digest[:4], "little") % dim] += 1.0 if digest[4] % 2 else -1.0
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    dataset_run_id = dataset_run_id or read_manifest(dataset_dir)["run_id"]

    def build(folder: Path) -> dict:
        table = pa.table({
            "item_id": pa.array([item["item_id"] for item in items], pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), dim),
            "text_sha256": pa.array([hashlib.sha256(item["text"].encode()).hexdigest() for item in items]),
        }).replace_schema_metadata({b"method": b"text_hash", b"dim": str(dim).encode(),
                                    b"dataset_run_id": dataset_run_id.encode()})
        pq.write_table(table, folder / "embeddings.parquet")
        index = faiss.IndexFlatIP(dim)
        index.add(vectors)
        faiss.write_index(index, str(folder / "index.faiss"))
        return {"kind": "embeddings", "dataset_run_id": dataset_run_id, "method": "text_hash", "dim": dim}

    name = dataset_dir.parent.name
    return publish_run(Output(root / "embeddings" / name), run_id, build).run_dir


SMALL = "small"  # ml-100k cut down: items with >= 20 interactions, each user's 20 most recent
TINY_MODEL = ["downstream.model.hidden_size=16", "downstream.model.layers=1", "downstream.model.heads=2",
              "downstream.model.max_length=10", "downstream.train.batch_size=256",
              "downstream.train.epochs=2", "downstream.evaluate.batch_size=512"]


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """The output folder (`datasets/small`) of a small real dataset, prepared once per session."""
    from pipeline import prepare

    root = tmp_path_factory.mktemp("shared") / "artifacts"
    config = load_config(None, [f"workspace.root={root}", f"data.path={shared_dataset('ml-100k')}",
                                f"data.name={SMALL}", "data.kcore_items=20", "data.max_history=20"])
    return prepare.run(config).run_dir.parent


@pytest.fixture
def workspace(tmp_path: Path, small_dataset: Path):
    """A per-test workspace that sees the session's small dataset; returns a config builder for it."""
    root = tmp_path / "artifacts"
    (root / "datasets").mkdir(parents=True)
    (root / "datasets" / SMALL).symlink_to(small_dataset)

    def build(*overrides: str) -> PipelineConfig:
        return load_config(None, [f"workspace.root={root}", f"data.name={SMALL}", *TINY_MODEL, *overrides])
    return build

