"""The stage-two benchmark reuses a kept run only when it was made with the settings it would use now, by the
code that would make it now."""

import json
from argparse import Namespace
from pathlib import Path

import pytest

from benchmarks._kept import resolved
from benchmarks.downstream_vs_recbole import CONFIG, KEPT_FILE, kept_runs, matching, our_overrides, same_settings
from stages.downstream import train

CURRENT = train.code("sasrec")


def _kept_run(run_dir: Path, seed: int, code: str | None, batch_size: int = 0) -> dict:
    """A run folder holding what a finished run of ID-only SASRec records, and its kept-list entry."""
    run_dir.mkdir(parents=True)
    settings = resolved(CONFIG, "downstream", tuple(our_overrides("sasrec", None, seed, 200)))
    if batch_size:
        settings = {**settings, "train": {**settings["train"], "batch_size": batch_size}}
    (run_dir / "config.json").write_text(json.dumps(settings))
    (run_dir / "manifest.json").write_text(json.dumps({} if code is None else {"code_identity": code}))
    return {"seed": seed, "run_dir": str(run_dir)}


@pytest.mark.parametrize(("code", "batch_size", "reused"), [
    (CURRENT, 0, True),
    (CURRENT, 64, False),  # other settings
    ("0123456789abcdef", 0, False),  # made by other training code
    (None, 0, False),  # made before runs recorded their code
])
def test_a_kept_run_counts_only_when_made_by_this_code_with_these_settings(
        tmp_path: Path, code: str | None, batch_size: int, reused: bool) -> None:
    _kept_run(tmp_path / "run", 2020, code, batch_size)
    assert same_settings(tmp_path / "run", our_overrides("sasrec", None, 2020, 200)) == reused


def test_runs_kept_in_another_workspace_count_one_per_seed(tmp_path: Path) -> None:
    current = CURRENT
    own = {"ours_id_sasrec": [_kept_run(tmp_path / "own-2020", 2020, None), _kept_run(tmp_path / "own-2021", 2021, current)]}
    other = {"ours_id_sasrec": [_kept_run(tmp_path / "other-2020", 2020, current),
                                _kept_run(tmp_path / "other-2021", 2021, current)]}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / KEPT_FILE).write_text(json.dumps({"ours": other, "peers": {}}))
    runs = kept_runs(own, [tmp_path / "other"])
    chosen = matching(runs, {"ours_id_sasrec": ("sasrec", None, ())}, Namespace(max_epochs=200, overrides=[]))
    assert sorted(Path(r["run_dir"]).name for r in chosen["ours_id_sasrec"]) == ["other-2020", "own-2021"]
