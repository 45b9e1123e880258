"""Shared by every benchmark: machine facts, the measured matmul peak, and writing results.

Each benchmark writes `benchmarks/results/<name>.json` (its figures, the machine, the date, the exact
command) and a short Markdown table beside it; a later run replaces both. Benchmarks run as modules from
the repository root: `python -m benchmarks.<name>`.
"""

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
    """What the numbers depend on: cores, CPU (and whether it has bf16 matmuls: the same command's bf16 runs
    differ 50x between machines of one kind here), GPU, threads, library versions, load at the time."""
    import torch

    from stages.accelerator import cpu_has_fast_bf16

    facts: dict[str, Any] = {"cores": os.cpu_count(), "cpu_model": cpu_model(),
                             "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                             "cpu_bf16_matmuls": cpu_has_fast_bf16(), "torch_threads": torch.get_num_threads(),
                             "torch": torch.__version__, "python": platform.python_version(),
                             "load_average_1m": round(os.getloadavg()[0], 2)}
    if torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(0)
    return facts


def matmul_peak_gflops(size: int = 4096, repeats: int = 3, dtype: str = "float32", device: str = "cpu") -> float:
    """The machine's measured matmul limit: the best of `repeats` square products, in GFLOP/s."""
    import torch

    a = torch.randn(size, size, dtype=getattr(torch, dtype), device=device)
    b = torch.randn(size, size, dtype=getattr(torch, dtype), device=device)

    def timed() -> float:
        if device != "cpu":
            torch.cuda.synchronize()
        started = time.perf_counter()
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    timed()  # warm-up
    return 2 * size**3 / min(timed() for _ in range(repeats)) / 1e9


def write(name: str, figures: dict[str, Any], table: list[tuple[str, Any]]) -> Path:
    """Write `<name>.json` (figures + machine + date + command) and `<name>.md` (the table); print the JSON."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    module = ".".join(Path(sys.argv[0]).resolve().relative_to(RESULTS.parents[1]).with_suffix("").parts)
    record = {**figures, "machine": machine(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(shlex.quote(arg) for arg in ["python", "-m", module, *sys.argv[1:]])}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    info = record["machine"]
    lines = [f"# {name}", "", "| figure | value |", "|---|---|", *(f"| {label} | {value} |" for label, value in table), "",
             (f"{info['cores']} cores ({info['cpu_model']}, {info['cpu_capability']}, bf16 matmuls: "
              f"{'yes' if info['cpu_bf16_matmuls'] else 'no'}), {info['torch_threads']} torch threads, torch {info['torch']}, "
              f"load average {info['load_average_1m']}; {record['date']}; `{record['command']}`"), ""]
    (RESULTS / f"{name}.md").write_text("\n".join(lines))
    print(json.dumps(record, indent=2))
    return path
