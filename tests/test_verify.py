"""`seqrec-pipeline verify`: a sound workspace passes; damage is reported and left alone; leftovers of killed
jobs are reported and, with --repair, removed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.store import MANIFEST
from tests.support import write_embeddings_run


def verify(*args: str):
    return CliRunner().invoke(app, ["verify", *args])


def test_a_sound_workspace_passes_and_every_kind_of_damage_is_named(workspace) -> None:
    root = Path(workspace().workspace.root)
    run = write_embeddings_run(root, (root / "datasets" / "small" / "latest").resolve(), 16)
    output = run.parent
    clean = verify(str(root))
    assert clean.exit_code == 0, clean.stderr
    assert clean.stderr.splitlines()[-1] == f"1 runs checked under {root}: 0 findings"

    part = run / "embeddings" / "part-00000.parquet"
    pq.write_table(pq.read_table(part).slice(0, 10), part)  # fewer rows than the index: size, hash, count
    (run / "stray.txt").write_text("added later")
    (output / ".partial-abc").mkdir()
    (output / ".replaced-hash0001-7").mkdir()
    (output / ".lock").write_text("")
    damaged = verify(str(output))
    lines = damaged.stderr.splitlines()
    assert damaged.exit_code == 2 and lines[-1] == f"error: {output}: 6 findings"
    assert any(line.startswith(f"{part}: size ") for line in lines)
    assert f"{run / 'stray.txt'}: not recorded in the manifest (added after the publish)" in lines
    assert any(line.startswith(f"{run / 'index.faiss'}: holds ") and "for 10 rows" in line for line in lines)
    assert sum(line.endswith("[leftover]") for line in lines) == 3

    repaired = verify(str(output), "--repair")
    assert repaired.exit_code == 2 and "removed 3 leftovers" in repaired.stderr  # the damaged run is left as it is
    assert sorted(p.name for p in output.iterdir()) == ["hash0001", "latest"]
    assert (run / "stray.txt").exists()


def test_latest_must_name_a_published_run_and_old_runs_are_checked_without_hashes(workspace) -> None:
    root = Path(workspace().workspace.root)
    run = write_embeddings_run(root, (root / "datasets" / "small" / "latest").resolve(), 16)
    manifest = json.loads((run / MANIFEST).read_text())
    del manifest["files"]  # as published before sizes and hashes were recorded
    (run / MANIFEST).write_text(json.dumps(manifest))
    old = verify(str(run))
    assert old.exit_code == 0 and "published before file sizes and sha256 were recorded" in old.stderr
    os.unlink(run.parent / "latest")
    os.symlink("gone", run.parent / "latest")
    dangling = verify(str(root))
    assert dangling.exit_code == 2
    assert f"{run.parent / 'latest'}: points at gone, which is not a published run" in dangling.stderr
