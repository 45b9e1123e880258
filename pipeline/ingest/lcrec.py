"""LC-Rec / LETTER JSON: `<stem>.inter.json` {user: [item, ...]}, `<stem>.item.json` {item: {attribute: text}}.

There are no timestamps: each list's order is the time order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.config import DataConfig
from pipeline.errors import BadInput
from pipeline.ingest import RawData, find_stem, interactions_table
from pipeline.ingest.jsonio import load_json, text_of


def files(config: DataConfig) -> list[Path]:
    folder = Path(config.path)
    stem = find_stem(folder, ".inter.json", config.stem)
    return [folder / f"{stem}.inter.json", folder / f"{stem}.item.json"]


def _is_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _interactions(sequences: Any, path: Path) -> pa.Table:
    if not isinstance(sequences, dict):
        raise BadInput(f"{path}: expected an object {{user: [item, ...]}}, got {type(sequences).__name__}")
    users: list[str] = []
    items: list[str] = []
    for user, sequence in sequences.items():
        if not isinstance(sequence, list) or not all(_is_id(item) for item in sequence):
            raise BadInput(f"{path}: user {user!r}: expected a list of item ids")
        users.extend([user] * len(sequence))
        items.extend(str(item) for item in sequence)
    return interactions_table(pa.array(users, pa.string()), pa.array(items, pa.string()))


def _items(records: Any, path: Path) -> pa.Table:
    """`item_id` plus one string column per attribute key (in first-seen order); a missing key is ""."""
    if not isinstance(records, dict):
        raise BadInput(f"{path}: expected an object {{item: {{attribute: text}}}}, got {type(records).__name__}")
    names: dict[str, None] = {}
    for item, attributes in records.items():
        if not isinstance(attributes, dict):
            raise BadInput(f"{path}: item {item!r}: expected an object of attributes")
        names.update(dict.fromkeys(attributes))
    columns = {"item_id": pa.array(list(records), pa.string())}
    for name in names:
        columns[name] = pa.array([text_of(attributes.get(name)) for attributes in records.values()], pa.string())
    return pa.table(columns)


def read(config: DataConfig) -> RawData:
    inter_path, item_path = files(config)
    return RawData(
        interactions=_interactions(load_json(inter_path), inter_path),
        items=_items(load_json(item_path), item_path),
        interactions_file=inter_path,
        items_file=item_path,
    )
