"""How every contract's Parquet files are written and read back (zstd, fixed row groups, damage as bad input)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import BadInput

ROW_GROUP_ROWS = 1 << 20
COMPRESSION = "zstd"


def write_parquet(table: pa.Table, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Parquet with zstd and fixed row groups, so readers can stream one group at a time."""
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    pq.write_table(table, path, compression=COMPRESSION, row_group_size=ROW_GROUP_ROWS)


def write_parquet_batches(batches: Iterable[pa.RecordBatch], schema: pa.Schema, path: Path) -> None:
    """`write_parquet` for a table that arrives in batches and never lies whole in memory; batches of
    ROW_GROUP_ROWS rows give the same row groups, so the same file."""
    with pq.ParquetWriter(path, schema, compression=COMPRESSION) as writer:
        for batch in batches:
            writer.write_batch(batch, row_group_size=ROW_GROUP_ROWS)


def read_parquet(path: Path, columns: list[str] | None = None, missing_hint: str = "") -> pa.Table:
    """The table at `path` (only `columns`, in that order, when given), with its schema metadata.

    Raises:
        BadInput: the file is missing (`missing_hint` says what makes it), unreadable, or lacks a column.
    """
    try:
        file = pq.ParquetFile(path)
        absent = [name for name in columns or () if name not in file.schema_arrow.names]
        table = None if absent else file.read(columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise BadInput(_unreadable(path, exc, missing_hint)) from None
    if table is None:
        raise BadInput(f"{path}: no column {absent[0]!r}")
    return table


def parquet_rows(path: Path) -> int:
    """The row count in a Parquet file's footer (nothing else is read).

    Raises:
        BadInput: the file is missing, a folder, truncated or not Parquet.
    """
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise BadInput(_unreadable(path, exc, "")) from None


def _unreadable(path: Path, exc: BaseException, missing_hint: str) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"{path}: not found{missing_hint}"
    if isinstance(exc, IsADirectoryError):
        return f"{path}: not a file"
    return f"{path}: not a readable Parquet file ({' '.join(str(exc).split())})"


def check_schema(table: pa.Table, expected: pa.Schema, what: str) -> None:
    """Raise ValueError unless `table` has `expected`'s columns with their types (a writer's own check)."""
    for field in expected:
        if field.name not in table.column_names or table.schema.field(field.name).type != field.type:
            got = table.schema.field(field.name).type if field.name in table.column_names else "absent"
            raise ValueError(f"{what}: column {field.name!r} must be {field.type}, got {got}")
