"""The canonical dataset made out of core by DuckDB: the rows, order, split and facts of `pipeline.dataset.build`,
in memory bounded by `data.memory_limit_gib`, for logs larger than memory.

Why DuckDB rather than `pyarrow.dataset`: every step is a join, a group-by or a window (k-core counts, each
user's order and last rows, the final sort), and DuckDB runs each of them spilling to disk under one memory
limit, while pyarrow's joins, group-bys and sorts hold their whole input in memory. It is one wheel, in process.

The steps mirror `pipeline.dataset.build` on integer codes: the source's rows are loaded into a table whose
`rowid` is their source order (the tie-break), users are numbered by their first row and items by the
catalog's order, so sorting by (user, time, row) gives the memory engine's order. The database file and the
spill files live in a folder the caller names (inside the run's partial folder) and are deleted with it.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from pipeline.config import DataConfig
from pipeline.contracts.dataset import INTERACTIONS_SCHEMA, TIMESTAMP
from pipeline.contracts.parquet import ROW_GROUP_ROWS
from pipeline.dataset import (
    EXAMPLES,
    catalog,
    manifest_facts,
    nothing_left_error,
    source_split_lost_error,
    unknown_items_error,
)
from pipeline.errors import BadInput
from pipeline.ingest import InteractionsSource
from pipeline.ingest.canonical import check_split_values
from pipeline.ingest.tabular import not_a_time, parquet_parts

DUCKDB_SHARE = 0.75  # of data.memory_limit_gib; the rest holds the interpreter, the item table and the batches written
_NO_NULL = "\x01"  # never in a text file: empty fields stay empty strings, as the memory engine reads them
_CONTRACT = ("user_id", "item_id", "timestamp", "split")


@dataclass
class Streamed:
    """The canonical items, the interactions as batches in INTERACTIONS_SCHEMA (read while the engine is open),
    and the facts for the manifest."""

    items: pa.Table
    interactions: Iterator[pa.RecordBatch]
    facts: dict[str, Any]


@contextmanager
def engine(folder: Path, memory_limit_gib: float) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB database in `folder` (created, and deleted afterwards) that spills there beyond the limit."""
    folder.mkdir(parents=True)
    connection = duckdb.connect(str(folder / "prepare.duckdb"))
    try:
        connection.execute(f"SET memory_limit = '{memory_limit_gib * DUCKDB_SHARE * 1024:.0f}MiB'")
        connection.execute(f"SET temp_directory = {_literal(folder / 'spill')}")
        connection.execute("SET preserve_insertion_order = true")  # rowid = source order
        connection.execute("SET TimeZone = 'UTC'")  # ISO times without an offset are UTC, as in the memory engine
        yield connection
    finally:
        connection.close()
        shutil.rmtree(folder, ignore_errors=True)


def build(db: duckdb.DuckDBPyConnection, reader: ModuleType, config: DataConfig) -> Streamed:
    """Check, clean, filter, sort and split as `pipeline.dataset.build` does, out of core.

    Raises:
        BadInput: what `pipeline.dataset.build` raises, and unreadable rows of the interactions file (named).
    """
    source = reader.interactions_source(config)
    items_file = reader.files(config)[1]
    items = catalog(reader.read_items(config), config, str(items_file))
    raw = _encode(db, source, items, items_file, config)
    kept = _dedup(db, config, raw.has_time)
    duplicates = raw.counts["interactions"] - raw.unknown - _rows(db, kept)
    kept, kcore_removed = _kcore(db, kept, config.kcore_users, config.kcore_items)
    kept, truncated = _max_history(db, kept, config.max_history)
    n_kept = _rows(db, kept)
    if n_kept == 0:
        raise nothing_left_error(source.path, config)
    if raw.use_source_split:
        lost = raw.evaluated - _count(db, f"SELECT count(*) FROM {kept} WHERE split IN ('valid', 'test')")
        if lost:
            raise source_split_lost_error(source.path, lost)
    used = db.execute(f"SELECT DISTINCT i FROM {kept} ORDER BY i").fetchnumpy()["i"]
    counts = {"users": _count(db, f"SELECT count(DISTINCT u) FROM {kept}"), "items": len(used),
              "interactions": n_kept}
    facts = manifest_facts(raw.counts, counts, _split_rows(db, kept, raw.use_source_split), raw.use_source_split,
                           [raw.unknown, duplicates, kcore_removed, truncated], len(items) - len(used), raw.has_time)
    return Streamed(items.take(pa.array(used)), _ordered(db, kept, raw.use_source_split, raw.has_time), facts)


