"""The recommendations contract: what `recommend` writes for a serving system or an analyst to read.

A recommendations run folder holds `recommendations.parquet`: one row per user asked for, `user_id`
(string), `item_ids` (list<string>, best first, at most `recommend.k`, fewer where too few items were
left) and `scores` (list<float32>, the model's score of each item, same length and order), zstd Parquet;
and `manifest.json` (kind "recommendations", the downstream run read, the items and history rows left out).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from pipeline.contracts.parquet import check_schema, read_parquet, write_parquet

RECOMMENDATIONS_FILE = "recommendations.parquet"
SCHEMA = pa.schema([("user_id", pa.string()), ("item_ids", pa.list_(pa.string())), ("scores", pa.list_(pa.float32()))])


def recommendations_table(user_ids: list[str], item_ids: list[list[str]], scores: list[list[float]]) -> pa.Table:
    """The contract's table from each user's items and scores, best first."""
    return pa.table({"user_id": user_ids, "item_ids": item_ids, "scores": scores}, schema=SCHEMA)


def write_recommendations(folder: Path, table: pa.Table) -> None:
    """Write `recommendations.parquet` into `folder`. Raises ValueError: `table` is not of `SCHEMA`."""
    check_schema(table, SCHEMA, RECOMMENDATIONS_FILE)
    write_parquet(table, folder / RECOMMENDATIONS_FILE)


def read_recommendations(run_dir: Path) -> pa.Table:
    """The run's recommendations, one row per user.

    Raises:
        BadInput: the file is missing, unreadable or lacks a contract column.
    """
    return read_parquet(Path(run_dir) / RECOMMENDATIONS_FILE, SCHEMA.names)
