"""Benchmarks drive the product through its real CLI, one subprocess per command, as a user would."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pipeline(config: str, workspace: Path, command: str, *overrides: str, force: bool = False) -> tuple[Path, float]:
    """Run `python -m pipeline.cli COMMAND -c CONFIG` in `workspace`; the run folder it prints last, its wall time."""
    args = [sys.executable, "-m", "pipeline.cli", command, "--config", config, "--set", f"workspace.root={workspace}"]
    for override in overrides:
        args += ["--set", override]
    started = time.perf_counter()
    done = subprocess.run([*args, *(["--force"] if force else [])], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                          check=True)
    return Path(done.stdout.strip().splitlines()[-1]), time.perf_counter() - started
