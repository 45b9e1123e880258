"""The item-embeddings contract between stage one (writes it) and stage two (reads it).

An embeddings run folder holds:

- `embeddings.parquet`: `item_id` (string, unique), `embedding` (fixed_size_list<float32>[dim], finite),
  `text_sha256` (string: the sha256 of the item text it was embedded from); schema metadata `method`,
  `dim`, `dataset_run_id` and, from `align`, `model`, `normalisation`, `config_hash`, `code_identity`,
  `catalog_sha256`, `pooling`. Rows need not follow the dataset's item order: readers match by item id.
- `index.faiss`: the same rows in the same order, L2-normalised, for inner-product search.
- `config.json`: the resolved pipeline config the run was made with.
- `manifest.json` (kind "embeddings", `dataset_run_id`, `method`, `dim`), and what the method keeps for
  itself (SAID's projector, Recformer's encoder), which no other stage reads.

Only pyarrow and numpy here (faiss when an index is written or checked), so reading embeddings never pulls
in a language model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.contracts.parquet import check_schema, write_parquet
from pipeline.errors import BadInput
from pipeline.faults import crash_point
from pipeline.store import MANIFEST, read_manifest, write_json_atomic

EMBEDDINGS_FILE = "embeddings.parquet"
INDEX_FILE = "index.faiss"
CONFIG_FILE = "config.json"
COLUMNS = ("item_id", "embedding", "text_sha256")
REQUIRED_METADATA = ("method", "dim", "dataset_run_id")
_EXAMPLES = 5


@dataclass(frozen=True)
class Embeddings:
    """One embeddings run: row i of `vectors` belongs to `item_ids[i]`."""

    run_dir: Path
    item_ids: list[str]
    vectors: np.ndarray  # (N, dim) float32
    text_sha256: list[str]
    metadata: dict[str, str]
    manifest: dict[str, Any]

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id", self.run_dir.name))


def schema(dim: int) -> pa.Schema:
    """The columns of `embeddings.parquet` for vectors of width `dim`."""
    return pa.schema([("item_id", pa.string()), ("embedding", pa.list_(pa.float32(), dim)),
                      ("text_sha256", pa.string())])


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def write_embeddings(folder: Path, item_ids: list[str], vectors: np.ndarray, text_sha: list[str],
                     metadata: dict[str, str]) -> None:
    """Write `embeddings.parquet` into `folder`: one row per item, `metadata` and `dim` in the schema metadata.

    The caller refuses non-finite vectors first (it knows what made them).
    """
    dim = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    table = pa.table({"item_id": pa.array(item_ids, pa.string()),
                      "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
                      "text_sha256": pa.array(text_sha, pa.string())})
    check_schema(table, schema(dim), EMBEDDINGS_FILE)
    write_parquet(table, folder / EMBEDDINGS_FILE, {**metadata, "dim": str(dim)})
    crash_point("export.halfway")


def write_index(folder: Path, index: Any, added: np.ndarray) -> dict[str, object]:
    """Add `added` (L2-normalised here) to the FAISS `index`, write `index.faiss`, and return its facts."""
    import faiss

    index.add(l2_normalise(added))
    faiss.write_index(index, str(folder / INDEX_FILE))
    return {"type": type(index).__name__, "ntotal": int(index.ntotal), "dim": int(index.d),
            "metric": "inner_product", "vectors": "l2_normalised"}


def write_config(folder: Path, config: dict[str, Any]) -> None:
    """`config.json`: the resolved config the run was made with."""
    write_json_atomic(folder / CONFIG_FILE, config)


def _read_table(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except FileNotFoundError:
        raise BadInput(f"{path}: embeddings file not found") from None
    except (pa.ArrowException, OSError) as exc:
        raise BadInput(f"{path}: not a readable Parquet file ({' '.join(str(exc).split())})") from None


def _vectors(table: pa.Table, dim: int, path: Path, ids: list[str]) -> np.ndarray:
    kind = table.schema.field("embedding").type
    if not (pa.types.is_fixed_size_list(kind) and kind.value_type == pa.float32() and kind.list_size == dim):
        raise BadInput(f"{path}: column 'embedding' is {kind}, expected fixed_size_list<float32>[{dim}]")
    column = table.column("embedding").combine_chunks()
    if column.null_count:
        raise BadInput(f"{path}: {column.null_count} rows have a null embedding")
    vectors = column.values.to_numpy(zero_copy_only=False).reshape(len(ids), dim)
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        row = int(np.argmax(bad))
        raise BadInput(f"{path}: row {row + 1} (item {ids[row]}) has a NaN or infinite embedding value")
    return vectors


def read_embeddings(path: Path) -> Embeddings:
    """Read and check an embeddings run folder (or its Parquet file alone).

    Raises:
        BadInput: missing or corrupt files, missing columns or metadata, duplicate ids, non-finite
            values, or a manifest or FAISS index that disagrees with the rows.
    """
    path = Path(path)
    run_dir, file = (path, path / EMBEDDINGS_FILE) if path.is_dir() else (path.parent, path)
    manifest = read_manifest(run_dir) if (run_dir / MANIFEST).is_file() else {}
    if manifest and manifest.get("kind") != "embeddings":
        raise BadInput(f"{run_dir}: manifest kind is {manifest.get('kind')!r}, not 'embeddings'")
    table = _read_table(file)
    metadata = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise BadInput(f"{file}: schema metadata lacks {', '.join(missing)}")
    for name in COLUMNS:
        if name not in table.column_names:
            raise BadInput(f"{file}: no column {name!r} (it has: {', '.join(table.column_names)})")
    ids = table.column("item_id").to_pylist()
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        repeated = [item for item in ids if item in seen or seen.add(item)]  # type: ignore[func-returns-value]
        raise BadInput(f"{file}: item ids repeat ({len(repeated)}, e.g. {', '.join(repeated[:_EXAMPLES])})")
    vectors = _vectors(table, int(metadata["dim"]), file, ids)
    if "dim" in manifest and int(manifest["dim"]) != vectors.shape[1]:
        raise BadInput(f"{run_dir / MANIFEST}: dim {manifest['dim']} but {file} has {vectors.shape[1]}")
    if (run_dir / INDEX_FILE).is_file():
        check_index(run_dir, len(ids), vectors.shape[1])
    return Embeddings(run_dir, ids, vectors, table.column("text_sha256").to_pylist(), metadata, manifest)


def check_index(run_dir: Path, rows: int, dim: int) -> None:
    """Raise BadInput unless `index.faiss` in `run_dir` holds `rows` vectors of width `dim`."""
    from pipeline.artifact_files import read_faiss  # faiss loads only when an index is checked

    path = Path(run_dir) / INDEX_FILE
    if not path.is_file():
        raise BadInput(f"{path}: not found")
    index = read_faiss(path)
    if index.ntotal != rows or index.d != dim:
        raise BadInput(f"{path}: index holds {index.ntotal} vectors of width {index.d}, "
                       f"{EMBEDDINGS_FILE} {rows} of width {dim}")


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
