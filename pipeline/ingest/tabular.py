"""Reading delimited text files (CSV, TSV, RecBole atomic) and Parquet (a file, or a folder of parts as Spark and
DuckDB write them) into string tables, and time columns into int64.

pyarrow does the parsing; when it refuses a file, the file is scanned once more in Python only to
name the offending line in the error.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipeline.errors import BadInput
from pipeline.ingest import InteractionsSource


def require_file(path: Path) -> Path:
    if not path.is_file():
        raise BadInput(f"{path}: file not found")
    return path


def _locate_problem(path: Path, delimiter: str, quoted: bool) -> str:
    """Describe the first line that is not UTF-8 or has the wrong number of fields."""
    with path.open("rb") as handle:
        raw_lines = handle.read().splitlines()
    for number, raw in enumerate(raw_lines, start=1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return f"line {number}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
    text = b"\n".join(raw_lines).decode("utf-8")
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, strict=True,
                        quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE)
    expected = None
    try:
        for row in reader:
            if expected is None:
                expected = len(row)
            elif row and len(row) != expected:
                return f"line {reader.line_num}: expected {expected} fields, got {len(row)}"
    except csv.Error as exc:  # an unmatched or misplaced quote
        return f"line {reader.line_num}: {exc} (an unmatched quote?)"
    return "unreadable"


def read_delimited(path: Path, delimiter: str = ",", quoted: bool = True,
                   required: list[str] | None = None, names: list[str] | None = None) -> pa.Table:
    """Read a delimited file into a table of strings: with a header row, or without one when `names` are given.

    Raises:
        BadInput: file missing, a line with the wrong number of fields or bad UTF-8 (with its line
            number), or a required column missing.
    """
    require_file(path)
    try:
        header_names = names
        if names is None:
            names = header(path, delimiter, quoted)
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 24, column_names=header_names),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char='"' if quoted else False,
                                             newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(column_types={name: pa.string() for name in names},
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError):
        raise BadInput(f"{path}: {_locate_problem(path, delimiter, quoted)}") from None
    if quoted and _odd_quotes(path):  # an escaped quote is doubled, so a well-formed file has an even count
        raise BadInput(f"{path}: {_locate_problem(path, delimiter, quoted)}")
    _refuse_line_breaks(table, path)
    require_columns(table, required or [], path)
    return table


def header(path: Path, delimiter: str, quoted: bool) -> list[str]:
    """The column names on a delimited file's first line.

    Raises:
        UnicodeDecodeError: the line is not UTF-8.
    """
    with path.open("rb") as handle:
        first = handle.readline().decode("utf-8").rstrip("\r\n")
    return next(csv.reader([first], delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE))


def _odd_quotes(path: Path) -> bool:
    count = 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            count += block.count(b'"')
    return count % 2 == 1


def _refuse_line_breaks(table: pa.Table, path: Path) -> None:
    """Values never span lines here, so a line break inside one means a quote was left open and swallowed rows."""
    for name in table.column_names:
        broken = pc.match_substring_regex(table.column(name), "[\r\n]")
        if pc.any(broken).as_py():
            row = pc.index(broken, True).as_py()
            raise BadInput(f"{path}: an unmatched quote: column {name!r} of data row {row + 1} runs on across lines")


def read_atomic(path: Path) -> pa.Table:
    """A RecBole atomic file (tab-separated, no quoting) as strings, `:type` suffixes dropped from the names."""
    table = read_delimited(path, delimiter="\t", quoted=False)
    return table.rename_columns([name.split(":", 1)[0] for name in table.column_names])


def read_parquet(path: Path, required: list[str] | None = None) -> pa.Table:
    """Read a Parquet file, naming the file when it is truncated or corrupt."""
    require_file(path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadInput(f"{path}: not a readable Parquet file ({' '.join(str(exc).split())})") from None
    require_columns(table, required or [], path)
    return table


def parquet_parts(folder: Path) -> list[Path]:
    """The data files of a partitioned Parquet folder (`part-*.parquet`, under hive `key=value/` folders), in path
    order; Spark's and Hadoop's markers (`_SUCCESS`, `.crc` files) are not data."""
    hidden = (".", "_")
    return sorted(p for p in folder.rglob("*") if p.is_file() and not any(
        part.startswith(hidden) for part in p.relative_to(folder).parts))


def read_parquet_folder(folder: Path, required: list[str] | None = None) -> pa.Table:
    """A folder of Parquet parts as one table; hive partition folders (`day=2024-05-01/`) become columns.

    Raises:
        BadInput: the folder holds no data file, or a part is not readable Parquet.
    """
    if not parquet_parts(folder):
        raise BadInput(f"{folder}: a folder with no Parquet files")
    try:
        table = pq.read_table(folder, partitioning="hive")
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadInput(f"{folder}: not a readable Parquet dataset ({' '.join(str(exc).split())})") from None
    require_columns(table, required or [], folder)
    return table


def read_table(path: Path, required: list[str] | None = None) -> pa.Table:
    """CSV (comma), TSV (tab) or Parquet, by file extension; a folder is a partitioned Parquet dataset."""
    if path.is_dir():
        return read_parquet_folder(path, required)
    suffix = path.suffix.lower()
    if suffix in {".parquet", ".pq"}:
        return read_parquet(path, required)
    return read_delimited(path, "\t" if suffix in {".tsv", ".tab"} else ",", quoted=True, required=required)


def table_source(path: Path, columns: dict[str, str], keys: dict[str, str] | None = None) -> InteractionsSource:
    """What `read_table` would read, described for an engine that reads it itself: only the header (or the Parquet
    footers) is read here.

    Raises:
        BadInput: the file is missing or unreadable, or lacks a column of `columns`.
    """
    try:
        if path.is_dir():
            if not parquet_parts(path):
                raise BadInput(f"{path}: a folder with no Parquet files")
            source = InteractionsSource(path, columns, ds.dataset(path, partitioning="hive").schema.names)
        elif path.suffix.lower() in {".parquet", ".pq"}:
            source = InteractionsSource(path, columns, pq.read_schema(require_file(path)).names)
        else:
            delimiter = "\t" if path.suffix.lower() in {".tsv", ".tab"} else ","
            source = InteractionsSource(path, columns, header(require_file(path), delimiter, True), delimiter, True)
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadInput(f"{path}: not a readable Parquet file or folder ({' '.join(str(exc).split())})") from None
    except UnicodeDecodeError:
        raise BadInput(f"{path}: line 1: not UTF-8") from None
    require_names(source.names, list(columns.values()), path, keys)
    return source


def require_columns(table: pa.Table, required: list[str], path: Path, keys: dict[str, str] | None = None) -> None:
    """Raise BadInput naming the first missing column and, from `keys`, the setting that names it."""
    require_names(table.column_names, required, path, keys)


def require_names(names: list[str], required: list[str], path: Path, keys: dict[str, str] | None = None) -> None:
    """`require_columns` for a file's column names (read from its header or footer, the rows left unread)."""
    missing = [name for name in required if name not in names]
    if missing:
        fix = f"; set {keys[missing[0]]}" if keys and missing[0] in keys else ""
        raise BadInput(f"{path}: missing column {missing[0]!r} (columns: {', '.join(names)}){fix}")


