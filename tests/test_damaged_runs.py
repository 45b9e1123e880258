"""Damaged or foreign files in published runs, through the real CLI: exit 2, one line naming the file, no litter.

Each case damages one file of a real published run (dataset, embeddings, downstream), runs the command that
reads it, and puts the file back: the issue's named cases in the default tier; every file read by kinds of
damage (empty, cut in half, random bytes, a folder in its place, missing, a manifest of `[]` or `{}`) in the
slow tier; the cases `benchmarks/fault_matrix.py` counts.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from tests.fault_support import record
from tests.support import TINY_MODEL, shared_dataset, write_embeddings_run

DAMAGE = ("empty", "truncated", "garbage", "folder", "missing")
READERS = {  # kind of run -> files the commands read -> the commands
    "datasets": (("items.parquet", "interactions.parquet", "manifest.json"), (("train-downstream", "--force"),)),
    "embeddings": (("embeddings/part-00000.parquet", "manifest.json"), (("train-downstream", "--force"),)),
    "downstream": (("model.safetensors", "config.json", "manifest.json"), (("evaluate",), ("recommend", "--force"))),
    "downstream-index": (("index.faiss",), (("recommend", "--force", "--set", "recommend.search=faiss"),)),
}


def _cases() -> list[tuple[str, str, str, tuple[str, ...]]]:
    cases = []
    for kind, (files, commands) in READERS.items():
        for name in files:
            modes = DAMAGE + (("list", "object") if name == "manifest.json" else ())
            cases += [(kind, name, mode, command) for mode in modes for command in commands]
    return cases


NAMED = {("downstream-index", "index.faiss", "truncated"), ("downstream", "model.safetensors", "truncated"),
         ("downstream", "manifest.json", "list"), ("downstream", "manifest.json", "object"),
         ("embeddings", "manifest.json", "object")}


class Published:
    """A real workspace with a dataset, an embeddings run and a trained downstream run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sets = [f"workspace.root={root}", "data.name=faults", f"data.path={shared_dataset('ml-100k')}",
                     "data.kcore_items=20", "data.max_history=20", *TINY_MODEL]
        assert self.cli("prepare").exit_code == 0
        write_embeddings_run(root, self.run_dir("datasets"), 16)
        trained = self.cli("train-downstream")
        assert trained.exit_code == 0, trained.output

    def run_dir(self, kind: str) -> Path:
        return (self.root / kind.split("-")[0] / "faults" / "latest").resolve()

    def cli(self, command: str, *args: str):
        """Run `command` with this workspace's settings; `args` come last, so their own --set wins."""
        return CliRunner().invoke(app, [command, *[part for s in self.sets for part in ("--set", s)], *args])

    def leftovers(self) -> list[str]:
        return [p.name for p in self.root.glob("*/faults/.*") if p.name != ".lock"]


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Published:
    return Published(tmp_path_factory.mktemp("damaged") / "artifacts")


def damage(path: Path, mode: str) -> None:
    data = path.read_bytes()
    if mode in ("folder", "missing"):
        path.unlink()
        if mode == "folder":
            path.mkdir()
        return
    replacement = {"empty": b"", "truncated": data[: len(data) // 2], "garbage": os.urandom(max(len(data), 64)),
                   "list": b"[]", "object": b"{}"}[mode]
    path.write_bytes(replacement)


def check_case(published: Published, kind: str, name: str, mode: str, command: tuple[str, ...]) -> str:
    """Damage the file, run the command, restore the file; the error line (exit 2, naming the run, no litter)."""
    path = published.run_dir(kind) / name
    original = path.read_bytes()
    damage(path, mode)
    try:
        result = published.cli(*command)
    finally:
        if path.is_dir():
            path.rmdir()
        path.write_bytes(original)
    record("bad_input", case=f"{kind}/{name}/{mode}/{command[0]}", exit_code=result.exit_code)
    last = result.stderr.rstrip("\n").splitlines()[-1]
    assert result.exit_code == 2, result.stderr
    assert last.startswith("error: ") and str(path.parent.parent) in last, last
    assert published.leftovers() == []
    return last


@pytest.mark.parametrize(("kind", "name", "mode", "command"),
                         [case for case in _cases() if case[:3] in NAMED and case[3][0] != "evaluate"]
                         + [("downstream", "model.safetensors", "truncated", ("evaluate",))])
def test_a_named_damaged_file_is_bad_input(published: Published, kind: str, name: str, mode: str,
                                           command: tuple[str, ...]) -> None:
    assert str(published.run_dir(kind) / name) in check_case(published, kind, name, mode, command)


@pytest.mark.slow  # 68 cases; the named ones above run in the default tier
@pytest.mark.parametrize(("kind", "name", "mode", "command"), _cases())
def test_every_damaged_file_is_bad_input(published: Published, kind: str, name: str, mode: str,
                                         command: tuple[str, ...]) -> None:
    check_case(published, kind, name, mode, command)


def test_a_file_where_a_run_or_folder_belongs_is_bad_input(published: Published, tmp_path: Path) -> None:
    a_file = tmp_path / "not-a-run"
    a_file.write_text("x")
    for args, key in ((("train-downstream", "--force", "--set", f"downstream.embeddings={a_file}"), str(a_file)),
                      (("inspect", str(a_file)), str(a_file)),
                      (("verify", str(a_file)), str(a_file)),
                      (("prepare", "--set", f"workspace.root={a_file}"), "workspace.root")):
        result = published.cli(*args)
        record("bad_input", case=f"file-as-folder/{args[0]}", exit_code=result.exit_code)
        assert result.exit_code == 2, result.stderr
        assert key in result.stderr.splitlines()[-1]
    shutil.rmtree(tmp_path)
