"""The item-embeddings contract between stage one (writes it) and stage two (reads it).

An embeddings run folder holds:

- `embeddings/part-NNNNN.parquet`: one table in parts (a folder `pyarrow.dataset`, DuckDB and Spark read as
  one table; parts in name order are the rows in order): `item_id` (string, unique over all parts),
  `embedding` (fixed_size_list<float32>[dim], finite), `text_sha256` (string: the sha256 of the item text it
  was embedded from); every part's schema metadata holds `method`, `dim`, `dataset_run_id` and, from
  `align`, `model`, `normalisation`, `config_hash`, `code_identity`, `catalog_sha256`, `pooling`. Under
  `accelerate launch` each process writes the part of the rows it embedded, so no process ever holds every
  vector. Rows need not follow the dataset's item order: readers match by item id. A run written before
  parts has one `embeddings.parquet` instead, read the same way.
- `index.faiss`: the same rows in the same order, L2-normalised, for inner-product search.
- `config.json`: the resolved pipeline config the run was made with.
- `manifest.json` (kind "embeddings", `dataset_run_id`, `method`, `dim`), and what the method keeps for
  itself (SAID's projector, Recformer's encoder), which no other stage reads.

Only pyarrow and numpy here (faiss when an index is written or checked), so reading embeddings never pulls
in a language model.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.chunked_rows import take_rows
from pipeline.contracts.parquet import write_parquet_batches
from pipeline.errors import BadInput
from pipeline.store import MANIFEST, read_manifest, write_json_atomic

PARTS_DIR = "embeddings"
LEGACY_FILE = "embeddings.parquet"  # the one file of a run written before parts
CHUNK_ROWS = 65536  # rows read at a time where the parts are streamed
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
    vectors: np.ndarray  # (N, dim) float32; (N, 0) where read without them (`read_embeddings(vectors=False)`)
    text_sha256: list[str]
    metadata: dict[str, str]
    manifest: dict[str, Any]

    @property
    def dim(self) -> int:
        return int(self.metadata["dim"])

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


def part_path(folder: Path, part: int) -> Path:
    return folder / PARTS_DIR / f"part-{part:05d}.parquet"


def write_part(folder: Path, part: int, dim: int, metadata: dict[str, str],
               chunks: Iterable[tuple[list[str], np.ndarray, list[str]]]) -> None:
    """Write part `part` of the run in `folder` from `(item_ids, vectors, text_sha)` chunks, so a part copied from
    another run's parts never lies whole in memory. `metadata` and `dim` go into the schema metadata. The caller
    refuses non-finite vectors first (it knows what made them)."""
    target = schema(dim).with_metadata({**metadata, "dim": str(dim)})

    def batches() -> Iterator[pa.RecordBatch]:
        for item_ids, vectors, text_sha in chunks:
            flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
            yield pa.record_batch([pa.array(item_ids, pa.string()), pa.FixedSizeListArray.from_arrays(flat, dim),
                                   pa.array(text_sha, pa.string())], schema=target)

    path = part_path(folder, part)
    path.parent.mkdir(exist_ok=True)
    write_parquet_batches(batches(), target, path)


def write_embeddings(folder: Path, item_ids: list[str], vectors: np.ndarray, text_sha: list[str],
                     metadata: dict[str, str], part: int = 0) -> None:
    """Write one part of the run in `folder` from rows in memory (the whole run where it is the only part)."""
    write_part(folder, part, vectors.shape[1], metadata, [(item_ids, vectors, text_sha)])


def write_index(folder: Path, index: Any) -> dict[str, object]:
    """Write the FAISS `index` (filled with the run's L2-normalised rows, in order) as `index.faiss`; its facts."""
    import faiss

    faiss.write_index(index, str(folder / INDEX_FILE))
    return {"type": type(index).__name__, "ntotal": int(index.ntotal), "dim": int(index.d),
            "metric": "inner_product", "vectors": "l2_normalised"}


def write_config(folder: Path, config: dict[str, Any]) -> None:
    """`config.json`: the resolved config the run was made with."""
    write_json_atomic(folder / CONFIG_FILE, config)


def part_files(path: Path) -> tuple[Path, list[Path]]:
    """The run folder and its Parquet parts in row order, for a run folder (or a single Parquet file alone).

    Raises:
        BadInput: there are none.
    """
    path = Path(path)
    if not path.is_dir():
        return path.parent, [path]
    parts = sorted((path / PARTS_DIR).glob("part-*.parquet"))
    if not parts and (path / LEGACY_FILE).is_file():
        parts = [path / LEGACY_FILE]
    if not parts:
        raise BadInput(f"{path}: no embeddings (no {PARTS_DIR}/part-*.parquet); is it an embeddings run folder?")
    return path, parts


def _unreadable(path: Path, exc: Exception) -> BadInput:
    if isinstance(exc, FileNotFoundError):
        return BadInput(f"{path}: embeddings file not found")
    return BadInput(f"{path}: not a readable Parquet file ({' '.join(str(exc).split())})")


def _read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, exc) from None


def _read_schema(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, exc) from None


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


