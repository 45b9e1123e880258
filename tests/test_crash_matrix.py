"""Kill -9 at every named crash point of every stage, run the same command again, and get the same run.

Each trial runs the real CLI in a subprocess with `SEQREC_CRASH_AT` armed (the process dies with exit 137 and
cleans up nothing), then runs the same command unarmed. The second run must publish the run id and the
files an uninterrupted run publishes, `verify` must find the workspace clean, and nothing may be left over.
One trial (no language model) runs in the default tier; the whole matrix (every point by prepare, align with a tiny LM,
train-downstream and recommend) in the slow tier, and it feeds `benchmarks/fault_matrix.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.faults import ENV, KILLED, POINTS
from tests.align_support import write_ml100k_slice
from tests.fault_support import cli, record, result_of
from tests.support import REPO, TINY_MODEL, shared_dataset

STAGES = ("prepare", "align", "train-downstream", "recommend")
KIND = {"prepare": "datasets", "align": "embeddings", "train-downstream": "downstream", "recommend": "recommendations"}
# Checkpoint points are armed at a later visit, so the re-run resumes from a real, complete checkpoint.
VISIT = {"checkpoint.before_complete": "@2", "checkpoint.discard": "@1"}


class Workspace:
    """One workspace per stage, with every earlier stage published, and the stage's uninterrupted result."""

    def __init__(self, root: Path, settings: list[str]) -> None:
        self.root, self.settings = root, settings
        self.reference: dict[str, dict] = {}

    def run(self, stage: str, *extra: str, crash: str | None = None) -> subprocess.CompletedProcess:
        """A crash runs in a child process (it dies); anything else here, in-process (no start-up to pay)."""
        if crash:
            return cli(self.root, self.settings, stage, *extra, crash=crash)
        sets = [part for s in [f"workspace.root={self.root}", *self.settings] for part in ("--set", s)]
        done = CliRunner().invoke(app, [stage, *extra, *sets])
        return subprocess.CompletedProcess([stage], done.exit_code, done.stdout, done.stderr)

    def output(self, stage: str) -> Path:
        return self.root / KIND[stage] / "crash"

    def publish(self, stage: str) -> None:
        done = self.run(stage)
        assert done.returncode == 0, done.stderr
        self.reference[stage] = result_of(self.output(stage) / "latest")


def published(root: Path, stages: tuple[str, ...], *extra: str) -> Workspace:
    """A workspace on 40 items of ml-100k with `stages` published (their uninterrupted results kept)."""
    raw = write_ml100k_slice(shared_dataset("ml-100k"), root / "raw", items=40)
    settings = ["data.name=crash", f"data.path={raw}", "data.kcore_users=0", "data.kcore_items=0",
                *TINY_MODEL, "downstream.train.epochs=3", "downstream.train.patience=5", *extra]
    space = Workspace(root / "artifacts", settings)
    for stage in stages:
        space.publish(stage)
    return space


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_llama: Path) -> Workspace:
    return published(tmp_path_factory.mktemp("crash"), STAGES, f"align.lm={tiny_llama}", "align.said.epochs=2",
                     "align.checkpoint_every=3", "align.evidence.items=0")


@pytest.fixture(scope="module")
def id_only(tmp_path_factory) -> Workspace:
    """No stage one (stage two on item ids): the default tier's trials, without loading a language model."""
    return published(tmp_path_factory.mktemp("crash-id"), ("prepare", "train-downstream"), "downstream.embeddings=null")


def trial(space: Workspace, point: str, stage: str) -> None:
    """Crash `stage` at `point`, re-run it, and check the run, `verify` and the leftovers."""
    force = point == "publish.replaced"  # only a --force publish replaces a run
    if not force:  # start the stage afresh; the earlier stages' runs stay
        shutil.rmtree(space.output(stage))
    extra = ("--force",) if force else ()
    crashed = space.run(stage, *extra, crash=point + VISIT.get(point, ""))
    reached = crashed.returncode == KILLED
    if not reached:  # this stage never passes the point: an ordinary run, nothing to recover
        assert crashed.returncode == 0, crashed.stderr
        record("crash", point=point, stage=stage, reached=False)
        return
    again = space.run(stage, *extra)
    assert again.returncode == 0, again.stderr
    recovered = result_of(space.output(stage) / "latest")
    checked = space.run("verify", str(space.root))
    leftovers = sorted(p.name for p in space.output(stage).iterdir() if p.name not in ("latest", recovered["run_id"]))
    identical = recovered == space.reference[stage] and checked.returncode == 0 and not leftovers
    record("crash", point=point, stage=stage, reached=True, recovered_identical=identical)
    assert recovered == space.reference[stage]
    assert checked.returncode == 0, checked.stderr
    assert leftovers == []


def test_a_kill_while_a_checkpoint_is_deleted_finishes_as_an_uninterrupted_run(id_only: Workspace) -> None:
    trial(id_only, "checkpoint.discard", "train-downstream")


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("point", POINTS)
def test_every_crash_point_of_every_stage(workspace: Workspace, point: str, stage: str) -> None:
    trial(workspace, point, stage)


@pytest.mark.slow
def test_two_processes_killed_at_a_checkpoint_resume_to_the_same_run(tmp_path: Path, tiny_llama: Path) -> None:
    """Under `accelerate launch`, each process restores its own generators: the resumed run is the same run."""
    raw = write_ml100k_slice(shared_dataset("ml-100k"), tmp_path / "raw", items=40)
    sets = [f"workspace.root={tmp_path / 'artifacts'}", "data.name=two", f"data.path={raw}", "data.kcore_users=0",
            "data.kcore_items=0", "align.method=said", f"align.lm={tiny_llama}", "align.said.epochs=2",
            "align.checkpoint_every=2", "align.evidence.items=0"]
    args = [arg for s in sets for arg in ("--set", s)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    env.pop(ENV, None)

    def launch(crash: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                               "--num_machines", "1", "--dynamo_backend", "no", "-m", "pipeline.cli", "align", *args],
                              cwd=REPO, env={**env, ENV: crash} if crash else env, capture_output=True, text=True,
                              timeout=600, check=False)

    subprocess.run([sys.executable, "-m", "pipeline.cli", "prepare", *args], cwd=REPO, env=env, check=True,
                   capture_output=True)
    assert launch().returncode == 0
    output = tmp_path / "artifacts" / "embeddings" / "two"
    uninterrupted = result_of(output / "latest")
    shutil.rmtree(output)
    assert launch("checkpoint.discard@1").returncode != 0
    assert next(output.glob(".partial-*/checkpoints/step-00000004/COMPLETE"))
    resumed = launch()
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    manifest = json.loads((output / "latest" / "manifest.json").read_text())
    assert manifest["processes"] == 2 and manifest["training"]["resumed_from_step"] == 4
    assert result_of(output / "latest") == uninterrupted
