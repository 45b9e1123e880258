"""Running a benchmark as its smoke test: its own `main` with tiny sizes, results in a temporary folder.

`main` is what `python -m benchmarks.<name>` runs (argument parsing, measuring, writing), so a smoke run
fails where a full run would; only the sizes differ.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path

import pytest

from benchmarks._catalog import BENCHMARKS, MISSING, render
from benchmarks._results import RESULTS_ENV

BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
MACHINE_KEYS = {"cpu_model", "cpu_flags", "cpu_bf16_matmuls", "torch_threads", "load_average_1m_5m_15m"}


def benchmark_modules() -> set[str]:
    """Every runnable benchmark module under `benchmarks/` (`_*.py` are helpers, `__main__` the launcher)."""
    return {path.stem for path in BENCHMARKS_DIR.glob("*.py") if not path.stem.startswith("_")}


def run_benchmark(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, *args: object) -> Path:
    """Run `python -m benchmarks.<name> ARGS` in this process; the folder its results went to. CLI children
    get one thread, as this process has (`conftest.one_thread`): two threads per tiny model spin against
    each other on the shared 2-core machine (a 2-layer encoder ran 10x slower)."""
    results = tmp_path / "results"
    monkeypatch.setenv(RESULTS_ENV, str(results))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    module = importlib.import_module(f"benchmarks.{name}")
    monkeypatch.setattr(sys, "argv", [module.__file__, *map(str, args)])
    module.main()
    return results


def published(results: Path, result: str, module: str, complete: bool = True) -> dict:
    """The record `<result>.json` holds, after checking what every record carries and that the figure its
    README row quotes renders from it (`complete`: every figure of the headline present)."""
    record = json.loads((results / f"{result}.json").read_text())
    assert (results / f"{result}.md").is_file()
    assert record["command"].startswith(f"python -m benchmarks.{module} ")
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", record["git_commit"])
    assert MACHINE_KEYS <= set(record["machine"])
    assert record["run_wall_s"] > 0
    figure = next(f for b in BENCHMARKS for f in b.figures if f.result == result)
    headline = render(figure.headline, record)
    assert (MISSING not in headline) == complete, headline
    return record
