"""The artifact store: publish, reuse, force, crash safety, locks."""

import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import Locked
from pipeline.store import Output, publish_run, read_manifest


def write_payload(text: str):
    def build(folder: Path) -> dict:
        (folder / "payload.txt").write_text(text)
        return {"kind": "test", "text": text}
    return build


def test_publish_then_reuse_then_force(tmp_path: Path) -> None:
    output = Output(tmp_path / "out")
    first = publish_run(output, "run1", write_payload("a"))
    assert not first.reused and (first.run_dir / "payload.txt").read_text() == "a"
    assert output.latest() == first.run_dir
    calls = []
    again = publish_run(output, "run1", lambda folder: calls.append(folder) or {})
    assert again.reused and calls == [] and again.manifest["text"] == "a"
    forced = publish_run(output, "run1", write_payload("b"), force=True)
    assert not forced.reused and (forced.run_dir / "payload.txt").read_text() == "b"
    assert sorted(p.name for p in output.path.iterdir()) == ["latest", "run1"]


def test_a_crash_while_building_leaves_latest_and_published_runs_intact(tmp_path: Path) -> None:
    output = Output(tmp_path / "out")
    publish_run(output, "good", write_payload("ok"))

    def crash(folder: Path) -> dict:
        (folder / "payload.txt").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        publish_run(output, "bad", crash)
    assert output.latest() == output.run_dir("good")
    assert (output.latest() / "payload.txt").read_text() == "ok"
    assert not output.is_published("bad")
    assert not (output.path / ".lock").exists()


def test_partial_folder_is_handed_back_for_resume(tmp_path: Path) -> None:
    output = Output(tmp_path / "out")

    def crash(folder: Path) -> dict:
        (folder / "checkpoint").write_text("step 5")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        publish_run(output, "r", crash, keep_partial=True, scratch=("checkpoint",))
    seen = []
    published = publish_run(output, "r", lambda folder: seen.append((folder / "checkpoint").read_text()) or {},
                            keep_partial=True, scratch=("checkpoint",))
    assert seen == ["step 5"]
    assert not (published.run_dir / "checkpoint").exists()  # resume state goes once the run is published
    assert "checkpoint" not in published.manifest["files"]


def test_a_live_lock_refuses_and_a_dead_one_is_taken_over(tmp_path: Path) -> None:
    output = Output(tmp_path / "out")
    with output.lock(), pytest.raises(Locked, match="is locked by"), output.lock(wait_s=0.2):
        pass
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    holder = {"pid": int(dead.stdout), "host": socket.gethostname(), "since": "earlier"}
    (output.path / ".lock").write_text(json.dumps(holder))
    with output.lock():
        assert json.loads((output.path / ".lock").read_text())["pid"] == os.getpid()
    assert not (output.path / ".lock").exists()


def test_an_old_lock_is_stale(tmp_path: Path) -> None:
    output = Output(tmp_path / "out")
    output.path.mkdir(parents=True)
    (output.path / ".lock").write_text(json.dumps({"pid": 1, "host": "another-host", "since": "long ago"}))
    with pytest.raises(Locked), output.lock(stale_s=3600):
        pass
    os.utime(output.path / ".lock", (0, 0))
    with output.lock(stale_s=3600):
        pass


def test_read_manifest_refuses_an_incomplete_run(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="not a complete run"):
        read_manifest(tmp_path)


def test_an_empty_or_unreadable_lock_is_taken_over(tmp_path: Path) -> None:
    output = Output(tmp_path / "out")
    output.path.mkdir(parents=True)
    for content in ("", "{not json", json.dumps({"host": socket.gethostname()})):  # e.g. cut short by a full disk
        (output.path / ".lock").write_text(content)
        with output.lock():
            assert json.loads((output.path / ".lock").read_text())["pid"] == os.getpid()
    assert sorted(p.name for p in output.path.iterdir()) == []


def test_a_lock_that_cannot_be_written_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    output = Output(tmp_path / "out")

    def full_disk(self: Path, *args, **kwargs) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError, match="No space left"), output.lock():
        pass
    monkeypatch.undo()
    assert list(output.path.iterdir()) == []
    with output.lock():
        pass


def test_two_identical_jobs_one_publishes_the_other_reuses(tmp_path: Path) -> None:
    script = ("import sys, time; from pathlib import Path; from pipeline.store import Output, publish_run\n"
              "def build(folder):\n    time.sleep(1.0); (folder / 'payload.txt').write_text('x'); return {}\n"
              "r = publish_run(Output(Path(sys.argv[1])), 'same', build, lock_wait_s=30)\nprint(r.reused)\n")
    jobs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "out")], stdout=subprocess.PIPE, text=True)
            for _ in range(2)]
    reused = sorted(job.communicate(timeout=60)[0].strip() for job in jobs)
    assert reused == ["False", "True"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["latest", "same"]


def test_force_swaps_in_one_step_and_cleans_what_a_killed_publish_left(tmp_path: Path) -> None:
    output = Output(tmp_path / "out")
    publish_run(output, "run1", write_payload("a"), scratch=("checkpoints",))
    seen = []

    def build(folder: Path) -> dict:
        (folder / "checkpoints").mkdir()
        seen.append(os.readlink(output.path / "latest"))
        return write_payload("b")(folder)

    (output.path / ".replaced-run1-999").mkdir()  # left by a publish killed mid-swap
    forced = publish_run(output, "run1", build, force=True, scratch=("checkpoints",))
    assert (forced.run_dir / "payload.txt").read_text() == "b" and output.latest() == forced.run_dir
    assert sorted(p.name for p in output.path.iterdir()) == ["latest", "run1"]
    assert sorted(p.name for p in forced.run_dir.iterdir()) == ["manifest.json", "payload.txt"]
    assert set(forced.manifest["files"]) == {"payload.txt"} and seen == ["run1"]
    (forced.run_dir / "checkpoints").mkdir()  # resume state a kill left after the publish: the next run clears it
    assert publish_run(output, "run1", build, scratch=("checkpoints",)).reused
    assert not (forced.run_dir / "checkpoints").exists()
