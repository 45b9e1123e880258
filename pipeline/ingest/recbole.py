"""RecBole atomic files: `<stem>.inter` and `<stem>.item`, tab-separated, typed headers (`name:token`)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from pipeline.config import DataConfig
from pipeline.errors import BadInput
from pipeline.ingest import RawData, interactions_table
from pipeline.ingest.tabular import read_delimited, require_columns, to_int64


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


def read_atomic(path: Path) -> pa.Table:
    """An atomic file as strings, with the `:type` suffixes dropped from the column names."""
    table = read_delimited(path, delimiter="\t", quoted=False)
    return table.rename_columns([name.split(":", 1)[0] for name in table.column_names])


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
    timestamp = to_int64(inter.column("timestamp"), inter_path, "timestamp") if "timestamp" in inter.column_names else None
    return RawData(
        interactions=interactions_table(inter.column("user_id"), inter.column("item_id"), timestamp),
        items=items,
        interactions_file=inter_path,
        items_file=item_path,
    )
