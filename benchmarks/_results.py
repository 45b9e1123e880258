"""Shared by the benchmarks: machine facts, a matmul peak, and writing results as JSON + a Markdown table."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """What the numbers depend on: cores, CPU, threads, library versions, load at the time."""
    import faiss

    return {"cores": os.cpu_count(), "cpu_model": cpu_model(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "faiss": faiss.__version__, "python": platform.python_version(),
            "load_average_1m": os.getloadavg()[0]}


def matmul_peak_gflops(size: int = 4096, repeats: int = 3) -> float:
    """Best of `repeats` float32 (size x size) @ (size x size) products, in GFLOP/s."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def write(name: str, results: dict[str, Any], table: list[tuple[str, str]]) -> None:
    """`results/<name>.json` (results, machine, date, command) and `results/<name>.md` (a two-column table)."""
    RESULTS.mkdir(exist_ok=True)
    command = "python " + " ".join(shlex.quote(arg) for arg in [os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    payload = {**results, "machine": machine(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "command": command}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    rows = "\n".join(f"| {key} | {value} |" for key, value in table)
    info = payload["machine"]
    (RESULTS / f"{name}.md").write_text(
        f"# {name}\n\n| measure | value |\n|---|---|\n{rows}\n\n"
        f"{info['cores']} cores ({info['cpu_model']}), {info['torch_threads']} torch threads, torch {info['torch']}, "
        f"load average {info['load_average_1m']:.1f}; {payload['date']}; `{command}`\n")
    print(json.dumps(payload, indent=2))
