"""The canonical dataset contract as input: what `prepare` writes, or what an upstream job (Spark) writes the same way.

`data.path` holds `interactions.parquet` and `items.parquet`, each one Parquet file or a folder of parts
(`part-*.parquet`, hive `key=value/` folders, `_SUCCESS` and `.crc` files as Spark writes them). Interactions:
`user_id`, `item_id`, optional `timestamp` (a timestamp or date, or epoch seconds) and optional `split`
(train / valid / test; a hive partition column is fine); other columns (`position`) are ignored. Items:
`item_id` and one column per text attribute; a `text` column is re-rendered from the attributes by `data.text`.
The contract in full: docs/canonical-dataset.md.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import DataConfig
from pipeline.contracts.dataset import INTERACTIONS_FILE, ITEMS_FILE, SPLITS, TEXT_COLUMN
from pipeline.errors import BadInput
from pipeline.ingest import InteractionsSource, RawData, interactions_table
from pipeline.ingest.tabular import read_table, table_source, to_epoch, to_string

_OPTIONAL = ("timestamp", "split")


def files(config: DataConfig) -> list[Path]:
    folder = Path(config.path)
    return [folder / INTERACTIONS_FILE, folder / ITEMS_FILE]


def read_items(config: DataConfig) -> pa.Table:
    item_path = files(config)[1]
    items = read_table(item_path, ["item_id"])
    attributes = [name for name in items.column_names if name not in ("item_id", TEXT_COLUMN)]
    if not attributes:
        raise BadInput(f"{item_path}: no attribute column to render the text from (columns: "
                       f"{', '.join(items.column_names)}); write the attributes, e.g. title")
    return pa.table({name: to_string(items.column(name), item_path, name) for name in ["item_id", *attributes]})


def interactions_source(config: DataConfig) -> InteractionsSource:
    inter_path = files(config)[0]
    source = table_source(inter_path, {"user_id": "user_id", "item_id": "item_id"})
    present = {name: name for name in _OPTIONAL if name in source.names}
    return InteractionsSource(source.path, {**source.columns, **present}, source.names)


def check_split_values(values: list[str], path: Path) -> None:
    """Raise BadInput naming the first split value that is not train, valid or test."""
    unknown = sorted(set(values) - set(SPLITS))
    if unknown:
        raise BadInput(f"{path}: column 'split' holds {unknown[0]!r}; its values are {', '.join(SPLITS)}")


def read(config: DataConfig) -> RawData:
    inter_path, item_path = files(config)
    inter = read_table(inter_path, ["user_id", "item_id"])
    names = inter.column_names
    split = to_string(inter.column("split"), inter_path, "split") if "split" in names else None
    if split is not None:
        check_split_values(pc.unique(split).drop_null().to_pylist(), inter_path)
    return RawData(
        interactions=interactions_table(
            to_string(inter.column("user_id"), inter_path, "user_id"),
            to_string(inter.column("item_id"), inter_path, "item_id"),
            to_epoch(inter.column("timestamp"), inter_path, "timestamp") if "timestamp" in names else None,
            split),
        items=read_items(config),
        interactions_file=inter_path,
        items_file=item_path,
    )
