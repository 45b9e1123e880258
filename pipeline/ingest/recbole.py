"""RecBole atomic files: `<stem>.inter` and `<stem>.item`, tab-separated, typed headers (`name:token`)."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import DataConfig
from pipeline.ingest import RawData, find_stem, interactions_table
from pipeline.ingest.tabular import read_atomic, require_columns, to_epoch


def files(config: DataConfig) -> list[Path]:
    folder = Path(config.path)
    stem = find_stem(folder, ".inter", config.stem)
    return [folder / f"{stem}.inter", folder / f"{stem}.item"]


def read(config: DataConfig) -> RawData:
    inter_path, item_path = files(config)
    inter = read_atomic(inter_path)
    require_columns(inter, ["user_id", "item_id"], inter_path)
    items = read_atomic(item_path)
    require_columns(items, ["item_id"], item_path)
    has_time = "timestamp" in inter.column_names
    timestamp = to_epoch(inter.column("timestamp"), inter_path, "timestamp") if has_time else None
    return RawData(
        interactions=interactions_table(inter.column("user_id"), inter.column("item_id"), timestamp),
        items=items,
        interactions_file=inter_path,
        items_file=item_path,
    )
