"""Any interactions table plus items table (CSV, TSV or Parquet, by extension), columns named in `data.columns`.

The items table's id column has the same name as the interactions' item column; every other column of
it is a text attribute.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from pipeline.config import DataConfig
from pipeline.ingest import InteractionsSource, RawData, interactions_table
from pipeline.ingest.tabular import read_table, require_columns, table_source, to_epoch, to_string


def files(config: DataConfig) -> list[Path]:
    folder = Path(config.path)
    return [folder / config.interactions_file, folder / config.items_file]


def _keys(config: DataConfig) -> dict[str, str]:
    columns = config.columns
    keys = {columns.user: "data.columns.user", columns.item: "data.columns.item"}
    if columns.timestamp:
        keys[columns.timestamp] = "data.columns.timestamp (or null when row order is time order)"
    return keys


def read_items(config: DataConfig) -> pa.Table:
    item_path = files(config)[1]
    items = read_table(item_path)
    require_columns(items, [config.columns.item], item_path, _keys(config))
    item = config.columns.item
    return pa.table({"item_id": to_string(items.column(item), item_path, item),
                     **{name: to_string(items.column(name), item_path, name) for name in items.column_names
                        if name != item}})


def interactions_source(config: DataConfig) -> InteractionsSource:
    columns = config.columns
    named = {"user_id": columns.user, "item_id": columns.item, "timestamp": columns.timestamp}
    return table_source(files(config)[0], {key: name for key, name in named.items() if name}, _keys(config))


def read(config: DataConfig) -> RawData:
    inter_path, item_path = files(config)
    columns = config.columns
    keys = _keys(config)
    inter = read_table(inter_path)
    require_columns(inter, list(keys), inter_path, keys)
    timestamp = to_epoch(inter.column(columns.timestamp), inter_path, columns.timestamp) if columns.timestamp else None
    return RawData(
        interactions=interactions_table(to_string(inter.column(columns.user), inter_path, columns.user),
                                        to_string(inter.column(columns.item), inter_path, columns.item), timestamp),
        items=read_items(config),
        interactions_file=inter_path,
        items_file=item_path,
    )
