"""Pricing work before doing it: `run --dry-run` trains and publishes nothing, and its estimates are within 2x
of what the same work then takes."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import events
from pipeline.cli import app
from stages import price
from stages.align import stage
from stages.downstream import train
from tests.align_support import align_config, prepared, write_ml100k_slice
from tests.support import TINY_MODEL, shared_dataset

SETTINGS = ["align.method=said", "align.checkpoint_every=0", "align.said.epochs=2", "align.evidence.items=0", *TINY_MODEL,
            "downstream.embeddings=null", "downstream.train.epochs=2", "downstream.train.patience=2"]


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    return write_ml100k_slice(shared_dataset("ml-100k"), tmp_path / "raw", items=40)


def test_a_dry_run_prints_every_stages_plan_and_publishes_nothing(tmp_path: Path, raw: Path, tiny_llama: Path) -> None:
    root = tmp_path / "art"
    sets = [arg for key in [f"workspace.root={root}", f"data.path={raw}", "data.kcore_users=0", "data.kcore_items=0",
                            f"align.lm={tiny_llama}", *SETTINGS] for arg in ("--set", key)]
    done = CliRunner().invoke(app, ["run", "--dry-run", *sets, "--set", "downstream.embeddings=latest"])
    assert done.exit_code == 0, done.output
    lines = done.stdout.splitlines()
    assert lines[0].startswith("prepare: new raw files or data settings")
    assert lines[1] == "align: no embeddings run yet: full alignment of 40 items"
    assert lines[2].startswith("  work: 40 items x 2 epochs = 10 SAID steps; estimated ") and lines[2].endswith(" in all here")
    assert lines[3].startswith("train-downstream: ") and lines[4].endswith(" an epoch here")
    assert not root.exists() or not any(root.rglob("manifest.json"))  # nothing published, not even the dataset


def _elapsed(captured: str, description: str) -> float:
    done = [json.loads(line) for line in captured.splitlines() if line.startswith("{")]
    return next(e["elapsed_s"] for e in done if e["event"] == "progress_done" and e["message"].startswith(description))


def test_the_estimates_are_within_2x_of_the_measured_time(tmp_path: Path, raw: Path, tiny_llama: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    config = align_config(tmp_path / "art", raw, tiny_llama, *SETTINGS)
    dataset_dir = prepared(config)
    planned = stage.plan(config, dataset_dir)
    estimate = price.price_alignment(config, planned).seconds
    events.set_format("json")
    try:
        capsys.readouterr()
        stage.run(config)
        measured = _elapsed(capsys.readouterr().err, "SAID alignment")
    finally:
        events.set_format("text")
    assert measured / 2 <= estimate <= measured * 2, (estimate, measured)
    epoch = price.price_training(config, dataset_dir, None).seconds
    history = json.loads((train.run(config).run_dir / "metrics.json").read_text())["history"]
    measured_epoch = statistics.median(h["train_s"] for h in history)
    assert measured_epoch / 2 <= epoch <= measured_epoch * 2, (epoch, measured_epoch)
