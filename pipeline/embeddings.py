"""Reader and validator for the item-embeddings contract (`embeddings.parquet` of an `align` run).

Contract: columns `item_id` (string, unique), `embedding` (fixed_size_list<float32>[dim], finite) and
`text_sha256` (string); schema metadata `method`, `model`, `dim`, `normalisation`, `config_hash`,
`dataset_run_id`. `index.faiss` beside it holds the same rows in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import BadInput

EMBEDDINGS_FILE = "embeddings.parquet"
INDEX_FILE = "index.faiss"
METADATA_KEYS = ("method", "model", "dim", "normalisation", "config_hash", "dataset_run_id")


@dataclass
class Embeddings:
    item_ids: list[str]
    matrix: np.ndarray  # (items, dim) float32, row i belongs to item_ids[i]
    text_sha256: list[str]
    metadata: dict[str, str]


def read_embeddings(path: Path) -> Embeddings:
    """The embeddings of a run folder (or of the Parquet file itself), checked against the contract.

    Raises:
        BadInput: the file is missing or corrupt, a column or metadata key is missing or mistyped,
            an id repeats, a vector is not finite, or the width disagrees with the `dim` metadata.
    """
    path = Path(path)
    file = path / EMBEDDINGS_FILE if path.is_dir() else path
    try:
        table = pq.read_table(file)
    except FileNotFoundError:
        raise BadInput(f"{file}: not found") from None
    except (pa.ArrowException, OSError) as exc:
        raise BadInput(f"{file}: not a readable Parquet file ({exc})") from None
    metadata = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    missing = [key for key in METADATA_KEYS if key not in metadata]
    if missing:
        raise BadInput(f"{file}: schema metadata lacks {', '.join(missing)}")
    for name in ("item_id", "embedding", "text_sha256"):
        if name not in table.column_names:
            raise BadInput(f"{file}: no column {name!r}")
    kind = table.schema.field("embedding").type
    dim = int(metadata["dim"])
    if not (pa.types.is_fixed_size_list(kind) and kind.value_type == pa.float32() and kind.list_size == dim):
        raise BadInput(f"{file}: column 'embedding' is {kind}, expected fixed_size_list<float32>[{dim}]")
    ids = table.column("item_id").to_pylist()
    if len(set(ids)) != len(ids):
        raise BadInput(f"{file}: item ids repeat")
    values = table.column("embedding").combine_chunks()
    matrix = values.values.to_numpy(zero_copy_only=False).reshape(len(ids), dim) if ids else np.zeros((0, dim), np.float32)
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        raise BadInput(f"{file}: row {int(np.argmax(bad)) + 1} (item {ids[int(np.argmax(bad))]}) is not finite")
    return Embeddings(ids, matrix, table.column("text_sha256").to_pylist(), metadata)


def check_index(run_dir: Path, rows: int, dim: int) -> None:
    """Raise BadInput unless `index.faiss` in `run_dir` holds `rows` vectors of width `dim`."""
    import faiss

    path = Path(run_dir) / INDEX_FILE
    if not path.is_file():
        raise BadInput(f"{path}: not found")
    index = faiss.read_index(str(path))
    if index.ntotal != rows or index.d != dim:
        raise BadInput(f"{path}: holds {index.ntotal} vectors of width {index.d}, "
                       f"embeddings.parquet {rows} of width {dim}")
