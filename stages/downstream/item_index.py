"""A FAISS inner-product index over a trained model's item vectors (row i = item id i + 1)."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from pipeline.artifact_files import read_faiss
from pipeline.config import IndexConfig
from pipeline.errors import BadInput


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


def read_index(path: Path, num_items: int, dim: int) -> faiss.Index:
    """Read an index and check it covers `num_items` vectors of width `dim`.

    Raises:
        BadInput: the file is missing or holds another number or width of vectors.
    """
    if not path.exists():
        raise BadInput(f"{path}: no item index (set recommend.search=exact)")
    index = read_faiss(path)
    if index.ntotal != num_items or index.d != dim:
        raise BadInput(f"{path}: index holds {index.ntotal} vectors of dim {index.d}, the model {num_items} of dim {dim}")
    return index
