"""The item-embeddings contract between stage one (writes it) and stage two (reads it).

A run folder holds `embeddings.parquet` (`item_id` string, `embedding` fixed_size_list<float32>[dim],
`text_sha256`; schema metadata b"method", b"dim", b"dataset_run_id"), `index.faiss` over the same rows
and `manifest.json` (kind "embeddings", `dataset_run_id`, `method`, `dim`). Only pyarrow and numpy here,
so reading embeddings never pulls in a language model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import BadInput
from pipeline.store import read_manifest

EMBEDDINGS_FILE = "embeddings.parquet"
INDEX_FILE = "index.faiss"
_EXAMPLES = 5


@dataclass(frozen=True)
class Embeddings:
    """One embeddings run: row i of `vectors` belongs to `item_ids[i]`."""

    run_dir: Path
    run_id: str
    item_ids: list[str]
    vectors: np.ndarray  # (N, dim) float32
    manifest: dict[str, Any]

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def _read_table(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except FileNotFoundError:
        raise BadInput(f"{path}: embeddings file not found") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadInput(f"{path}: not a readable Parquet file ({' '.join(str(exc).split())})") from None


def _vectors(table: pa.Table, path: Path) -> np.ndarray:
    column = table.schema.field("embedding")
    if not pa.types.is_fixed_size_list(column.type) or not pa.types.is_floating(column.type.value_type):
        raise BadInput(f"{path}: column embedding must be fixed_size_list<float32>, found {column.type}")
    chunks = table.column("embedding").combine_chunks()
    if chunks.null_count:
        raise BadInput(f"{path}: {chunks.null_count} rows have a null embedding")
    dim = column.type.list_size
    vectors = chunks.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        raise BadInput(f"{path}: row {int(np.flatnonzero(bad)[0]) + 1} has a NaN or infinite embedding value")
    declared = (table.schema.metadata or {}).get(b"dim")
    if declared is not None and int(declared) != dim:
        raise BadInput(f"{path}: schema metadata says dim {int(declared)} but vectors have {dim}")
    return vectors


def read_embeddings(run_dir: Path) -> Embeddings:
    """Read and check one embeddings run folder.

    Raises:
        BadInput: missing or corrupt files, missing columns, duplicate ids, non-finite values, or a
            manifest, metadata or FAISS index that disagrees with the rows.
    """
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    if manifest.get("kind") != "embeddings":
        raise BadInput(f"{run_dir}: manifest kind is {manifest.get('kind')!r}, not 'embeddings'")
    path = run_dir / EMBEDDINGS_FILE
    table = _read_table(path)
    missing = [name for name in ("item_id", "embedding") if name not in table.column_names]
    if missing:
        raise BadInput(f"{path}: no column {missing[0]!r} (it has: {', '.join(table.column_names)})")
    item_ids = table.column("item_id").cast(pa.string()).to_pylist()
    if len(set(item_ids)) != len(item_ids):
        seen: set[str] = set()
        repeated = [item for item in item_ids if item in seen or seen.add(item)]  # type: ignore[func-returns-value]
        raise BadInput(f"{path}: {len(repeated)} duplicate item ids (e.g. {', '.join(repeated[:_EXAMPLES])})")
    vectors = _vectors(table, path)
    if "dim" in manifest and int(manifest["dim"]) != vectors.shape[1]:
        raise BadInput(f"{run_dir / 'manifest.json'}: dim {manifest['dim']} but {path} has {vectors.shape[1]}")
    _check_index(run_dir / INDEX_FILE, len(item_ids), vectors.shape[1])
    return Embeddings(run_dir, str(manifest.get("run_id", run_dir.name)), item_ids, vectors, manifest)


def _check_index(path: Path, rows: int, dim: int) -> None:
    if not path.is_file():
        return
    import faiss

    index = faiss.read_index(str(path))
    if index.ntotal != rows or index.d != dim:
        raise BadInput(f"{path}: index holds {index.ntotal} vectors of dim {index.d}, "
                       f"embeddings.parquet {rows} of dim {dim}")


def check_dataset(embeddings: Embeddings, dataset_run_id: str) -> None:
    """Refuse embeddings made from another dataset run than the one being trained on."""
    made_from = embeddings.manifest.get("dataset_run_id")
    if made_from != dataset_run_id:
        raise BadInput(f"{embeddings.run_dir}: embeddings were made from dataset run {made_from}, "
                       f"not {dataset_run_id}; re-run align or point downstream.embeddings at a matching run")


def align_to_items(embeddings: Embeddings, item_ids: list[str], allow_missing: bool) -> tuple[np.ndarray, np.ndarray]:
    """The embedding of each dataset item, in dataset order, and which items had one.

    Returns:
        (vectors (n_items, dim) float32 with zero rows for missing items, has_vector (n_items,) bool)
    Raises:
        BadInput: some items have no embedding and `allow_missing` is false.
    """
    row_of = {item: row for row, item in enumerate(embeddings.item_ids)}
    rows = np.array([row_of.get(item, -1) for item in item_ids], dtype=np.int64)
    has_vector = rows >= 0
    if not has_vector.all() and not allow_missing:
        missing = [item for item, ok in zip(item_ids, has_vector) if not ok]
        raise BadInput(f"{embeddings.run_dir / EMBEDDINGS_FILE}: {len(missing)} dataset items have no embedding "
                       f"(e.g. {', '.join(missing[:_EXAMPLES])}); set downstream.missing_items=id_vector "
                       "to give them trainable ID vectors instead")
    vectors = np.zeros((len(item_ids), embeddings.dim), dtype=np.float32)
    vectors[has_vector] = embeddings.vectors[rows[has_vector]]
    return vectors, has_vector
