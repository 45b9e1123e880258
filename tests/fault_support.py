"""Helpers of the fault-injection tests: malicious pickles to plant, and a log the fault matrix aggregates.

A planted pickle opens (creates) a marker file when it is unpickled: if the marker ever exists, something
read from the workspace ran code. It is written under every name Accelerate, torch or transformers would
unpickle (optimizer.bin, random_states_0.pkl, custom_checkpoint_0.pkl, pytorch_model.bin, ...).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

from pipeline.faults import ENV

PICKLE_NAMES = ("optimizer.bin", "scheduler.bin", "scaler.pt", "random_states_0.pkl", "random_states_1.pkl",
                "custom_checkpoint_0.pkl", "pytorch_model.bin", "training_args.bin", "model.pkl")
REPO = Path(__file__).resolve().parents[1]
TIMING_FILES = {"metrics.json", "history.jsonl"}  # hold wall times; the metrics are compared through the manifest
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


def planted_sites(planted: list[Path], marker: Path) -> None:
    """Assert that none of the `planted` pickles ran (some may be gone since: a resume drops old checkpoints)."""
    executed = marker.exists()
    for path in planted:
        record("pickle", site=str(path), executed=executed)
    assert not executed, f"a planted pickle ran: {marker} exists"


def cli(root: Path, settings: list[str], *args: str, crash: str | None = None) -> subprocess.CompletedProcess:
    # One thread, as the test process has (conftest.one_thread): a run resumed in-process must sum as the child did.
    env = {**{k: v for k, v in os.environ.items() if k != ENV}, "OMP_NUM_THREADS": "1"}
    if crash:
        env[ENV] = crash
    sets = [part for s in [f"workspace.root={root}", *settings] for part in ("--set", s)]
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args, *sets], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def result_of(run_dir: Path) -> dict:
    """What must not change between an uninterrupted and a recovered run: every published file's hash."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    files = {name: facts["sha256"] for name, facts in manifest["files"].items() if name not in TIMING_FILES}
    return {"run_id": manifest["run_id"], "files": files, "metrics": manifest.get("metrics")}
