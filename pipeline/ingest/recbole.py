"""RecBole atomic files: `<stem>.inter` and `<stem>.item`, tab-separated, typed headers (`name:token`)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from pipeline.config import DataConfig
from pipeline.errors import BadInput
from pipeline.ingest import InteractionsSource, RawData, find_stem, interactions_table
from pipeline.ingest.tabular import header, read_atomic, require_columns, require_file, require_names, to_epoch

_READ = ("user_id", "item_id", "timestamp")


def files(config: DataConfig) -> list[Path]:
    folder = Path(config.path)
    stem = find_stem(folder, ".inter", config.stem)
    return [folder / f"{stem}.inter", folder / f"{stem}.item"]


def read_items(config: DataConfig) -> pa.Table:
    item_path = files(config)[1]
    items = read_atomic(item_path)
    require_columns(items, ["item_id"], item_path)
    return items


def interactions_source(config: DataConfig) -> InteractionsSource:
    inter_path = require_file(files(config)[0])
    try:
        names = header(inter_path, "\t", quoted=False)
    except UnicodeDecodeError:
        raise BadInput(f"{inter_path}: line 1: not UTF-8") from None
    names = [name.split(":", 1)[0] for name in names]  # as read_atomic names them; the header line is skipped
    require_names(names, ["user_id", "item_id"], inter_path)
    return InteractionsSource(inter_path, {key: key for key in _READ if key in names}, names, "\t", quoted=False)


def read(config: DataConfig) -> RawData:
    inter_path, item_path = files(config)
    inter = read_atomic(inter_path)
    require_columns(inter, ["user_id", "item_id"], inter_path)
    has_time = "timestamp" in inter.column_names
    timestamp = to_epoch(inter.column("timestamp"), inter_path, "timestamp") if has_time else None
    return RawData(
        interactions=interactions_table(inter.column("user_id"), inter.column("item_id"), timestamp),
        items=read_items(config),
        interactions_file=inter_path,
        items_file=item_path,
    )
