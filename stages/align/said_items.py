"""SAID's item table on disk, in parts that mirror the embeddings parts row for row, so no process holds it whole.

`projector-items/part-NNNNN.safetensors` (tensor `weight`, float32) holds the item vectors of the rows of
`embeddings/part-NNNNN.parquet`: part 0 the rows an incremental run kept from its base (copied chunk by chunk
by the main process), part 1 + p the rows process p trained (written by that process). A run published before
the parts keeps the whole table as `items.weight` inside `projector.safetensors`; it is read the same way.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.artifact_files import tensor_rows, tensor_shape
from pipeline.chunked_rows import rows_in_chunks, take_rows
from pipeline.errors import BadInput
from stages.align.export import KEPT_PART

PROJECTOR_FILE = "projector.safetensors"  # the MLP and buffers (and, before parts, the whole item table)
ITEMS_DIR = "projector-items"
TENSOR = "weight"
LEGACY_TENSOR = "items.weight"  # the item table inside PROJECTOR_FILE of a run published before parts
CHUNK_ROWS = 65536  # rows read at a time where a table is streamed


@dataclass(frozen=True)
class Span:
    """Rows [start, stop) of one stored table of `width` columns: the unit a table is read in."""

    path: Path
    name: str
    start: int
    stop: int
    width: int

    def __len__(self) -> int:
        return self.stop - self.start


def part_path(folder: Path, part: int) -> Path:
    return folder / ITEMS_DIR / f"part-{part:05d}.safetensors"


def spans(run_dir: Path) -> list[Span]:
    """The run's item rows in order, as spans of at most CHUNK_ROWS rows of its parts (or its legacy table)."""
    parts = sorted((run_dir / ITEMS_DIR).glob("part-*.safetensors"))
    stored = [(path, TENSOR) for path in parts] or [(run_dir / PROJECTOR_FILE, LEGACY_TENSOR)]
    out = []
    for path, name in stored:
        rows, width = tensor_shape(path, name)
        out += [Span(path, name, start, min(start + CHUNK_ROWS, rows), width) for start in range(0, rows, CHUNK_ROWS)]
    return out


def _read(span: Span, local: np.ndarray) -> np.ndarray:
    """Rows `local` (ascending) of `span`, reading only from the first to the last of them."""
    if not len(local):
        return np.empty((0, span.width), np.float32)
    first = span.start + int(local[0])
    return tensor_rows(span.path, span.name, first, span.start + int(local[-1]) + 1).numpy()[local - local[0]]


def read_rows(run_dir: Path, rows: np.ndarray) -> torch.Tensor:
    """The item vectors of run rows `rows` (in that order), across the run's parts: only those rows are kept.

    Raises:
        BadInput: a row past the run's rows, or a missing or damaged file.
    """
    rows = np.asarray(rows, np.int64)
    out, total = take_rows(rows, spans(run_dir), len, _read)
    if out is None or (len(rows) and rows.max() >= total):
        raise BadInput(f"{run_dir}: asked for item row {int(rows.max()) if len(rows) else 0}, "
                       f"the run's item table has {total} rows")
    return torch.from_numpy(out)


def read_item_table(run_dir: Path) -> torch.Tensor:
    """The whole item table in row order: as large as the catalog, for tests and small runs only."""
    return read_rows(run_dir, np.arange(sum(len(span) for span in spans(run_dir))))


def write_part(folder: Path, part: int, table: torch.Tensor) -> None:
    """Part `part` of the run's item table: `table`'s rows, those of embeddings part `part`."""
    rows = table.detach().cpu().numpy()
    _write_table(part_path(folder, part), rows.shape, [rows])


def copy_kept(folder: Path, base_dir: Path, from_base: np.ndarray) -> None:
    """The kept part: base rows `from_base` (ascending) of the base run's item table, copied chunk by chunk."""
    if not len(from_base):
        return
    base = spans(base_dir)
    picked = (_read(span, local) for span, local in rows_in_chunks(from_base, base, len))
    _write_table(part_path(folder, KEPT_PART), (len(from_base), base[0].width), picked)


def _write_table(path: Path, shape: tuple[int, int], chunks: Iterable[np.ndarray]) -> None:
    """A safetensors file of one float32 tensor `TENSOR` of `shape`, written as its row chunks arrive (the
    format is an 8-byte header length, a JSON header padded to 8 bytes, then the raw little-endian data)."""
    size = shape[0] * shape[1] * 4
    header = json.dumps({TENSOR: {"dtype": "F32", "shape": list(shape), "data_offsets": [0, size]}}).encode()
    header += b" " * (-len(header) % 8)
    path.parent.mkdir(exist_ok=True)
    written = 0
    with path.open("wb") as out:
        out.write(struct.pack("<Q", len(header)) + header)
        for chunk in chunks:
            data = np.ascontiguousarray(chunk, dtype="<f4").tobytes()
            out.write(data)
            written += len(data)
    if written != size:
        raise RuntimeError(f"{path}: wrote {written} bytes of item rows, expected {size}")
