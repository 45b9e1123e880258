"""Readers: one per raw format, each turning source files into a `RawData` of string tables.

Each reader module has `files(config) -> list[Path]` (every file it will read, hashed into the run id
before anything is parsed) and `read(config) -> RawData`. Readers whose interactions are one delimited or
Parquet table also have `read_items(config) -> pa.Table` and `interactions_source(config) -> InteractionsSource`,
so the out-of-core engine (`pipeline.dataset_sql`) can read the interactions itself, never all in memory.

A reader only parses and checks its files; de-duplication, filtering, sorting and splitting happen
once, for every format, in `pipeline.dataset`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from pipeline.errors import BadInput

INTERACTIONS_SCHEMA = pa.schema([
    ("user_id", pa.string()),
    ("item_id", pa.string()),
    ("timestamp", pa.int64()),   # null where the source has no time; row order is then time order
    ("split", pa.string()),      # null unless the source is pre-split: train / valid / test
])


@dataclass
class RawData:
    """What a reader hands over.

    `interactions` follows INTERACTIONS_SCHEMA, rows in source order (the tie-break for equal
    timestamps). `items` has `item_id` (string) then one string column per text attribute.
    `interactions_file` / `items_file` name the files in error messages.
    """

    interactions: pa.Table
    items: pa.Table
    interactions_file: Path
    items_file: Path


@dataclass(frozen=True)
class InteractionsSource:
    """Where a reader's interactions lie, for an engine that reads them itself.

    `path` is a delimited file (`delimiter` set, `names` its header) or Parquet (a file, or a folder of parts with
    hive `key=value/` folders; `delimiter` None, `names` its columns). `columns` maps the reader contract's
    columns (user_id, item_id, timestamp, split) to source column names; one absent from it is null.
    """

    path: Path
    columns: dict[str, str]
    names: list[str]
    delimiter: str | None = None
    quoted: bool = True


def interactions_table(user_id: pa.Array, item_id: pa.Array, timestamp: pa.Array | None = None,
                       split: pa.Array | None = None) -> pa.Table:
    """Build an interactions table in the reader contract's schema (missing columns become null)."""
    n = len(user_id)
    columns = [user_id.cast(pa.string()), item_id.cast(pa.string()),
               pa.nulls(n, pa.int64()) if timestamp is None else timestamp.cast(pa.int64()),
               pa.nulls(n, pa.string()) if split is None else split.cast(pa.string())]
    return pa.Table.from_arrays(columns, schema=INTERACTIONS_SCHEMA)


def find_stem(folder: Path, suffix: str, stem: str | None) -> str:
    """The file stem to read: the configured one, or the only `*<suffix>` file's stem in `folder`."""
    if stem is not None:
        return stem
    if not folder.is_dir():
        raise BadInput(f"{folder}: data folder not found (data.path)")
    stems = sorted(path.name[: -len(suffix)] for path in folder.glob(f"*{suffix}"))
    if len(stems) != 1:
        found = ", ".join(stems) or "none"
        raise BadInput(f"{folder}: expected one *{suffix} file, found {found}; set data.stem")
    return stems[0]
