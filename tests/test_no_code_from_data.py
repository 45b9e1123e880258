"""Nothing read from a workspace or model folder runs code: pickles planted in every published run and in
the model folder are never unpickled while every stage reads them (the checkpoint folders' own case is in
each stage's resume test), and a model folder with only pickled weights is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from tests.align_support import write_ml100k_slice
from tests.fault_support import plant, planted_sites, record
from tests.support import TINY_MODEL, shared_dataset

KINDS = ("datasets", "embeddings", "downstream", "recommendations")


@pytest.mark.slow  # every stage, then each again reading planted runs: the checkpoints' case runs in the default tier
def test_pickles_planted_in_runs_and_model_folders_never_run(tmp_path: Path, tiny_bert: Path) -> None:
    model = shutil.copytree(tiny_bert, tmp_path / "model")
    raw = write_ml100k_slice(shared_dataset("ml-100k"), tmp_path / "raw", items=40)
    root = tmp_path / "artifacts"
    sets = [f"workspace.root={root}", f"data.path={raw}", "data.kcore_users=0", "data.kcore_items=0",
            "align.method=text", f"align.encoder={model}", "align.evidence.items=0", *TINY_MODEL]
    args = [part for s in sets for part in ("--set", s)]
    marker = tmp_path / "pickle-ran"
    planted = plant(model, marker)  # beside model.safetensors: transformers would torch.load a pytorch_model.bin

    def cli(*command: str) -> str:
        result = CliRunner().invoke(app, [*command, *args])
        assert result.exit_code == 0, result.output
        return result.stdout

    cli("run")
    runs = [(root / kind / "ml-100k" / "latest").resolve() for kind in KINDS]
    # Each forced stage reads the runs before it and replaces its own, which is planted in again.
    for command, replaced in ((None, runs), (("align", "--force"), runs[1:2]), (("train-downstream", "--force"), runs[2:3]),
                              (("recommend", "--force"), runs[3:]), (("evaluate",), []), (("run",), []),
                              *((("inspect", str(r)), []) for r in runs)):
        if command:
            cli(*command)
        for run in replaced:
            planted += plant(run, marker)
    planted_sites(planted, marker)
    verified = CliRunner().invoke(app, ["verify", str(root)])  # files added after the publish are found
    assert verified.exit_code == 2 and "not recorded in the manifest" in verified.stderr


def test_a_model_folder_with_only_pickled_weights_is_refused(tmp_path: Path, tiny_bert: Path) -> None:
    model = shutil.copytree(tiny_bert, tmp_path / "model")
    (model / "model.safetensors").unlink()
    marker = tmp_path / "pickle-ran"
    planted = plant(model, marker, ("pytorch_model.bin",))
    raw = write_ml100k_slice(shared_dataset("ml-100k"), tmp_path / "raw", items=40)
    sets = [f"workspace.root={tmp_path / 'artifacts'}", f"data.path={raw}", "data.kcore_users=0",
            "data.kcore_items=0", "align.method=text", f"align.encoder={model}"]
    args = [part for s in sets for part in ("--set", s)]
    assert CliRunner().invoke(app, ["prepare", *args]).exit_code == 0
    result = CliRunner().invoke(app, ["align", *args])
    record("bad_input", case="model folder with pickled weights only", exit_code=result.exit_code)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1].startswith(f"error: align.encoder: no loadable safetensors weights in '{model}'")
    planted_sites(planted, marker)
    assert not list((tmp_path / "artifacts" / "embeddings" / "ml-100k").glob(".partial-*"))
