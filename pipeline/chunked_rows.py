"""Picking rows out of a table stored as consecutive chunks (Parquet parts and row groups, safetensors parts):
each chunk is asked only for the rows it holds, so no reader ever holds the whole table."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import numpy as np

Chunk = TypeVar("Chunk")


def rows_in_chunks(rows: np.ndarray, chunks: Iterable[Chunk], length: Callable[[Chunk], int]
                   ) -> Iterator[tuple[Chunk, np.ndarray]]:
    """Each chunk, in order, with the local indices of the ascending table rows `rows` it holds (`length(chunk)`
    rows each)."""
    offset = 0
    for chunk in chunks:
        size = length(chunk)
        lo, hi = np.searchsorted(rows, [offset, offset + size])
        yield chunk, np.asarray(rows[lo:hi]) - offset
        offset += size


def take_rows(rows: np.ndarray, chunks: Iterable[Chunk], length: Callable[[Chunk], int],
              read: Callable[[Chunk, np.ndarray], np.ndarray]) -> tuple[np.ndarray | None, int]:
    """The values of table rows `rows` (any order, repeats allowed), in that order, and the rows the chunks hold
    in all (the caller reports rows asked past them). `read(chunk, local)` gives a chunk's rows `local` (called
    for every chunk, with no rows where it holds none); None when there is no chunk."""
    order = np.argsort(rows, kind="stable")
    out: np.ndarray | None = None
    done = total = 0
    for chunk, local in rows_in_chunks(np.asarray(rows)[order], chunks, length):
        values = read(chunk, local)
        if out is None:
            out = np.empty((len(rows), *values.shape[1:]), values.dtype)
        out[order[done:done + len(local)]] = values
        done, total = done + len(local), total + length(chunk)
    return out, total
