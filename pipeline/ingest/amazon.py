"""Raw Amazon review dumps (McAuley lab, 2014 and 2018): reviews and metadata as JSON lines, `.json` or `.json.gz`.

Reviews: `reviewerID`, `asin`, `unixReviewTime`. Metadata: `asin`, `title`, `brand`, and categories as
2014's `categories` (a list of category paths) or 2018's `category` (one path); `description` is a string
(2014) or a list of strings (2018). The files run to tens of GB, so they are streamed line by line and
held as Arrow arrays, one batch at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.config import DataConfig
from pipeline.errors import BadInput
from pipeline.ingest import RawData, interactions_table
from pipeline.ingest.jsonio import iter_records, text_of

BATCH_ROWS = 1 << 16
REVIEW_KEYS = ("reviewerID", "asin", "unixReviewTime")
ATTRIBUTES = ("title", "brand", "categories", "description")


def files(config: DataConfig) -> list[Path]:
    folder = Path(config.path)
    return [folder / config.interactions_file, folder / config.items_file]


def _field(record: dict[str, Any], key: str, path: Path, number: int) -> Any:
    if record.get(key) is None:
        raise BadInput(f"{path}: line {number}: no {key!r}")
    return record[key]


def _review(record: dict[str, Any], path: Path, number: int) -> tuple[str, str, int]:
    user, item, time = (_field(record, key, path, number) for key in REVIEW_KEYS)
    if not isinstance(time, int) or isinstance(time, bool):
        raise BadInput(f"{path}: line {number}: 'unixReviewTime' is not an integer ({time!r})")
    return str(user), str(item), time


def _item(record: dict[str, Any], path: Path, number: int) -> tuple[str, ...]:
    categories = record.get("categories", record.get("category"))
    return (str(_field(record, "asin", path, number)), text_of(record.get("title")), text_of(record.get("brand")),
            text_of(categories, unique=True), text_of(record.get("description"), sep=" "))


def _table(path: Path, names: tuple[str, ...], types: tuple[pa.DataType, ...],
           row: Callable[[dict[str, Any], Path, int], tuple]) -> pa.Table:
    """Stream `path` into a table: every BATCH_ROWS rows become Arrow arrays, so Python objects stay few."""
    schema = pa.schema(list(zip(names, types)))
    batches = [pa.record_batch([pa.array(values, field.type) for values, field in zip(zip(*chunk), schema)], schema=schema)
               for chunk in _chunks(row(record, path, number) for number, record in iter_records(path))]
    return pa.Table.from_batches(batches, schema=schema)


def _chunks(rows: Iterator[tuple]) -> Iterator[list[tuple]]:
    chunk: list[tuple] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == BATCH_ROWS:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def read(config: DataConfig) -> RawData:
    reviews_path, meta_path = files(config)
    reviews = _table(reviews_path, ("user_id", "item_id", "timestamp"), (pa.string(), pa.string(), pa.int64()), _review)
    items = _table(meta_path, ("item_id", *ATTRIBUTES), (pa.string(),) * (1 + len(ATTRIBUTES)), _item)
    return RawData(
        interactions=interactions_table(*(reviews.column(name) for name in ("user_id", "item_id", "timestamp"))),
        items=items,
        interactions_file=reviews_path,
        items_file=meta_path,
    )