@dataclass(frozen=True)
class _Raw:
    """What the interactions were as read: counts, rows naming unknown items, whether they have times and a
    split to keep, and how many of them the source put in valid or test."""

    counts: dict[str, int]
    unknown: int
    has_time: bool
    use_source_split: bool
    evaluated: int


def _encode(db: duckdb.DuckDBPyConnection, source: InteractionsSource, items: pa.Table, items_file: Path,
            config: DataConfig) -> _Raw:
    """Table `coded`: the interactions on known items as integer codes (u: user by first row, i: catalog row,
    t: epoch time or 0, row: source row) with the source's split; tables `users` and `catalog` map codes back."""
    db.register("catalog_rows", pa.table({"item_id": items.column("item_id"), "i": np.arange(len(items))}))
    db.execute("CREATE TABLE catalog AS SELECT * FROM catalog_rows")
    db.unregister("catalog_rows")
    _load(db, source)
    n_raw, users_raw, items_raw, n_timed, n_split, evaluated = _one(
        db, "SELECT count(*), count(DISTINCT user_id), count(DISTINCT item_id), count(timestamp), count(split), "
        "count(*) FILTER (split IN ('valid', 'test')) FROM raw")
    if n_split:
        check_split_values([row[0] for row in db.execute("SELECT DISTINCT split FROM raw WHERE split IS NOT NULL "
                                                         "LIMIT 10").fetchall()], source.path)
    db.execute("CREATE TABLE users AS SELECT user_id, row_number() OVER (ORDER BY min(rowid)) - 1 AS u "
               "FROM raw GROUP BY user_id")
    db.execute(f"CREATE TABLE coded AS SELECT users.u, catalog.i, coalesce({_epoch(db, source)}, 0) AS t, "
               "raw.rowid AS row, raw.split FROM raw JOIN catalog USING (item_id) JOIN users USING (user_id)")
    unknown = n_raw - _rows(db, "coded")
    if unknown and not config.drop_unknown_items:
        examples = db.execute(f"SELECT item_id FROM raw WHERE item_id NOT IN (SELECT item_id FROM catalog) "
                              f"GROUP BY item_id ORDER BY min(rowid) LIMIT {EXAMPLES}").fetchall()
        raise unknown_items_error(source.path, unknown, items_file, [str(row[0]) for row in examples])
    db.execute("DROP TABLE raw")
    return _Raw({"users": users_raw, "items": items_raw, "interactions": n_raw}, unknown, n_timed > 0,
                config.split == "auto" and n_split > 0, evaluated)


def _load(db: duckdb.DuckDBPyConnection, source: InteractionsSource) -> None:
    """The interactions as they are in the source, in its row order (`rowid`), contract columns as text but time."""
    def column(name: str) -> str:
        if name not in source.columns:
            return f"CAST(NULL AS {'BIGINT' if name == 'timestamp' else 'VARCHAR'}) AS {name}"
        quoted = _identifier(source.columns[name])
        return f"{quoted} AS {name}" if name == "timestamp" else f"CAST({quoted} AS VARCHAR) AS {name}"

    try:
        db.execute(f"CREATE TABLE raw AS SELECT {', '.join(map(column, _CONTRACT))} FROM {_relation(source)}")
    except duckdb.Error as exc:
        raise BadInput(_unreadable(source, exc)) from None


def _relation(source: InteractionsSource) -> str:
    if source.delimiter is None:
        files = parquet_parts(source.path) if source.path.is_dir() else [source.path]
        return (f"read_parquet([{', '.join(map(_literal, files))}], hive_partitioning = {source.path.is_dir()}, "
                "hive_types_autocast = false)")
    quote = "'\"'" if source.quoted else "''"
    columns = ", ".join(f"{_literal(name)}: 'VARCHAR'" for name in source.names)
    return (f"read_csv({_literal(source.path)}, delim = {_literal(source.delimiter)}, quote = {quote}, "
            f"escape = {quote}, header = true, auto_detect = false, columns = {{{columns}}}, strict_mode = true, "
            f"null_padding = false, nullstr = {_literal(_NO_NULL)})")


