"""The dataset contract: what `prepare` writes and every later stage reads.

A dataset run folder holds:

- `items.parquet`: one row per item, ids unique; `item_id` (string), one string column per item attribute
  the source had (cleaned, in the source's order), and last `text` (string, the rendered item text, never
  empty). The row order is the item order stage two numbers items by (item k is row k - 1).
- `interactions.parquet`: `user_id` (string), `item_id` (string, always in `items.parquet`), `timestamp`
  (timestamp[ms, UTC], null where the source had none), `position` (int32, a user's order, 0 first) and `split`
  (string: each user's `train` rows, then at most one `valid`, then at most one `test`).
- `manifest.json` (kind "dataset": sources with sha256, counts, what each filter removed, the config).

Both files are zstd Parquet with row groups of at most 2**20 rows (`contracts.parquet`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa

from pipeline.contracts.parquet import check_schema, parquet_rows, read_parquet, write_parquet, write_parquet_batches
from pipeline.faults import crash_point

ITEMS_FILE = "items.parquet"
INTERACTIONS_FILE = "interactions.parquet"
TEXT_COLUMN = "text"  # the rendered item text
SPLITS = ("train", "valid", "test")
ITEMS_SCHEMA = pa.schema([("item_id", pa.string()), (TEXT_COLUMN, pa.string())])  # attribute columns between
TIMESTAMP = pa.timestamp("ms", tz="UTC")  # when an interaction happened (null: row order is time); Parquet keeps ms
INTERACTIONS_SCHEMA = pa.schema([("user_id", pa.string()), ("item_id", pa.string()), ("timestamp", TIMESTAMP),
                                 ("position", pa.int32()), ("split", pa.string())])
_MISSING = " (run `seqrec-pipeline prepare` first)"


def write_dataset(folder: Path, items: pa.Table, interactions: pa.Table | Iterable[pa.RecordBatch]) -> None:
    """Write both files of a dataset run into `folder`; `interactions` is a table or, from the out-of-core engine,
    batches in INTERACTIONS_SCHEMA, written as they come.

    Raises:
        ValueError: a table lacks a contract column or has it in another type (a bug of the writer's caller).
    """
    check_schema(items, ITEMS_SCHEMA, ITEMS_FILE)
    if isinstance(interactions, pa.Table):
        check_schema(interactions, INTERACTIONS_SCHEMA, INTERACTIONS_FILE)
    write_parquet(items, folder / ITEMS_FILE)
    crash_point("export.halfway")
    if isinstance(interactions, pa.Table):
        write_parquet(interactions, folder / INTERACTIONS_FILE)
    else:
        write_parquet_batches(interactions, INTERACTIONS_SCHEMA, folder / INTERACTIONS_FILE)


def items_path(run_dir: Path) -> Path:
    return Path(run_dir) / ITEMS_FILE


def interactions_path(run_dir: Path) -> Path:
    return Path(run_dir) / INTERACTIONS_FILE


def read_items(run_dir: Path, columns: list[str] | None = None) -> pa.Table:
    """The dataset run's items (only `columns` when given), in row order.

    Raises:
        BadInput: the file is missing, unreadable or lacks one of `columns`.
    """
    return read_parquet(items_path(run_dir), columns, _MISSING)


def read_interactions(run_dir: Path, columns: list[str] | None = None) -> pa.Table:
    """The dataset run's interactions (only `columns` when given), in file order.

    Raises:
        BadInput: the file is missing, unreadable or lacks one of `columns`.
    """
    return read_parquet(interactions_path(run_dir), columns, _MISSING)


def item_count(run_dir: Path) -> int:
    """How many items the run holds (read from the Parquet footer alone)."""
    return parquet_rows(items_path(run_dir))