def _metadata(schema: pa.Schema, path: Path) -> dict[str, str]:
    metadata = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise BadInput(f"{path}: schema metadata lacks {', '.join(missing)}")
    for name in COLUMNS:
        if name not in schema.names:
            raise BadInput(f"{path}: no column {name!r} (it has: {', '.join(schema.names)})")
    return metadata


def iter_chunks(path: Path, vectors: bool = True, chunk_rows: int = CHUNK_ROWS
                ) -> Iterator[tuple[Path, list[str], np.ndarray, list[str], dict[str, str]]]:
    """The rows in order, a chunk of at most `chunk_rows` at a time, checked: the part file, item ids, vectors
    ((n, 0) unless `vectors`), text sha256 and the part's schema metadata."""
    _, parts = part_files(path)
    columns = list(COLUMNS) if vectors else ["item_id", "text_sha256"]
    for file in parts:
        metadata = _metadata(_read_schema(file), file)
        try:
            batches = pq.ParquetFile(file).iter_batches(batch_size=chunk_rows, columns=columns)
            for batch in batches:
                table = pa.Table.from_batches([batch])
                ids = table.column("item_id").to_pylist()
                matrix = (_vectors(table, int(metadata["dim"]), file, ids) if vectors
                          else np.empty((len(ids), 0), np.float32))
                yield file, ids, matrix, table.column("text_sha256").to_pylist(), metadata
        except (pa.ArrowException, OSError) as exc:
            raise _unreadable(file, exc) from None


def read_rows(path: Path, rows: np.ndarray) -> np.ndarray:
    """The vectors of rows `rows` (in that order), streaming past the parts: only those rows are kept."""
    rows = np.asarray(rows)
    out, total = take_rows(rows, iter_chunks(path), lambda chunk: len(chunk[1]), lambda chunk, local: chunk[2][local])
    if out is None or (len(rows) and rows.max() >= total):
        raise BadInput(f"{path}: asked for row {int(rows.max()) if len(rows) else 0}, the run has {total} rows")
    return out


def read_embeddings(path: Path, vectors: bool = True) -> Embeddings:
    """Read and check an embeddings run folder (or one Parquet file alone); without `vectors`, only the rows'
    ids and text sha256 (what planning a refresh needs) are read.

    Raises:
        BadInput: missing or corrupt files, missing columns or metadata, duplicate ids, non-finite
            values, parts of different widths, or a manifest or FAISS index that disagrees with the rows.
    """
    run_dir, parts = part_files(path)
    manifest = read_manifest(run_dir) if (run_dir / MANIFEST).is_file() else {}
    if manifest and manifest.get("kind") != "embeddings":
        raise BadInput(f"{run_dir}: manifest kind is {manifest.get('kind')!r}, not 'embeddings'")
    ids: list[str] = []
    shas: list[str] = []
    matrices: list[np.ndarray] = []
    metadata: dict[str, str] = {}
    for file, part_ids, matrix, sha, part_metadata in iter_chunks(path, vectors):
        if metadata and part_metadata["dim"] != metadata["dim"]:
            raise BadInput(f"{file}: dim {part_metadata['dim']}, but {parts[0]} has {metadata['dim']}")
        metadata = metadata or part_metadata
        ids += part_ids
        shas += sha
        matrices.append(matrix)
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        repeated = [item for item in ids if item in seen or seen.add(item)]  # type: ignore[func-returns-value]
        raise BadInput(f"{parts[0].parent}: item ids repeat ({len(repeated)}, e.g. {', '.join(repeated[:_EXAMPLES])})")
    dim = int(metadata["dim"])
    if "dim" in manifest and int(manifest["dim"]) != dim:
        raise BadInput(f"{run_dir / MANIFEST}: dim {manifest['dim']} but {parts[0]} has {dim}")
    if (run_dir / INDEX_FILE).is_file():
        check_index(run_dir, len(ids), dim)
    return Embeddings(run_dir, ids, np.concatenate(matrices), shas, metadata, manifest)


def check_index(run_dir: Path, rows: int, dim: int) -> None:
    """Raise BadInput unless `index.faiss` in `run_dir` holds `rows` vectors of width `dim`."""
    from pipeline.artifact_files import read_faiss  # faiss loads only when an index is checked

    path = Path(run_dir) / INDEX_FILE
    if not path.is_file():
        raise BadInput(f"{path}: not found")
    index = read_faiss(path)
    if index.ntotal != rows or index.d != dim:
        raise BadInput(f"{path}: index holds {index.ntotal} vectors of width {index.d}, "
                       f"the embeddings {rows} of width {dim}")


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
        raise BadInput(f"{embeddings.run_dir}: {len(missing)} dataset items have no embedding "
                       f"(e.g. {', '.join(missing[:_EXAMPLES])}); set downstream.missing_items=id_vector "
                       "to give them trainable ID vectors instead")
    vectors = np.zeros((len(item_ids), embeddings.dim), dtype=np.float32)
    vectors[has_vector] = embeddings.vectors[rows[has_vector]]
    return vectors, has_vector
