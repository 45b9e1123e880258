"""The export every alignment method shares: embeddings.parquet, index.faiss (same row order), checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa

from pipeline.embeddings import EMBEDDINGS_FILE, INDEX_FILE
from pipeline.errors import BadInput, PipelineError
from pipeline.faults import crash_point
from pipeline.prepare import write_parquet

# faiss wants about this many training points per inverted list (it warns below it).
_POINTS_PER_LIST = 39
_PQ_BITS = 8


@dataclass(frozen=True)
class IndexSpec:
    kind: str  # flat | hnsw | ivfpq
    hnsw_m: int
    ivf_lists: int
    pq_m: int


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def require_finite(vectors: np.ndarray, item_ids: list[str]) -> None:
    """Refuse to publish NaN or inf (a diverged run): name how many rows and the first item."""
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        first = int(np.argmax(bad))
        raise PipelineError(f"{int(bad.sum())} embeddings are NaN or inf (first: item {item_ids[first]}); "
                            "nothing was published (lower align.said.lr or use mixed_precision: no)")


def new_index(spec: IndexSpec, train: np.ndarray) -> faiss.Index:
    """An empty inner-product index of `spec.kind`, trained on the (normalised) `train` vectors if it needs it.

    Raises:
        BadInput: ivfpq with a `pq_m` that does not divide the dimension, or too few items to train.
    """
    dim = train.shape[1]
    if spec.kind == "flat":
        return faiss.IndexFlatIP(dim)
    if spec.kind == "hnsw":
        return faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    if dim % spec.pq_m:
        raise BadInput(f"align.export.pq_m: {spec.pq_m} does not divide the embedding dimension {dim}")
    if len(train) < 1 << _PQ_BITS:
        raise BadInput(f"align.export.index: ivfpq needs at least {1 << _PQ_BITS} items to train, "
                       f"got {len(train)}; use flat")
    lists = max(1, min(spec.ivf_lists, len(train) // _POINTS_PER_LIST))
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, lists, spec.pq_m, _PQ_BITS, faiss.METRIC_INNER_PRODUCT)
    index.train(train)
    return index


def write_embeddings(folder: Path, item_ids: list[str], vectors: np.ndarray, text_sha: list[str],
                     metadata: dict[str, str]) -> None:
    """`embeddings.parquet`: item_id, embedding as fixed_size_list<float32>[dim], text_sha256, run facts."""
    require_finite(vectors, item_ids)
    dim = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    table = pa.table({"item_id": pa.array(item_ids, pa.string()),
                      "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
                      "text_sha256": pa.array(text_sha, pa.string())})
    write_parquet(table, folder / EMBEDDINGS_FILE, {**metadata, "dim": str(dim)})
    crash_point("export.halfway")


def write_index(folder: Path, index: faiss.Index, added: np.ndarray) -> dict[str, object]:
    """Add `added` (L2-normalised here) to `index`, write `index.faiss`, and return its facts."""
    index.add(l2_normalise(added))
    faiss.write_index(index, str(folder / INDEX_FILE))
    return {"type": type(index).__name__, "ntotal": int(index.ntotal), "dim": int(index.d),
            "metric": "inner_product", "vectors": "l2_normalised"}


def stored(vectors: np.ndarray, normalise: str) -> np.ndarray:
    """The vectors as written to Parquet under `align.export.normalise`."""
    return l2_normalise(vectors) if normalise == "l2" else vectors.astype(np.float32)
