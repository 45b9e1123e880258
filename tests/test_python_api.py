"""docs/python-api.md's worked example, run as it is, and the API's events as `logging` records."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from pipeline import api, events
from pipeline.config import load_config
from pipeline.errors import BadInput
from tests.align_support import write_ml100k_slice
from tests.support import REPO, shared_dataset


def _example() -> str:
    [block] = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "python-api.md").read_text(), re.DOTALL)
    return block


def test_the_documented_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    write_ml100k_slice(shared_dataset("ml-100k"), tmp_path / "recs" / "raw" / "ml-100k", items=80)
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO, logger=events.LOGGER)
    scope: dict = {}
    exec(compile(_example(), "docs/python-api.md", "exec"), scope)  # noqa: S102 - the documented example, as shipped
    job = scope["job"]
    assert job.embeddings is None and job.dataset.run_dir.is_relative_to(tmp_path / "recs" / "datasets" / "ml-100k")
    assert (scope["top"].run_dir / "recommendations.parquet").is_file() and scope["top"].manifest["users"] == 2
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"{job.downstream.run_id} {job.downstream.metrics['test']['ndcg@10']}"
    assert printed[-1].endswith("data.kcore_users: Input should be greater than or equal to 0")
    by_stage = {record.name for record in caplog.records}
    assert {"seqrec.prepare", "seqrec.train-downstream", "seqrec.evaluate", "seqrec.recommend"} <= by_stage
    published = [r for r in caplog.records if getattr(r, "event", None) == "published"]
    assert [(r.stage, r.run_id) for r in published] == [
        ("prepare", job.dataset.run_id), ("train-downstream", job.downstream.run_id),
        ("recommend", job.recommendations.run_id), ("recommend", scope["top"].run_id)]


def test_json_events_carry_level_stage_and_run_id(workspace, capsys: pytest.CaptureFixture[str]) -> None:
    events.set_format("json")
    try:
        made = api.train_downstream(workspace("downstream.embeddings=null", "downstream.train.epochs=1"))
    finally:
        events.set_format("text")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    epochs = [line for line in lines if line["event"] == "epoch"]
    assert epochs and all(line["level"] == "info" and line["stage"] == "train-downstream"
                          and line["run_id"] == made.run_id for line in epochs)
    assert [line["level"] for line in lines if line["event"] == "skipped_users"] in ([], ["warning"])


def test_a_config_is_an_object_a_file_or_overrides(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text("data:\n  kcore_users: 3\n")
    from_file = api.as_config(tmp_path / "job.yaml", {"data.name": "other"})
    assert from_file.data.kcore_users == 3 and from_file.data.name == "other"
    assert api.as_config({"data.text.fields": ["title"]}).data.text.fields == ["title"]
    assert api.as_config(from_file) is from_file
    with pytest.raises(TypeError):
        api.as_config(load_config(None), {"data.name": "x"})
    with pytest.raises(BadInput, match="data.nmae: unknown key"):
        api.status({"data.nmae": "typo"})
