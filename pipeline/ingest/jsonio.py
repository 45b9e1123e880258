"""Reading JSON documents and JSON-lines files (plain or gzip), with errors that name the line."""

from __future__ import annotations

import ast
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import BadInput
from pipeline.ingest.tabular import require_file


def _decode(raw: bytes, path: Path, first_line: int = 1) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = first_line + raw.count(b"\n", 0, exc.start)
        raise BadInput(f"{path}: line {line}: not UTF-8 (byte 0x{raw[exc.start]:02x})") from None


def load_json(path: Path) -> Any:
    """One whole JSON document.

    Raises:
        BadInput: file missing, bad UTF-8 or bad JSON, with the line number.
    """
    text = _decode(require_file(path).read_bytes(), path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from None


def _parse_line(raw: bytes, path: Path, number: int) -> dict[str, Any]:
    """A JSON object, or else a Python literal dict: the 2014 Amazon metadata dumps were written with `repr`."""
    text = _decode(raw, path, number)
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        try:
            record = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise BadInput(f"{path}: line {number}: neither a JSON object nor a Python dict literal") from None
    if not isinstance(record, dict):
        raise BadInput(f"{path}: line {number}: expected an object, got {type(record).__name__}")
    return record


def iter_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSON-lines file (`.gz` is decompressed), streamed.

    Raises:
        BadInput: file missing or not readable (e.g. truncated gzip), or a line that is not an object.
    """
    opener = gzip.open if require_file(path).suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if raw.strip():
                    yield number, _parse_line(raw, path, number)
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError; EOFError is a truncated stream
        raise BadInput(f"{path}: not readable ({' '.join(str(exc).split())})") from None


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, (list, tuple)):
        for element in value:
            yield from _leaves(element)
    elif value is not None:
        yield str(value)


def text_of(value: Any, sep: str = ", ", unique: bool = False) -> str:
    """An attribute value as one string: nested lists flattened and joined by `sep`, null as "".

    With `unique`, repeated parts are kept once (Amazon 2014 category paths repeat their roots).
    """
    parts = [part for part in _leaves(value) if part.strip()]
    return sep.join(dict.fromkeys(parts) if unique else parts)
