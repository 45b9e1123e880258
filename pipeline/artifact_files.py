"""Reading a run's binary files (FAISS index, safetensors weights) with damage reported as bad input.

A truncated or overwritten file in a run folder is a fault of the input, not of the code: the reader names
the file and exits 2, where the libraries would raise a bare RuntimeError or SafetensorError.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import BadInput


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def read_faiss(path: Path) -> Any:
    """The FAISS index stored at `path`.

    Raises:
        BadInput: the file is missing, a folder, truncated or not a FAISS index.
    """
    import faiss

    if not path.is_file():
        raise BadInput(f"{path}: not found" if not path.exists() else f"{path}: not a file")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        raise BadInput(f"{path}: not a readable FAISS index ({_reason(exc)})") from None


def read_tensors(path: Path, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The tensors of the safetensors file at `path` (CPU), less those named in `exclude` (never read).

    Raises:
        BadInput: the file is missing, a folder, truncated or not safetensors.
    """
    with _opened(path) as stored:
        return {name: stored.get_tensor(name) for name in stored.keys() if name not in exclude}  # noqa: SIM118


def tensor_shape(path: Path, name: str) -> list[int]:
    """The shape of tensor `name` in the safetensors file at `path`, from its header alone.

    Raises:
        BadInput: the file is missing, damaged or has no such tensor.
    """
    with _opened(path) as stored:
        return list(stored.get_slice(name).get_shape())


def tensor_rows(path: Path, name: str, start: int, stop: int) -> Any:
    """Rows [start, stop) of tensor `name` in the safetensors file at `path`: only those are read.

    Raises:
        BadInput: the file is missing, damaged or has no such tensor.
    """
    with _opened(path) as stored:
        return stored.get_slice(name)[start:stop]


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[Any]:
    """The safetensors file at `path`, open for reading; a missing or damaged one (or tensor) is bad input naming
    the file."""
    from safetensors import safe_open

    if not path.is_file():
        raise BadInput(f"{path}: not found" if not path.exists() else f"{path}: not a file")
    try:
        with safe_open(str(path), "pt") as stored:
            yield stored
    except Exception as exc:  # noqa: BLE001 - safetensors' own SafetensorError derives from Exception only
        raise BadInput(f"{path}: not a readable safetensors file ({_reason(exc)})") from None


def read_json(path: Path) -> Any:
    """The JSON document at `path`.

    Raises:
        BadInput: the file is missing, a folder, not UTF-8 or not JSON.
    """
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{path}: not found") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: not a file") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadInput(f"{path}: not valid JSON ({_reason(exc)})") from None

