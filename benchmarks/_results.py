"""Shared by every benchmark: machine facts, the measured matmul peak, and writing results.

Each benchmark writes `benchmarks/results/<name>.json` (its figures, the machine, the date, the exact
command) and a short Markdown table beside it; a later run replaces both.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    facts: dict[str, Any] = {"cores": os.cpu_count(), "cpu_model": cpu_model(), "python": platform.python_version()}
    try:
        import torch
        facts["torch"] = torch.__version__
        facts["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            facts["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return facts


def matmul_peak_gflops(size: int = 2048, repeats: int = 5, dtype: str = "float32", device: str = "cpu") -> float:
    """The machine's achievable matmul rate: median GFLOP/s of square `size` matmuls (the roofline we compare to)."""
    import torch

    a = torch.randn(size, size, dtype=getattr(torch, dtype), device=device)
    b = torch.randn(size, size, dtype=getattr(torch, dtype), device=device)
    rates = []
    for _ in range(repeats + 1):
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        rates.append(2 * size**3 / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates[1:])


def write(name: str, figures: dict[str, Any], table: list[tuple[str, Any]]) -> Path:
    """Write `<name>.json` (figures + machine + date + command) and `<name>.md` (the table)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    module = ".".join(Path(sys.argv[0]).resolve().relative_to(RESULTS.parents[1]).with_suffix("").parts)
    record = {**figures, "machine": machine(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(shlex.quote(arg) for arg in ["python", "-m", module, *sys.argv[1:]])}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"# {name}", "", "| figure | value |", "|---|---|"]
    lines += [f"| {label} | {value} |" for label, value in table]
    lines += ["", f"Machine: {record['machine']}. Date: {record['date']}.", f"Command: `{record['command']}`", ""]
    (RESULTS / f"{name}.md").write_text("\n".join(lines))
    return path
