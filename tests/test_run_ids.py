"""One rule for run ids: a run hashes exactly what it reads, the identity of its code included."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pipeline import prepare, run_ids
from pipeline.config import load_config
from pipeline.contracts.embeddings import Embeddings
from stages.align import stage as align
from stages.downstream import kinds, train

SOURCES = [{"sha256": "raw-file-hash"}]


def _clear_caches() -> None:
    run_ids._module_code.cache_clear()
    run_ids.code_identity.cache_clear()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A tiny project tree standing in for this one: `code_identity` reads it instead."""
    root = tmp_path / "project"
    (root / "stages").mkdir(parents=True)
    (root / "pipeline").mkdir()
    for package in ("stages", "pipeline"):
        (root / package / "__init__.py").write_text("")
    (root / "stages" / "main.py").write_text(
        '"""Trains."""\nfrom stages import helper\n\ndef run():\n    from stages import late\n    return helper.f() + late.g()\n')
    (root / "stages" / "helper.py").write_text("def f():\n    return 1  # one\n")
    (root / "stages" / "late.py").write_text("def g():\n    return 2\n")
    (root / "stages" / "other_method.py").write_text("def h():\n    return 3\n")
    (root / "pipeline" / "events.py").write_text("def say():\n    return 'hello'\n")
    (root / "stages" / "main.py").write_text((root / "stages" / "main.py").read_text()
                                             + "from stages import other_method\nfrom pipeline import events\n")
    monkeypatch.setattr(run_ids, "PROJECT_ROOT", root)
    yield root
    _clear_caches()  # what was read from the stand-in must not answer for this project


def _identity() -> str:
    _clear_caches()
    return run_ids.code_identity(("stages.main",), ("stages.other_method",))


@pytest.mark.parametrize(("module", "edit", "changes"), [
    ("stages/main.py", lambda s: s.replace('"""Trains."""', '"""Trains, documented better."""'), False),
    ("stages/helper.py", lambda s: s.replace("# one", "# the one"), False),
    ("stages/helper.py", lambda s: s.replace("return 1", "return 10"), True),
    ("stages/late.py", lambda s: s.replace("return 2", "return 20"), True),  # imported inside a function
    ("stages/other_method.py", lambda s: s.replace("return 3", "return 30"), False),  # a method this run does not use
    ("pipeline/events.py", lambda s: s.replace("hello", "hi"), False),  # messages are not results
])
def test_code_identity_follows_the_code_a_run_runs(project: Path, module: str, edit, changes: bool) -> None:
    before = _identity()
    path = project / module
    path.write_text(edit(path.read_text()))
    assert (_identity() != before) == changes


def test_each_method_and_kind_leaves_out_the_others_code() -> None:
    said = run_ids.modules_run(("stages.align.stage",), tuple(type(method).__module__ for name, method
                                                             in align.METHODS.items() if name != "said"))
    assert "stages.align.said" in said and not any(name.startswith("stages.recformer.") for name in said)
    assert len({align.code(method) for method in align.METHODS}) == len(align.METHODS)
    sasrec = run_ids.modules_run(("stages.downstream.train",), tuple(kinds.OWN_CODE.values()))
    assert "stages.downstream.sasrec" in sasrec and not any(name.startswith("stages.recformer.") for name in sasrec)
    assert train.code("sasrec") == train.code("gru4rec") != train.code("recformer")  # the sequence kinds share code


def test_a_setting_a_stage_does_not_read_keeps_its_run_and_one_it_reads_makes_a_new_one() -> None:
    base = load_config(None, ["downstream.embeddings=null"])
    downstream = train.run_id(base, "dataset-run", None)
    assert train.run_id(load_config(None, ["downstream.embeddings=null", "align.batch_size=7"]), "dataset-run", None) == downstream
    assert train.run_id(load_config(None, ["downstream.embeddings=null", "downstream.train.lr=0.01"]),
                        "dataset-run", None) != downstream
    assert train.run_id(base, "another-dataset-run", None) != downstream
    embedded = Embeddings(Path("/w/embeddings/ml-100k/run1"), [], np.zeros((0, 4), np.float32), [], {"dim": "4"},
                          {"run_id": "run1"})
    by_word = train.run_id(load_config(None, ["downstream.embeddings=latest"]), "dataset-run", embedded)
    by_path = train.run_id(load_config(None, [f"downstream.embeddings={embedded.run_dir}"]), "dataset-run", embedded)
    assert by_word == by_path != downstream  # the embeddings run counts by its id, however it was named

    dataset = prepare.run_id(base, SOURCES)
    assert prepare.run_id(load_config(None, ["data.path=/elsewhere"]), SOURCES) == dataset  # read by content
    assert prepare.run_id(load_config(None, ["data.kcore_users=2"]), SOURCES) != dataset

    model = {"sha256": "weights"}
    text = load_config(None, ["align.method=text"])
    said_only = load_config(None, ["align.method=text", "align.said.epochs=9"])
    assert align._config_hash(align.METHODS["text"], said_only, model) == align._config_hash(align.METHODS["text"], text, model)
    said = load_config(None, ["align.method=said"])
    said_method = align.METHODS["said"]
    assert align._config_hash(said_method, load_config(None, ["align.method=said", "align.said.epochs=9"]), model) \
        != align._config_hash(said_method, said, model)


def test_a_code_change_makes_a_new_run(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(None, ["downstream.embeddings=null"])
    before = (train.run_id(config, "dataset-run", None), prepare.run_id(config, SOURCES))
    monkeypatch.setattr(train, "code", lambda kind: "other-code")
    assert train.run_id(config, "dataset-run", None) != before[0]
    assert prepare.run_id(config, SOURCES) == before[1]  # another stage's code: its runs stay
