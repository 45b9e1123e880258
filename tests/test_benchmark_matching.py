"""The stage-two benchmark reuses a kept run only when it was made with the settings it would use now."""

import json
from argparse import Namespace
from pathlib import Path

import pytest

from benchmarks._kept import agrees, resolved
from benchmarks.downstream_vs_recbole import CONFIG, KEPT_FILE, kept_runs, matching, our_overrides, same_settings
from pipeline.config import result_revision

DEFAULT = {"model": {"kind": "sasrec", "norm": "pre", "positions": "newest"}, "train": {"batch_size": 128}}


@pytest.mark.parametrize(("made", "wanted", "reused"), [
    (DEFAULT, DEFAULT, True),
    (DEFAULT, {**DEFAULT, "train": {"batch_size": 512}}, False),
    # Made before `positions` existed: the same as its default, another value is not.
    ({**DEFAULT, "model": {"kind": "sasrec", "norm": "pre"}}, DEFAULT, True),
    ({**DEFAULT, "model": {"kind": "sasrec", "norm": "pre"}},
     {**DEFAULT, "model": {**DEFAULT["model"], "positions": "oldest"}}, False),
    # A setting the code no longer has: nothing says what it did.
    ({**DEFAULT, "model": {**DEFAULT["model"], "gone": 1}}, DEFAULT, False),
])
def test_a_kept_run_agrees_only_with_the_settings_it_was_made_with(made: dict, wanted: dict, reused: bool) -> None:
    assert agrees(made, wanted, DEFAULT) == reused


def _kept_run(run_dir: Path, seed: int, revision: int) -> dict:
    """A run folder holding what a finished run of ID-only SASRec records, and its kept-list entry."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(resolved(CONFIG, "downstream", tuple(our_overrides("sasrec", None, seed, 200)))))
    (run_dir / "manifest.json").write_text(json.dumps({"result_revision": revision} if revision > 1 else {}))
    return {"seed": seed, "run_dir": str(run_dir)}


@pytest.mark.parametrize(("revision", "reused"), [(result_revision("train-downstream"), True),
                                                  (1, False)])  # made by training code before the current revision
def test_a_kept_run_made_by_older_training_code_is_redone(tmp_path: Path, revision: int, reused: bool) -> None:
    _kept_run(tmp_path / "run", 2020, revision)
    assert same_settings(tmp_path / "run", our_overrides("sasrec", None, 2020, 200)) == reused


def test_runs_kept_in_another_workspace_count_one_per_seed(tmp_path: Path) -> None:
    current = result_revision("train-downstream")
    own = {"ours_id_sasrec": [_kept_run(tmp_path / "own-2020", 2020, 1), _kept_run(tmp_path / "own-2021", 2021, current)]}
    other = {"ours_id_sasrec": [_kept_run(tmp_path / "other-2020", 2020, current),
                                _kept_run(tmp_path / "other-2021", 2021, current)]}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / KEPT_FILE).write_text(json.dumps({"ours": other, "peers": {}}))
    runs = kept_runs(own, [tmp_path / "other"])
    chosen = matching(runs, {"ours_id_sasrec": ("sasrec", None, ())}, Namespace(max_epochs=200, overrides=[]))
    assert sorted(Path(r["run_dir"]).name for r in chosen["ours_id_sasrec"]) == ["other-2020", "own-2021"]
