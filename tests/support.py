"""What tests share besides fixtures (those are in conftest.py): the checkout, the shared datasets, the tiny
downstream model, and a stage-one-shaped embeddings run made without a language model.

Tests import it as `tests.support` (and the other helpers as `tests.<name>_support`), never `conftest`: one
module object, whichever way pytest was started.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REQUIRE_DATA_ENV = "SEQREC_REQUIRE_DATA"  # set (to 1) in CI: a missing shared dataset fails instead of skipping
REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("SEQREC_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))


def shared_dataset(name: str) -> Path:
    """The raw folder of a shared dataset. Where it is absent the test is skipped, or fails where
    `$SEQREC_REQUIRE_DATA` is set (CI: a test that cannot run there is a failure, not a silent skip)."""
    folder = SHARED_DATASETS / name / "raw"
    if not folder.is_dir():
        message = f"shared dataset {folder} not present (set $SEQREC_SHARED_DATASETS to its parent folder)"
        if os.environ.get(REQUIRE_DATA_ENV, "") not in ("", "0"):
            pytest.fail(f"{message}; ${REQUIRE_DATA_ENV} is set, so this is a failure, not a skip", pytrace=False)
        pytest.skip(message, allow_module_level=True)  # a module may ask for its data at import
    return folder


def write_embeddings_run(root: Path, dataset_dir: Path, dim: int, item_ids: list[str] | None = None,
                         dataset_run_id: str | None = None, run_id: str = "hash0001") -> Path:
    """Publish a stage-one-shaped embeddings run made from a deterministic bag-of-words text hash.

    Words of each item's text are hashed to signed buckets, so items sharing words (genres, years) get
    similar vectors: a real, if weak, text signal with no language model involved.
    """
    import hashlib

    import faiss
    import numpy as np
    import pyarrow.parquet as pq

    from pipeline.contracts.embeddings import write_embeddings
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
        write_embeddings(folder, [item["item_id"] for item in items], vectors,
                         [hashlib.sha256(item["text"].encode()).hexdigest() for item in items],
                         {"method": "text_hash", "dataset_run_id": dataset_run_id})
        index = faiss.IndexFlatIP(dim)
        index.add(vectors)
        faiss.write_index(index, str(folder / "index.faiss"))
        return {"kind": "embeddings", "dataset_run_id": dataset_run_id, "method": "text_hash", "dim": dim}

    name = dataset_dir.parent.name
    return publish_run(Output(root / "embeddings" / name), run_id, build).run_dir


SMALL = "small"  # ml-100k cut down: items with >= 20 interactions, each user's 20 most recent
TINY_MODEL = ["downstream.model.hidden_size=16", "downstream.model.layers=1", "downstream.model.heads=2",
              "downstream.model.max_length=10", "downstream.train.batch_size=256",
              "downstream.train.epochs=2", "downstream.evaluate.batch_size=512", "downstream.model.members=1"]


