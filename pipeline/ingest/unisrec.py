"""UniSRec pre-split files: `<stem>.{train,valid,test}.inter`, `<stem>.text`, `<stem>.item2index`, `<stem>.user2index`.

Split rows are `user_id  item_id_list  item_id` (a history, capped at 50 items, and its target) in integer
indices; `.text` and the two maps use the original ids (ASINs, reviewer ids), which the dataset keeps.
Each user's full sequence is rebuilt as DATA.md says: the shortest history (the first item), the train
targets in reverse file order (the file lists the longest history first), the valid target, the test
target. Every later row's history must end with the item just before its target, which checks the rebuild.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import DataConfig
from pipeline.errors import BadInput
from pipeline.ingest import RawData, find_stem, interactions_table
from pipeline.ingest.tabular import read_atomic, read_delimited, require_columns

SPLITS = ("train", "valid", "test")
TEXT_ATTRIBUTE = "source_text"  # `.text`'s one field; `text` itself is the rendered column


def files(config: DataConfig) -> list[Path]:
    folder = Path(config.path)
    stem = find_stem(folder, ".train.inter", config.stem)
    return [*(folder / f"{stem}.{split}.inter" for split in SPLITS),
            folder / f"{stem}.text", folder / f"{stem}.item2index", folder / f"{stem}.user2index"]


def _split_rows(paths: list[Path]) -> pa.Table:
    """Every row of the three split files, sorted by user, then train rows last to first, valid, test.

    Columns: user, history, target, split (index into SPLITS and `paths`), line (in its file).
    """
    tables = []
    for rank, path in enumerate(paths):
        table = read_atomic(path)
        require_columns(table, ["user_id", "item_id_list", "item_id"], path)
        n = table.num_rows
        tables.append(pa.table({
            "user": table.column("user_id"), "history": table.column("item_id_list"), "target": table.column("item_id"),
            "split": pa.array(np.full(n, rank, np.int8)), "line": pa.array(np.arange(2, n + 2)),
        }))
    rows = pa.concat_tables(tables)
    users = rows.column("user").combine_chunks().dictionary_encode().indices.to_numpy(zero_copy_only=False)
    split = rows.column("split").to_numpy()
    line = rows.column("line").to_numpy()
    return rows.take(pa.array(np.lexsort((np.where(split == 0, -line, line), split, users))))


def _check_one_per_user(users: pa.DictionaryArray, split: np.ndarray, paths: list[Path]) -> None:
    """Each user has exactly one valid and one test row."""
    codes = users.indices.to_numpy(zero_copy_only=False)
    for rank in (1, 2):
        counts = np.bincount(codes[split == rank], minlength=len(users.dictionary))
        wrong = np.flatnonzero(counts != 1)
        if len(wrong):
            raise BadInput(f"{paths[rank]}: {len(wrong)} users do not have exactly one row "
                           f"(e.g. user {users.dictionary[wrong[0]]} has {counts[wrong[0]]})")


def _row_error(rows: pa.Table, index: int, paths: list[Path], problem: str) -> BadInput:
    row = rows.slice(index, 1).to_pylist()[0]
    return BadInput(f"{paths[row['split']]}: line {row['line']}: user {row['user']}'s {problem}")


def _check_chain(rows: pa.Table, first: np.ndarray, last_seen: pa.Array, paths: list[Path]) -> None:
    """A row's history must end with the previous row's target (same user), else rows are missing or misordered."""
    target = rows.column("target").combine_chunks()
    previous = pa.concat_arrays([pa.array([""], pa.string()), target.slice(0, len(target) - 1)])
    broken = np.flatnonzero(~first & ~pc.equal(last_seen, previous).to_numpy(zero_copy_only=False))
    if len(broken):
        at = int(broken[0])
        raise _row_error(rows, at, paths, f"history ends with {last_seen[at]}, not {previous[at]} (the item before "
                         f"this target in the rebuilt sequence); {len(broken)} rows break the sequence")


def _sequences(rows: pa.Table, paths: list[Path]) -> tuple[pa.Array, pa.Array, pa.Array]:
    """Users, items and splits of the rebuilt full sequences, in sequence order."""
    users = rows.column("user").combine_chunks().dictionary_encode()
    split = rows.column("split").to_numpy()
    _check_one_per_user(users, split, paths)
    codes = users.indices.to_numpy(zero_copy_only=False)
    first = np.r_[True, codes[1:] != codes[:-1]]
    history = pc.utf8_trim_whitespace(rows.column("history").combine_chunks())
    empty = pc.equal(pc.utf8_length(history), 0).to_numpy(zero_copy_only=False)
    if empty.any():
        raise _row_error(rows, int(np.flatnonzero(empty)[0]), paths, "history is empty")
    histories = pc.utf8_split_whitespace(history)
    lengths = pc.list_value_length(histories).to_numpy(zero_copy_only=False)
    _check_chain(rows, first, pc.list_flatten(histories).take(pa.array(np.cumsum(lengths) - 1)), paths)
    shortest = histories.filter(pa.array(first))
    start_items = pc.list_flatten(shortest)
    start_rows = np.flatnonzero(first)[pc.list_parent_indices(shortest).to_numpy()]
    # Per user: the shortest history's items in their order, then every row's target in row order.
    row_of = np.r_[start_rows, np.arange(rows.num_rows)]
    part = np.r_[np.zeros(len(start_items), np.int8), np.ones(rows.num_rows, np.int8)]
    order = np.lexsort((np.arange(len(row_of)), part, codes[row_of]))
    items = pa.concat_arrays([start_items, rows.column("target").combine_chunks()]).take(pa.array(order))
    ranks = np.where(part == 0, 0, split[row_of])[order]
    return (users.dictionary.take(pa.array(codes[row_of][order])), items,
            pa.array(np.array(SPLITS)[ranks]))


def _to_original(indices: pa.Array, map_path: Path, what: str) -> pa.Array:
    """Map integer indices back to original ids with a header-less, tab-separated `id index` file."""
    mapping = read_delimited(map_path, delimiter="\t", quoted=False, names=["id", "index"])
    if pc.count_distinct(mapping.column("index")).as_py() != mapping.num_rows:
        raise BadInput(f"{map_path}: an index is given to more than one {what}")
    position = pc.index_in(indices, value_set=mapping.column("index"))
    if position.null_count:
        missing = pc.unique(indices.filter(pc.is_null(position))).to_pylist()
        raise BadInput(f"{map_path}: no {what} for index {', '.join(missing[:5])} "
                       f"({position.null_count} interactions in the split files)")
    return mapping.column("id").take(position).combine_chunks()


def read(config: DataConfig) -> RawData:
    *split_paths, text_path, item_map, user_map = files(config)
    users, items, split = _sequences(_split_rows(split_paths), split_paths)
    texts = read_atomic(text_path)
    require_columns(texts, ["item_id", "text"], text_path)
    return RawData(
        interactions=interactions_table(_to_original(users, user_map, "user"), _to_original(items, item_map, "item"),
                                        split=split),
        items=texts.select(["item_id", "text"]).rename_columns(["item_id", TEXT_ATTRIBUTE]),
        interactions_file=split_paths[0],
        items_file=text_path,
    )
