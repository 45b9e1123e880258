"""Training state as safetensors + JSON: nothing a checkpoint holds can run code when it is read back.

Accelerate's `save_state` pickles the RNG states, registered objects (schedulers) and, without safetensors,
the optimizer; unpickling a file planted in a shared workspace runs its code as the next job's user. Here
every piece of state is a tree of plain values (dicts, lists, tuples, numbers, strings, tensors, numpy
arrays) split into a JSON document and a safetensors file of its tensors. Only those types are written;
anything else fails at save time, so a checkpoint never silently drops state it could not encode.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

# JSON has no tuples, integer keys, tensors or arrays: each is written as a one-key object tagged by one of these.
_TUPLE, _DICT, _TENSOR, _ARRAY = "__tuple__", "__dict__", "__tensor__", "__ndarray__"


class StateError(Exception):
    """A piece of saved state is missing, unreadable or does not fit what is being restored."""


def encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """`value` as JSON-ready data; its tensors are moved into `tensors` under their tree path.

    Raises:
        TypeError: `value` holds something other than plain data, tensors or numpy arrays.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        key = str(len(tensors))
        tensors[key] = value.detach().to("cpu", copy=True).contiguous()
        return {_TENSOR: key}
    if isinstance(value, np.ndarray):
        return {_ARRAY: value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {_TUPLE: [encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [encode(v, tensors) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: encode(v, tensors) for k, v in value.items()}
        return {_DICT: [[encode(k, tensors), encode(v, tensors)] for k, v in value.items()]}
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint (only plain data and tensors)")


def decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of `encode`."""
    if isinstance(value, list):
        return [decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if _TENSOR in value:
        return tensors[value[_TENSOR]]
    if _ARRAY in value:
        return np.array(value[_ARRAY], dtype=np.dtype(value["dtype"]))
    if _TUPLE in value:
        return tuple(decode(v, tensors) for v in value[_TUPLE])
    if _DICT in value:
        return {decode(k, tensors): decode(v, tensors) for k, v in value[_DICT]}
    return {k: decode(v, tensors) for k, v in value.items()}


def write(folder: Path, name: str, value: Any) -> None:
    """Store `value` as `<name>.json` and `<name>.safetensors` in `folder`."""
    tensors: dict[str, torch.Tensor] = {}
    document = encode(value, tensors)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(document), encoding="utf-8")


def read(folder: Path, name: str) -> Any:
    """The value stored by `write`.

    Raises:
        StateError: either file is missing or unreadable, or they do not belong together.
    """
    try:
        tensors = load_file(str(folder / f"{name}.safetensors"))
        return decode(json.loads((folder / f"{name}.json").read_text(encoding="utf-8")), tensors)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:  # safetensors raises its own ValueError subclasses
        raise StateError(f"{folder / name}.*: {type(exc).__name__}: {' '.join(str(exc).split())}") from None
    except Exception as exc:  # noqa: BLE001 - safetensors' SafetensorError is no ValueError
        raise StateError(f"{folder / name}.*: {' '.join(str(exc).split())}") from None


def rng_state() -> dict[str, Any]:
    """This process's random generators: Python's, numpy's, torch's CPU one and CUDA's when present."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned (the CUDA states only where CUDA was saved and is present).

    Raises:
        StateError: a generator the save had is missing, or CUDA was saved and is not here.
    """
    try:
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        if "cuda" in state:
            torch.cuda.set_rng_state_all(state["cuda"])
    except (KeyError, TypeError, ValueError, RuntimeError, AssertionError) as exc:
        raise StateError(f"random generator state does not fit: {type(exc).__name__}: {exc}") from None


def load_into(stateful: Any, saved: Any, name: str) -> None:
    """`stateful.load_state_dict(saved)` (an optimizer moves the CPU tensors to its parameters' device).

    Raises:
        StateError: the saved state does not fit the object.
    """
    try:
        stateful.load_state_dict(saved)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise StateError(f"{name} state does not fit: {type(exc).__name__}: {exc}") from None
