"""The export steps every alignment method shares: refuse non-finite vectors, the FAISS index to fill, the stored form.

The files themselves are written by the embeddings contract (`pipeline.contracts.embeddings`).
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from pipeline.contracts.embeddings import l2_normalise
from pipeline.errors import BadInput, PipelineError

# faiss wants about this many training points per inverted list (it warns below it).
_POINTS_PER_LIST = 39
_PQ_BITS = 8


@dataclass(frozen=True)
class IndexSpec:
    kind: str  # flat | hnsw | ivfpq
    hnsw_m: int
    ivf_lists: int
    pq_m: int


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


def stored(vectors: np.ndarray, normalise: str) -> np.ndarray:
    """The vectors as written to Parquet under `align.export.normalise`."""
    return l2_normalise(vectors) if normalise == "l2" else vectors.astype(np.float32)