def _unreadable(source: InteractionsSource, exc: duckdb.Error) -> str:
    """One line naming the file and, for a delimited file, the line DuckDB stopped at and why (a wrong field count
    in the memory engine's words)."""
    text = str(exc)
    line = re.search(r"CSV Error on Line: (\d+)", text)
    if line is None:
        return f"{source.path}: not readable ({text.splitlines()[0]})"
    fields = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", text)
    reasons = [part.strip().rstrip(".") for part in text.splitlines()[1:] if part.strip()
               and not part.startswith("Original Line")]
    reason = f"expected {fields.group(1)} fields, got {fields.group(2)}" if fields else (reasons or ["unreadable"])[0]
    return f"{source.path}: line {line.group(1)}: {reason}"


def _epoch(db: duckdb.DuckDBPyConnection, source: InteractionsSource) -> str:
    """The SQL for the `timestamp` column as epoch numbers, as `tabular.to_epoch` reads it: numbers truncated to
    integers; times and dates as seconds; text as numbers if every value is one, else as ISO-8601 times.

    Raises:
        BadInput: a text value is neither a number nor an ISO-8601 time (named with its row).
    """
    kind = _one(db, "SELECT data_type FROM information_schema.columns WHERE table_name = 'raw' "
                    "AND column_name = 'timestamp'")[0]
    if kind.startswith(("TIMESTAMP", "DATE")):
        return "CAST(trunc(epoch(raw.timestamp)) AS BIGINT)"
    if kind != "VARCHAR":
        return "CAST(trunc(raw.timestamp) AS BIGINT)"
    if not _count(db, "SELECT count(*) FROM raw WHERE TRY_CAST(timestamp AS DOUBLE) IS NULL AND timestamp IS NOT NULL"):
        return "CAST(trunc(CAST(raw.timestamp AS DOUBLE)) AS BIGINT)"
    bad = db.execute("SELECT rowid, timestamp FROM raw WHERE TRY_CAST(timestamp AS TIMESTAMPTZ) IS NULL "
                     "AND timestamp IS NOT NULL ORDER BY rowid LIMIT 1").fetchall()
    if bad:
        raise not_a_time(source.path, source.columns["timestamp"], bad[0][0] + 1, bad[0][1])
    return "CAST(trunc(epoch(CAST(raw.timestamp AS TIMESTAMPTZ))) AS BIGINT)"


def _dedup(db: duckdb.DuckDBPyConnection, config: DataConfig, has_time: bool) -> str:
    """The table after de-duplication: `first` keeps each (user, item)'s first row by (time, row); otherwise the
    same user, item and time twice is a duplicated record, of which the first row is kept."""
    if config.dedup == "first":
        key = "u, i"
    elif has_time:
        key = "u, i, t"
    else:
        return "coded"
    db.execute(f"CREATE TABLE deduped AS SELECT * FROM coded QUALIFY row_number() OVER (PARTITION BY {key} "
               "ORDER BY t, row) = 1")
    db.execute("DROP TABLE coded")
    return "deduped"


def _kcore(db: duckdb.DuckDBPyConnection, table: str, min_user: int, min_item: int) -> tuple[str, int]:
    """Iterative k-core, as `pipeline.dataset._kcore`: drop the users and items below their minimum, recount,
    repeat until none is. The users and items dropped gather in two small tables, so a round reads the log once
    and it is written once, at the end. Returns the table left and how many rows went."""
    if not (min_user or min_item):
        return table, 0
    db.execute("CREATE TABLE short_users (u BIGINT)")
    db.execute("CREATE TABLE short_items (i BIGINT)")
    alive = f"{table} ANTI JOIN short_users USING (u) ANTI JOIN short_items USING (i)"
    while True:
        db.execute(f"CREATE OR REPLACE TABLE short AS SELECT u, i FROM {alive} GROUP BY GROUPING SETS ((u), (i)) "
                   f"HAVING count(*) < CASE WHEN grouping(u) = 0 THEN {min_user} ELSE {min_item} END")
        if not _rows(db, "short"):
            break
        db.execute("INSERT INTO short_users SELECT u FROM short WHERE u IS NOT NULL")
        db.execute("INSERT INTO short_items SELECT i FROM short WHERE i IS NOT NULL")
    db.execute(f"CREATE TABLE kcore AS SELECT {table}.* FROM {alive}")
    removed = _rows(db, table) - _rows(db, "kcore")
    db.execute(f"DROP TABLE {table}")
    return "kcore", removed


