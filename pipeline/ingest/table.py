"""Any interactions table plus items table (CSV, TSV or Parquet, by extension), columns named in `data.columns`.

The items table's id column has the same name as the interactions' item column; every other column of
it is a text attribute.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from pipeline.config import DataConfig
from pipeline.ingest import RawData, interactions_table
from pipeline.ingest.tabular import read_table, require_columns, to_epoch, to_string


def files(config: DataConfig) -> list[Path]:
    folder = Path(config.path)
    return [folder / config.interactions_file, folder / config.items_file]


def read(config: DataConfig) -> RawData:
    inter_path, item_path = files(config)
    columns = config.columns
    keys = {columns.user: "data.columns.user", columns.item: "data.columns.item"}
    if columns.timestamp:
        keys[columns.timestamp] = "data.columns.timestamp (or null when row order is time order)"
    inter = read_table(inter_path)
    require_columns(inter, list(keys), inter_path, keys)
    items = read_table(item_path)
    require_columns(items, [columns.item], item_path, keys)
    attributes = [name for name in items.column_names if name != columns.item]
    timestamp = to_epoch(inter.column(columns.timestamp), inter_path, columns.timestamp) if columns.timestamp else None
    return RawData(
        interactions=interactions_table(to_string(inter.column(columns.user), inter_path, columns.user),
                                        to_string(inter.column(columns.item), inter_path, columns.item), timestamp),
        items=pa.table({"item_id": to_string(items.column(columns.item), item_path, columns.item),
                        **{name: to_string(items.column(name), item_path, name) for name in attributes}}),
        interactions_file=inter_path,
        items_file=item_path,
    )
