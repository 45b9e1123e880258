"""`seqrec-pipeline run` under `accelerate launch` with two CPU processes: every stage, end to end.

The helper process aligns its shard of the items and trains its share of stage two's batches (DDP), then
leaves `recommend` to the main process; only the main process prints run folders and progress.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.contracts.downstream import read_metrics
from tests.align_support import align_sets, launch, write_ml100k_slice
from tests.support import TINY_MODEL, shared_dataset


def test_run_under_accelerate_launch_runs_every_stage_then_reuses_them(tmp_path: Path, tiny_llama: Path) -> None:
    raw = write_ml100k_slice(shared_dataset("ml-100k"), tmp_path / "raw", items=40)
    sets = [*align_sets(tmp_path / "ws", raw, tiny_llama, "align.said.epochs=1", "align.evidence.items=0"),
            *TINY_MODEL, "report.on_run=false"]
    first = launch("run", sets)
    assert first.returncode == 0, first.stderr[-8000:]
    made = [Path(line) for line in first.stdout.split()]
    assert [p.parent.parent.name for p in made] == ["datasets", "embeddings", "downstream", "recommendations"]
    assert first.stderr.count("align: no embeddings run yet") == 1  # told once, by the main process
    embeddings = json.loads((made[1] / "manifest.json").read_text())
    assert embeddings["processes"] == 2 and embeddings["training"]["shards"] == 2
    assert sorted(p.name for p in (made[1] / "embeddings").iterdir()) == ["part-00001.parquet", "part-00002.parquet"]
    downstream = json.loads((made[2] / "manifest.json").read_text())
    assert downstream["processes"] == 2 and downstream["embeddings_run_id"] == made[1].name
    assert (made[3] / "manifest.json").is_file()
    # Both processes ranked half the users each; one process re-ranking them all gets the same figures.
    alone = CliRunner().invoke(app, ["evaluate", str(made[2]), *(a for s in sets for a in ("--set", s))])
    assert alone.exit_code == 0, alone.output
    test = json.loads(alone.stdout)["model"]["test"]
    assert test == pytest.approx(read_metrics(made[2])["model"]["test"], abs=1e-6)
    again = launch("run", sets)
    assert again.returncode == 0, again.stderr[-8000:]
    assert [Path(line) for line in again.stdout.split()] == made  # the same runs, reused
