"""Files stay short and functions fit on a screen: none over 400 lines, no function over 60 lines unless a
reason is written here."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "stages", "benchmarks", "scripts", "examples")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60

# Functions allowed to be longer, and why.
LONG_FUNCTIONS = {
    "pipeline/dataset.py:build": "one pass of columnar steps (clean, dedup, k-core, truncate, split) over shared "
                                 "row arrays; split apart, each step would take and return the same five arrays",
    "stages/recformer/pretrain.py:pretrain": "the Recformer pretraining loop: resume, steps, checkpoints and progress "
                                           "read top to bottom",
    "stages/recformer/finetune.py:finetune": "Recformer's two fine-tuning stages share one loop and its early stopping",
    "benchmarks/downstream_vs_recbole.py:main": "a benchmark's script: its options, then its steps in order",
    "benchmarks/align_throughput.py:main": "a benchmark's script: its options, then its steps in order",
    "benchmarks/recformer_transfer.py:main": "a benchmark's script: its options, then its steps in order",
}


def _sources() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def test_no_file_is_over_400_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in _sources() if (n := p.read_text().count("\n")) > MAX_FILE_LINES}
    assert long == {}


def test_no_function_is_over_60_lines_without_a_reason() -> None:
    long = set()
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                    and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                long.add(f"{path.relative_to(ROOT)}:{node.name}")
    assert long <= set(LONG_FUNCTIONS), f"over {MAX_FUNCTION_LINES} lines with no reason: {sorted(long - set(LONG_FUNCTIONS))}"
    assert set(LONG_FUNCTIONS) <= long, f"no longer long, drop the reason: {sorted(set(LONG_FUNCTIONS) - long)}"
