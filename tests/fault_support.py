"""Helpers of the fault-injection tests: malicious pickles to plant, and a log the fault matrix aggregates.

A planted pickle opens (creates) a marker file when it is unpickled: if the marker ever exists, something
read from the workspace ran code. It is written under every name Accelerate, torch or transformers would
unpickle (optimizer.bin, random_states_0.pkl, custom_checkpoint_0.pkl, pytorch_model.bin, ...).
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

PICKLE_NAMES = ("optimizer.bin", "scheduler.bin", "scaler.pt", "random_states_0.pkl", "random_states_1.pkl",
                "custom_checkpoint_0.pkl", "pytorch_model.bin", "training_args.bin", "model.pkl")
LOG_ENV = "SEQREC_FAULT_LOG"  # set by `python -m benchmarks.fault_matrix`: where each trial is recorded


class _Payload:
    """Unpickling this calls open(marker, "w"): code from data, made visible."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return open, (str(self.marker), "w")


def plant(folder: Path, marker: Path, names: tuple[str, ...] = PICKLE_NAMES) -> list[Path]:
    """Write the malicious pickle into `folder` under each of `names`; the paths written."""
    payload = pickle.dumps(_Payload(marker))
    planted = []
    for name in names:
        path = folder / name
        path.write_bytes(payload)
        planted.append(path)
    return planted


def record(kind: str, **facts: object) -> None:
    """Append one trial to the fault log, when the fault matrix asked for one (tests run alone log nothing)."""
    log = os.environ.get(LOG_ENV)
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"kind": kind, **facts}, default=str) + "\n")


def planted_sites(folders: list[Path], marker: Path) -> None:
    """Assert that none of the pickles planted in `folders` ran, and log them."""
    executed = marker.exists()
    for folder in folders:
        record("pickle", site=str(folder), executed=executed)
    assert not executed, f"a planted pickle ran: {marker} exists"
