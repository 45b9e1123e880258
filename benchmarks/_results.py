"""Shared by every benchmark: machine facts, the measured matmul peak, and writing results.

Each benchmark writes `benchmarks/results/<name>.json` (its figures, the machine, the date, the git commit,
the exact command, its wall time) and a short Markdown table beside it; a later run replaces both, so the
folder holds the current figures only and git holds their history. `<name>` is the benchmark module's name;
a benchmark run in several settings writes one pair per setting into a folder named after it
(`device_align/<setting>`).
`SEQREC_BENCH_RESULTS=<folder>` sends them elsewhere (smoke runs write to a temporary folder, never over
the committed figures). Benchmarks run as modules from the repository root: `python -m benchmarks.<name>`.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"  # the committed figures
RESULTS_ENV = "SEQREC_BENCH_RESULTS"
# Flags that decide matmul speed here: the same model name comes with and without AVX-512 / AMX / bf16.
MATMUL_FLAGS = ("avx", "amx", "fma", "f16c")
_STARTED = time.time()  # imported as a benchmark starts: `run_wall_s` counts from here to `write`


def training_seconds(metrics: dict[str, Any]) -> float:
    """A stage-two run's own epoch times summed (from its metrics, so a reused run reports its real cost)."""
    return round(sum(epoch.get("train_s", 0.0) for epoch in metrics["history"]), 1)


def results_dir() -> Path:
    """Where results are written: `$SEQREC_BENCH_RESULTS` if set, else the committed `benchmarks/results/`."""
    return Path(os.environ.get(RESULTS_ENV) or RESULTS)


def cpuinfo(field: str) -> str | None:
    """The first `field` of /proc/cpuinfo (None where there is none, e.g. not Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == field:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The CPU's vector and matrix flags (MATMUL_FLAGS prefixes), sorted."""
    return sorted(flag for flag in (cpuinfo("flags") or "").split() if flag.startswith(MATMUL_FLAGS))


def git_commit() -> str | None:
    """HEAD of the checkout the benchmark ran from, `+dirty` when tracked code differed from it (results
    aside); None outside a git checkout (e.g. a tree copied to a GPU machine)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        except OSError:  # no git on this machine
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    if head is None:
        return None
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results")
    return f"{head}+dirty" if changed else head


def command() -> str:
    """The command line that ran this benchmark, as `python -m benchmarks.<name> ...` from the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        program = ["python", "-m", ".".join(script.relative_to(ROOT).with_suffix("").parts)]
    except ValueError:
        program = ["python", sys.argv[0]]
    return " ".join(shlex.quote(arg) for arg in [*program, *sys.argv[1:]])


def machine() -> dict[str, Any]:
    """What the numbers depend on: cores, CPU (and whether it has bf16 matmuls: the same command's bf16 runs
    differ 50x between machines of one kind here), GPU, threads, library versions, load at the time."""
    import torch

    from stages.accelerator import cpu_has_fast_bf16

    facts: dict[str, Any] = {"cores": os.cpu_count(), "cpu_model": cpu_model(), "cpu_flags": cpu_flags(),
                             "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                             "cpu_bf16_matmuls": cpu_has_fast_bf16(), "torch_threads": torch.get_num_threads(),
                             "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                             "torch": torch.__version__, "python": platform.python_version(),
                             "load_average_1m": round(os.getloadavg()[0], 2),
                             "load_average_1m_5m_15m": [round(load, 2) for load in os.getloadavg()]}
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
    """Write `<name>.json` (figures + machine + date + commit + command + wall time) and `<name>.md` (the
    table) into `results_dir()`; print the JSON."""
    folder = results_dir()
    record = {**figures, "machine": machine(), "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "git_commit": git_commit(), "command": command(), "run_wall_s": round(time.time() - _STARTED, 1)}
    path = folder / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    info = record["machine"]
    lines = [f"# {name}", "", "| figure | value |", "|---|---|", *(f"| {label} | {value} |" for label, value in table), "",
             (f"{info['cores']} cores ({info['cpu_model']}, {info['cpu_capability']}, bf16 matmuls: "
              f"{'yes' if info['cpu_bf16_matmuls'] else 'no'}), {info['torch_threads']} torch threads, torch {info['torch']}, "
              f"load average {info['load_average_1m']}; {record['date']}; commit {record['git_commit']}; "
              f"`{record['command']}`"), ""]
    (folder / f"{name}.md").write_text("\n".join(lines))
    print(json.dumps(record, indent=2))
    return path
