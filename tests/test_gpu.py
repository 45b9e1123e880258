"""The `gpu` tier: skipped where torch sees no CUDA device (tests/conftest.py), run on a machine with one.

The rest of the suite runs on whatever device Accelerate picks, so on a GPU machine it covers the GPU paths too;
these tests check that a device is actually used and that a GPU run's numbers are sound.
"""

from __future__ import annotations

import json
import math

import pytest

from stages.accelerator import stage_accelerator
from stages.downstream import train

pytestmark = pytest.mark.gpu


def test_a_stage_runs_on_the_gpu() -> None:
    assert stage_accelerator("no").device.type == "cuda"
    assert stage_accelerator("bf16").mixed_precision == "bf16"  # no float32 fallback on a GPU


def test_downstream_training_on_the_gpu_is_finite(workspace) -> None:
    result = train.run(workspace("downstream.embeddings=null", "downstream.train.epochs=2"))
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert set(metrics["model"]["test"]) == {"mrr", "recall@10", "ndcg@10", "recall@50", "ndcg@50"}
    assert all(math.isfinite(value) and 0 <= value <= 1 for value in metrics["model"]["test"].values())
