"""`tracking.backend`: a published run reaches TensorBoard through Accelerate's trackers, read back with
TensorBoard's own event reader; with `none` no tracker library is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.contracts.history import read_history
from tests.support import REPO, TINY_MODEL

ID_ONLY = ["downstream.embeddings=null", "downstream.train.epochs=3", "downstream.train.patience=5"]


def _sets(settings: list[str]) -> list[str]:
    return [part for setting in settings for part in ("--set", setting)]


def test_a_trained_run_is_read_back_from_tensorboard_events(workspace) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (scripts/setup.sh installs it)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = workspace(*ID_ONLY, "tracking.backend=tensorboard")
    settings = [f"workspace.root={config.workspace.root}", f"data.name={config.data.name}", *TINY_MODEL, *ID_ONLY,
                "tracking.backend=tensorboard"]
    done = CliRunner().invoke(app, ["train-downstream", *_sets(settings)])
    assert done.exit_code == 0, done.output
    run_dir = Path(done.stdout.strip().splitlines()[-1])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    events = EventAccumulator(str(Path(config.workspace.root) / "tracking" / run_dir.name))
    events.Reload()
    history = read_history(run_dir)
    loss = events.Scalars("downstream/loss")
    assert [e.step for e in loss] == [h["epoch"] for h in history] == [1, 2, 3]
    assert [e.value for e in loss] == pytest.approx([h["loss"] for h in history], rel=1e-6)
    ndcg = events.Scalars("downstream/valid_ndcg@10")
    assert [e.value for e in ndcg] == pytest.approx([h["valid_ndcg@10"] for h in history], rel=1e-6)
    assert events.Scalars("test/ndcg@10")[0].value == pytest.approx(manifest["metrics"]["test"]["ndcg@10"], rel=1e-6)


def test_backend_none_imports_no_tracker(workspace) -> None:
    config = workspace(*ID_ONLY, "downstream.train.epochs=1")
    settings = [f"workspace.root={config.workspace.root}", f"data.name={config.data.name}", *TINY_MODEL, *ID_ONLY,
                "downstream.train.epochs=1"]
    script = ("import sys; from typer.testing import CliRunner; from pipeline.cli import app; "
              f"done = CliRunner().invoke(app, ['train-downstream', *{_sets(settings)!r}]); "
              "assert done.exit_code == 0, done.output; "
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorboard', 'mlflow', 'tensorboardX')"
              " or m == 'torch.utils.tensorboard'))")
    done = subprocess.run([sys.executable, "-c", script], check=False, cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
