"""Reading delimited text files (CSV, TSV, RecBole atomic) and Parquet into string tables.

pyarrow does the parsing; when it refuses a file, the file is scanned once more in Python only to
name the offending line in the error.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.errors import BadInput


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
            with path.open("rb") as handle:
                first = handle.readline().decode("utf-8").rstrip("\r\n")
            names = next(csv.reader([first], delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE))
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


def read_table(path: Path, required: list[str] | None = None) -> pa.Table:
    """CSV (comma), TSV (tab) or Parquet, by file extension."""
    suffix = path.suffix.lower()
    if suffix in {".parquet", ".pq"}:
        return read_parquet(path, required)
    return read_delimited(path, "\t" if suffix in {".tsv", ".tab"} else ",", quoted=True, required=required)


def require_columns(table: pa.Table, required: list[str], path: Path, keys: dict[str, str] | None = None) -> None:
    """Raise BadInput naming the first missing column and, from `keys`, the setting that names it."""
    missing = [name for name in required if name not in table.column_names]
    if missing:
        fix = f"; set {keys[missing[0]]}" if keys and missing[0] in keys else ""
        raise BadInput(f"{path}: missing column {missing[0]!r} (columns: {', '.join(table.column_names)}){fix}")


def to_int64(column: pa.ChunkedArray | pa.Array, path: Path, name: str) -> pa.ChunkedArray | pa.Array:
    """Parse a column of integers or floats (e.g. `881250949` or `881250949.0`) as int64."""
    try:
        if pa.types.is_string(column.type):
            column = column.cast(pa.float64())
        return column.cast(pa.int64(), safe=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise BadInput(f"{path}: column {name!r} is not numeric ({' '.join(str(exc).split())})") from None


def to_string(column: pa.ChunkedArray | pa.Array, path: Path, name: str) -> pa.ChunkedArray | pa.Array:
    """A column as strings (Parquet numbers, dates ...), naming the column when its type has no text form."""
    try:
        return column.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise BadInput(f"{path}: column {name!r} of type {column.type} cannot be read as text "
                       f"({' '.join(str(exc).split())})") from None
