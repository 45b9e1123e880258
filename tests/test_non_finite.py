"""Nothing non-finite is published: a diverging loss stops training (exit 1, one line), NaN results are refused."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import Diverged, NonFinite
from pipeline.store import Output, publish_run
from stages.align import stage
from tests.align_support import align_config, prepared, write_ml100k_slice
from tests.support import TINY_MODEL, shared_dataset


def test_a_diverging_stage_two_exits_1_and_publishes_nothing(tmp_path: Path) -> None:
    sets = [f"workspace.root={tmp_path}", "data.name=nan", f"data.path={shared_dataset('ml-100k')}",
            "data.kcore_items=20", "data.max_history=20", "downstream.embeddings=null", *TINY_MODEL]
    args = [part for s in sets for part in ("--set", s)]
    assert CliRunner().invoke(app, ["prepare", *args]).exit_code == 0
    result = CliRunner().invoke(app, ["train-downstream", *args, "--set", "downstream.train.lr=1e30"])
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith("error: training loss is nan at epoch 1: stopped, nothing published")
    assert list((tmp_path / "downstream" / "nan").iterdir()) == []  # no run, no latest, no partial folder


@pytest.mark.slow  # the default tier stops stage two; SAID stops through the same call
def test_a_diverging_said_run_stops_and_keeps_its_checkpoint(tmp_path: Path, tiny_llama: Path) -> None:
    raw = write_ml100k_slice(shared_dataset("ml-100k"), tmp_path / "raw", items=40)
    config = align_config(tmp_path / "art", raw, tiny_llama, "align.said.lr=1e30", "align.said.item_lr=1e30",
                          "align.checkpoint_every=1", "align.evidence.items=0")
    prepared(config)
    with pytest.raises(Diverged, match=r"training loss is (nan|inf) at SAID step \d+: stopped"):
        stage.run(config)
    output = Output(tmp_path / "art" / "embeddings" / "ml-100k")
    assert output.latest() is None
    partial = next(output.path.glob(".partial-*"))
    assert [p.name for p in (partial / "checkpoints").iterdir()] == ["step-00000001"]  # the last good one, kept


def test_non_finite_results_are_never_published(tmp_path: Path) -> None:
    output = Output(tmp_path / "out")

    def build(folder: Path) -> dict:
        (folder / "metrics.json").write_text("{}")
        return {"metrics": {"test": {"ndcg@10": math.nan}}}

    with pytest.raises(NonFinite, match=r"non-finite metrics.test.ndcg@10"):
        publish_run(output, "r", build, keep_partial=True, scratch=("checkpoints",))
    assert sorted(p.name for p in output.path.iterdir()) == []