def _max_history(db: duckdb.DuckDBPyConnection, table: str, max_history: int | None) -> tuple[str, int]:
    if max_history is None:
        return table, 0
    db.execute(f"CREATE TABLE recent AS SELECT * FROM {table} "
               f"QUALIFY row_number() OVER (PARTITION BY u ORDER BY t DESC, row DESC) <= {max_history}")
    truncated = _rows(db, table) - _rows(db, "recent")
    db.execute(f"DROP TABLE {table}")
    return "recent", truncated


def _split_rows(db: duckdb.DuckDBPyConnection, table: str, use_source_split: bool) -> dict[str, int]:
    if use_source_split:
        return dict(db.execute(f"SELECT split, count(*) FROM {table} GROUP BY split").fetchall())
    total, valid, test = _one(db, f"SELECT sum(n), count(*) FILTER (n >= 3), count(*) FILTER (n >= 2) "
                                  f"FROM (SELECT count(*) AS n FROM {table} GROUP BY u)")
    return {"train": int(total) - valid - test, "valid": valid, "test": test}


def _ordered(db: duckdb.DuckDBPyConnection, table: str, use_source_split: bool, has_time: bool,
             ) -> Iterator[pa.RecordBatch]:
    """The interactions in the contract's order (user by first appearance, time, source row), with each row's
    position and split, as batches of ROW_GROUP_ROWS rows in INTERACTIONS_SCHEMA."""
    split = "split" if use_source_split else (
        "CASE WHEN from_end = 0 AND n >= 2 THEN 'test' WHEN from_end = 1 AND n >= 3 THEN 'valid' ELSE 'train' END")
    reader = db.sql(
        f"SELECT users.user_id, catalog.item_id, t, position, {split} AS split FROM ("
        f"  SELECT *, n - 1 - position AS from_end FROM ("
        f"    SELECT u, i, t, row, split, CAST(row_number() OVER w - 1 AS INTEGER) AS position, count(*) OVER w_all AS n"
        f"    FROM {table} WINDOW w AS (PARTITION BY u ORDER BY t, row), w_all AS (PARTITION BY u)))"
        f" JOIN users USING (u) JOIN catalog USING (i) ORDER BY u, t, row").to_arrow_reader(ROW_GROUP_ROWS)
    for batch in reader:
        yield _contract_batch(batch, has_time)


def _contract_batch(batch: pa.RecordBatch, has_time: bool) -> pa.RecordBatch:
    times = (batch.column("t").cast(pa.timestamp("s", tz="UTC")).cast(TIMESTAMP) if has_time
             else pa.nulls(batch.num_rows, TIMESTAMP))  # sources give epoch seconds
    columns = [batch.column("user_id").cast(pa.string()), batch.column("item_id").cast(pa.string()), times,
               batch.column("position"), batch.column("split").cast(pa.string())]
    return pa.RecordBatch.from_arrays(columns, schema=INTERACTIONS_SCHEMA)


def _rows(db: duckdb.DuckDBPyConnection, table: str) -> int:
    return _count(db, f"SELECT count(*) FROM {table}")


def _count(db: duckdb.DuckDBPyConnection, query: str) -> int:
    return int(_one(db, query)[0])


def _one(db: duckdb.DuckDBPyConnection, query: str) -> tuple:
    """The one row `query` returns (fetched to the end, so the connection is free for the next statement)."""
    return db.execute(query).fetchall()[0]


def _literal(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'