def to_epoch(column: pa.ChunkedArray | pa.Array, path: Path, name: str) -> pa.ChunkedArray | pa.Array:
    """Times as int64: epoch numbers as they are (`881250949`, `881250949.0`, in the source's unit); ISO-8601 text
    (`2024-05-01T12:00:00Z`, `2024-05-01 14:00:00+02:00`, `2024-05-01`) and Parquet timestamps and dates as epoch
    seconds (UTC; a time without an offset is read as UTC).

    Raises:
        BadInput: a value is neither a number nor an ISO-8601 time (named with its row).
    """
    if pa.types.is_dictionary(column.type):  # a hive partition column
        column = column.cast(column.type.value_type)
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        return _epoch_seconds(column.cast(pa.timestamp("ns", tz=getattr(column.type, "tz", None))))
    try:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            column = column.cast(pa.float64())
        return column.cast(pa.int64(), safe=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            raise BadInput(f"{path}: column {name!r} is not numeric ({' '.join(str(exc).split())})") from None
    return _epoch_seconds(_iso_times(column, path, name))


def _epoch_seconds(times: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    return times.cast(pa.timestamp("s", tz=times.type.tz), safe=False).cast(pa.int64())


def _iso_times(column: pa.ChunkedArray | pa.Array, path: Path, name: str) -> pa.ChunkedArray | pa.Array:
    """ISO-8601 text as UTC times: Arrow parses a column all with or all without offsets; a mixed one, or one with a
    bad value, is read value by value, and the first value that is not a time is named."""
    for zone in (None, "UTC"):
        try:
            return column.cast(pa.timestamp("ns", tz=zone))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    times = []
    for row, text in enumerate(column.to_pylist(), start=1):
        try:
            moment = None if text is None else datetime.fromisoformat(text)
        except ValueError:
            raise not_a_time(path, name, row, text) from None
        times.append(moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC))
    return pa.array(times, pa.timestamp("ns", tz="UTC"))


def not_a_time(path: Path, name: str, row: int, text: str | None) -> BadInput:
    return BadInput(f"{path}: column {name!r}, row {row}: {text!r} is neither an epoch number nor an ISO-8601 time")


def to_string(column: pa.ChunkedArray | pa.Array, path: Path, name: str) -> pa.ChunkedArray | pa.Array:
    """A column as strings (Parquet numbers, dates ...), naming the column when its type has no text form."""
    try:
        return column.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise BadInput(f"{path}: column {name!r} of type {column.type} cannot be read as text "
                       f"({' '.join(str(exc).split())})") from None
