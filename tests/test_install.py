"""Running from anywhere: config paths, the workspace setting, `--version` and `config`, and portable runs."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import DEFAULTS_PATH, code_release, load_config, resolve_config
from pipeline.errors import BadInput
from pipeline.store import MANIFEST, Output, publish_run
from pipeline.workspace import input_run
from stages.downstream import evaluate, kinds, recommend, runs, train
from tests.support import write_embeddings_run


def _modes(root: Path) -> dict[str, int]:
    return {str(path.relative_to(root)): stat.S_IMODE(path.lstat().st_mode)
            for path in [root, *root.rglob("*")] if not path.is_symlink()}


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_the_defaults_are_package_data_linked_to_the_top_level_file() -> None:
    assert DEFAULTS_PATH.parent.name == "pipeline" and DEFAULTS_PATH.is_file()
    assert DEFAULTS_PATH.read_text() == (DEFAULTS_PATH.parents[1] / "pipeline.yaml").read_text()


def test_relative_paths_in_a_config_file_are_read_against_its_folder(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "job.yaml").write_text("workspace:\n  root: ws\ndata:\n  path: ../raw\nalign:\n  lm: ./models/lm\n"
                                     "  encoder: org/hub-id\nreport:\n  dir: pages\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("../conf/job.yaml"))
    assert config.workspace.root == str(folder / "ws") and config.data.path == str(tmp_path / "raw")
    assert config.align.lm == str(folder / "models" / "lm") and config.align.encoder == "org/hub-id"
    assert config.report.dir == str(folder / "pages")
    # On the command line a path means what it means in the current folder, as for any command.
    assert load_config(Path("../conf/job.yaml"), ["workspace.root=here"]).workspace.root == "here"


def test_the_workspace_comes_from_the_environment_or_the_option_and_data_path_follows(monkeypatch) -> None:
    monkeypatch.delenv("SEQREC_WORKSPACE", raising=False)
    default = load_config(None)
    assert default.workspace.root == "artifacts" and default.data.path == "artifacts/raw/ml-100k"
    monkeypatch.setenv("SEQREC_WORKSPACE", "/srv/recs")
    assert load_config(None).data.path == "/srv/recs/raw/ml-100k"
    resolved = resolve_config(None, ["data.name=other"], workspace="/mnt/ws")
    assert resolved.config.workspace.root == "/mnt/ws" and resolved.sources["workspace.root"] == "--workspace"
    assert resolved.config.data.path == "/mnt/ws/raw/other"


def test_version_and_config_say_what_is_installed_and_where_each_value_came_from(tmp_path: Path, monkeypatch) -> None:
    runner = CliRunner()
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.strip() == f"seqrec-pipeline {code_release()}"
    (tmp_path / "job.yaml").write_text("data:\n  kcore_users: 3\n")
    monkeypatch.setenv("SEQREC_WORKSPACE", str(tmp_path / "ws"))
    shown = runner.invoke(app, ["config", "-c", str(tmp_path / "job.yaml"), "--set", "downstream.evaluate.ks=[5, 20]"])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert f'  root: "{tmp_path / "ws"}"  # $SEQREC_WORKSPACE' in lines
    assert f"  kcore_users: 3  # {tmp_path / 'job.yaml'}" in lines
    assert "    ks: [5, 20]  # --set" in lines and "  kcore_items: 5  # default" in lines
    assert f'  path: "{tmp_path / "ws" / "raw" / "ml-100k"}"  # default: <workspace.root>/raw/<data.name>' in lines
    (tmp_path / "printed.yaml").write_text(shown.output)  # the output is a config file: it reads back the same
    expected = load_config(tmp_path / "job.yaml", ["downstream.evaluate.ks=[5, 20]"])
    assert load_config(tmp_path / "printed.yaml") == expected


def test_published_files_follow_the_umask_whatever_their_writer_chose(tmp_path: Path, umask_022) -> None:
    def build(folder: Path) -> dict:
        save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))  # safetensors writes 0600
        (folder / "encoder").mkdir(mode=0o700)
        (folder / "encoder" / "weights.bin").write_bytes(b"x")
        os.chmod(folder / "encoder" / "weights.bin", 0o600)
        return {"kind": "test"}

    run_dir = publish_run(Output(tmp_path / "out"), "run1", build).run_dir
    modes = _modes(run_dir)
    assert modes == {".": 0o755, "encoder": 0o755, "encoder/weights.bin": 0o644, "model.safetensors": 0o644,
                     MANIFEST: 0o644}


def test_a_copied_read_only_workspace_still_evaluates_and_recommends(workspace, tmp_path: Path) -> None:
    config = workspace("downstream.train.epochs=1", "recommend.users=[\"1\", \"7\"]")
    root = Path(config.workspace.root)
    write_embeddings_run(root, runs.dataset_dir(config).resolve(), 16)
    trained = train.run(config)
    manifest = trained.manifest
    assert not {"dataset_run_dir", "embeddings_run_dir"} & set(manifest)  # inputs named by run id alone
    copy = tmp_path / "moved" / "artifacts"
    shutil.copytree(root, copy, symlinks=True)
    (copy / "datasets" / "small").unlink()  # the session's dataset, linked into the workspace: copied too
    shutil.copytree((root / "datasets" / "small").resolve(), copy / "datasets" / "small", symlinks=True)
    shutil.rmtree(root)
    for path in [copy, *copy.rglob("*")]:
        os.chmod(path, stat.S_IMODE(path.stat().st_mode) & ~0o222)
    try:
        loaded = kinds.load_trained(copy / "downstream" / "small" / "latest")
        results = evaluate.evaluate_all(loaded.model, loaded.seqs, loaded.config.evaluate,
                                        loaded.config.model.max_length)
        assert results["model"]["test"] == manifest["metrics"]["test"]
        out = load_config(None, [f"workspace.root={tmp_path / 'out'}", "data.name=small", 'recommend.users=["1", "7"]',
                                 f"recommend.run={copy / 'downstream' / 'small' / 'latest'}"])
        made = recommend.run(out)
        assert made.run_dir.is_relative_to(tmp_path / "out") and made.manifest["users"] == 2
        assert made.manifest["downstream_run_dir"] == str(copy / "downstream" / "small" / trained.run_dir.name)
    finally:
        for path in [copy, *copy.rglob("*")]:
            os.chmod(path, stat.S_IMODE(path.stat().st_mode) | 0o200)


def test_a_run_published_before_names_its_inputs_by_absolute_folder_and_still_loads(workspace) -> None:
    config = workspace("downstream.train.epochs=1", "downstream.embeddings=null")
    trained = train.run(config)
    dataset = runs.dataset_dir(config).resolve()
    old = {**trained.manifest, "dataset_run_id": "elsewhere", "dataset_run_dir": str(dataset)}  # as written before
    (trained.run_dir / MANIFEST).write_text(json.dumps(old))
    assert input_run(trained.run_dir, old, "dataset") == dataset
    assert kinds.load_trained(trained.run_dir).seqs.num_items == trained.manifest["num_items"]
    del old["dataset_run_dir"]
    (trained.run_dir / MANIFEST).write_text(json.dumps(old))
    with pytest.raises(BadInput, match=r"its dataset run elsewhere is not at .*/datasets/small/elsewhere"):
        kinds.load_trained(trained.run_dir)
