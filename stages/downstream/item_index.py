"""A FAISS inner-product index over a trained model's item vectors (row i = item id i + 1)."""

from __future__ import annotations

import faiss
import numpy as np

from pipeline.config import IndexConfig


def build_index(vectors: np.ndarray, config: IndexConfig) -> faiss.Index:
    """Flat (exact) or HNSW (approximate) maximum-inner-product index over `vectors` (N, H)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = vectors.shape[1]
    if config.kind == "flat":
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = config.ef_search
    index.add(vectors)
    return index
