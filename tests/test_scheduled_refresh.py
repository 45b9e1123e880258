"""The scheduled refresh on slices of ml-100k: stage one follows the catalog, stage two warm-starts, yesterday's
model recommends today's items, `status` and `gc` read the workspace, and the cron/systemd script runs two days."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from pipeline import gc, status
from pipeline.config import PipelineConfig
from pipeline.contracts.embeddings import read_embeddings, write_embeddings
from pipeline.errors import BadInput
from pipeline.store import LOCK, read_manifest
from stages.align import said_method, stage
from stages.align.said_items import read_item_table
from stages.downstream import kinds, recommend, train, warm_start
from stages.downstream.kinds import build_recommender
from stages.downstream.sequences import load_sequences
from tests.align_support import align_config, prepared, write_ml100k_slice
from tests.support import REPO, TINY_MODEL, shared_dataset, write_embeddings_run


def _day(tmp_path: Path, day: int, items: int, **slice_args) -> Path:
    return write_ml100k_slice(shared_dataset("ml-100k"), tmp_path / f"raw{day}", items=items, **slice_args)


def _config(root: Path, raw: Path, lm: Path, *overrides: str) -> PipelineConfig:
    return align_config(root, raw, lm, "align.said.epochs=1", "align.evidence.items=0", *TINY_MODEL,
                        "downstream.model.adapter=whiten", *overrides)  # new items scored from their vectors


def test_an_interaction_only_change_reuses_stage_one_and_loads_no_model(tmp_path: Path, tiny_llama: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "art"
    first = _config(root, _day(tmp_path, 1, 40), tiny_llama)
    day1 = prepared(first)
    aligned = stage.run(first)
    raw = _day(tmp_path, 2, 40)
    lines = (raw / "ml-100k.inter").read_text(encoding="latin-1").splitlines()
    (raw / "ml-100k.inter").write_text("\n".join(lines[:-50]) + "\n", encoding="latin-1")  # fewer interactions
    second = _config(root, raw, tiny_llama)
    day2 = prepared(second)
    assert read_manifest(day2)["run_id"] != read_manifest(day1)["run_id"]

    def no_model(*args, **kwargs):
        raise AssertionError("stage one loaded a model for an interaction-only change")

    monkeypatch.setattr(said_method, "load_causal_lm", no_model)
    again = stage.run(second)
    assert again.reused and again.run_dir == aligned.run_dir
    assert stage.plan(second, day2).reason.startswith(f"catalog unchanged since run {aligned.run_dir.name}")


def test_a_refresh_embeds_exactly_the_new_and_changed_items_and_drops_removed_ones(tmp_path: Path,
                                                                                  tiny_llama: Path) -> None:
    root = tmp_path / "art"
    first = _config(root, _day(tmp_path, 1, 40), tiny_llama)
    prepared(first)
    base = stage.run(first)
    # day 2: items 1-2 gone, 41-46 new (k = 6), item 5 retitled (m = 1)
    second = _config(root, _day(tmp_path, 2, 44, skip=2, retitle={"5": "Copycat Returns"}), tiny_llama)
    prepared(second)
    grown = stage.run(second)
    facts = grown.manifest
    assert (facts["items_new"], facts["items_changed"], facts["items_removed"]) == (6, 1, 2)
    assert facts["items_embedded"] == 7 and facts["rows"] == 44 and facts["training"]["steps"] == 1  # 7 items, batch 8
    old, new = read_embeddings(base.run_dir), read_embeddings(grown.run_dir)
    assert "1" not in new.item_ids and "2" not in new.item_ids
    kept = ["3", "4", *(str(i) for i in range(6, 41))]  # first, in the base's order; then the re-embedded rows
    assert new.item_ids == [*kept, "5", *(str(i) for i in range(41, 47))]
    for item in new.item_ids[:38]:  # kept rows: bit for bit, changed one: re-embedded
        same = np.array_equal(new.vectors[new.item_ids.index(item)], old.vectors[old.item_ids.index(item)])
        assert same == (item != "5"), item
    index = faiss.read_index(str(grown.run_dir / "index.faiss"))
    stored = index.reconstruct_n(0, index.ntotal)
    normalised = new.vectors / np.linalg.norm(new.vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(stored, normalised, atol=1e-6)  # the removed items' vectors are gone too
    table, base_table = read_item_table(grown.run_dir), read_item_table(base.run_dir)
    assert table.shape[0] == 44 and torch.equal(table[0], base_table[2])  # item 3 keeps its trained row
    shrunk = _config(root, _day(tmp_path, 3, 40, skip=4, retitle={"5": "Copycat Returns"}), tiny_llama)
    prepared(shrunk)  # only removals: nothing to embed, no model needed
    carried = stage.run(shrunk)
    assert carried.manifest["items_embedded"] == 0 and carried.manifest["items_removed"] == 4
    carried_ids = read_embeddings(carried.run_dir).item_ids
    assert carried_ids == [*kept[2:], "5", *(str(i) for i in range(41, 45))]
    assert torch.equal(read_item_table(carried.run_dir), table[[new.item_ids.index(item) for item in carried_ids]])


def _two_days(tmp_path: Path, *overrides: str) -> list[tuple[PipelineConfig, Path, Path]]:
    """Day 1 (40 items) and day 2 (46 items) of one workspace: (config, dataset run, embeddings run) each."""
    root = tmp_path / "art"
    days = []
    for day, items in ((1, 40), (2, 46)):
        config = _config(root, _day(tmp_path, day, items), Path("unused"), "downstream.train.epochs=2", *overrides)
        dataset_dir = prepared(config)
        days.append((config, dataset_dir, write_embeddings_run(root, dataset_dir, 16, run_id=f"day{day}")))
    return days


def test_warm_start_loads_matching_rows_and_rerunning_is_a_no_op(tmp_path: Path) -> None:
    (day1, dataset1, embeddings1), (day2, _, embeddings2) = _two_days(
        tmp_path, "downstream.model.id_embedding=true", "downstream.train.init=previous")
    first = train.run(day1, dataset_dir=dataset1, embeddings_dir=embeddings1)
    assert first.manifest["init"] == "scratch"  # nothing earlier to start from
    warm = train.run(day2, embeddings_dir=embeddings2)
    facts = warm.manifest
    assert (facts["init"], facts["init_run_id"], facts["items_matched"], facts["items_new"]) == \
        ("previous", first.run_dir.name, 40, 6)
    history = json.loads((warm.run_dir / "metrics.json").read_text())["history"]
    assert history[0]["epoch"] == 0 and "valid_ndcg@10" in history[0]  # the warm model scored before training
    # the adapter keeps the whitening it was trained behind, not one recomputed from today's larger table
    before, after = load_file(str(first.run_dir / "model.safetensors")), load_file(str(warm.run_dir / "model.safetensors"))
    assert torch.equal(before["items.adapter.matrix"], after["items.adapter.matrix"])
    fresh_whitening = build_recommender(day2.downstream.model, 46, read_embeddings(embeddings2).vectors.copy(), None).state_dict()
    assert not torch.equal(fresh_whitening["items.adapter.matrix"], before["items.adapter.matrix"])
    assert train.run(day2, embeddings_dir=embeddings2).reused  # its own run is never its source
    # rows matched by item id; new items keep a fresh start
    source = train.warm_source(day2, "a later dataset run", read_embeddings(embeddings2))
    assert source is not None and source.run_id == warm.run_dir.name
    seqs = kinds.load_trained(warm.run_dir).seqs
    model = build_recommender(day2.downstream.model, seqs.num_items, np.zeros((seqs.num_items, 16), np.float32), None)
    fresh = model.state_dict()["items.ids.weight"].clone()
    warm_start.apply(model, source, seqs.item_ids)
    loaded = model.state_dict()["items.ids.weight"]
    state, ids = source.read()
    assert torch.equal(loaded[1:], state["items.ids.weight"][1:])
    reversed_ids = warm_start.WarmStart(source.run_id, lambda: (state, ids[::-1]))  # rows follow ids, not positions
    warm_start.apply(model, reversed_ids, seqs.item_ids)
    assert torch.equal(model.state_dict()["items.ids.weight"][1], state["items.ids.weight"][46])
    assert not torch.equal(fresh[1], state["items.ids.weight"][1])


def _set_embedding(run_dir: Path, item: str, like: str) -> None:
    """Give `item` the embedding of `like` in a published embeddings run (a test-only edit)."""
    made = read_embeddings(run_dir)
    vectors = made.vectors.copy()
    vectors[made.item_ids.index(item)] = vectors[made.item_ids.index(like)]
    shutil.rmtree(run_dir / "embeddings")
    write_embeddings(run_dir, made.item_ids, vectors, made.text_sha256, made.metadata)


def test_yesterdays_model_recommends_an_item_that_arrived_today(tmp_path: Path) -> None:
    (day1, dataset1, embeddings1), (day2, dataset2, embeddings2) = _two_days(
        tmp_path, "recommend.filter_history=false", "recommend.k=5")
    model_run = train.run(day1, dataset_dir=dataset1, embeddings_dir=embeddings1).run_dir
    yesterday = pq.read_table(recommend.run(day1, run_dir=model_run, dataset_dir=dataset1,
                                            embeddings_dir=embeddings1).run_dir / "recommendations.parquet").to_pylist()
    user, top = yesterday[0]["user_id"], yesterday[0]["item_ids"][0]
    _set_embedding(embeddings2, "46", like=top)  # today's new item reads like yesterday's top pick for `user`
    rows = sorted((r["position"], r["item_id"]) for r in pq.read_table(dataset1 / "interactions.parquet").to_pylist()
                  if r["user_id"] == user)
    histories = tmp_path / "histories.csv"
    histories.write_text("user_id,item_id\n" + "".join(f"someone,{item}\n" for _, item in rows) + "someone,nope\n")
    result = recommend.run(day2, run_dir=model_run, histories=histories)
    picked = pq.read_table(result.run_dir / "recommendations.parquet").to_pylist()
    assert picked[0]["user_id"] == "someone" and {"46", top} <= set(picked[0]["item_ids"])
    facts = result.manifest
    assert (facts["items_new_since_training"], facts["items_left_out"], facts["history_rows_skipped"]) == (6, 0, 1)
    assert facts["embeddings_run_id"] == "day2"  # today's embeddings, found by method and width
    every = pq.read_table(recommend.run(day2, run_dir=model_run).run_dir / "recommendations.parquet")
    assert every.num_rows == len(load_sequences(dataset2).user_ids)  # every user of today's dataset
    # an ID-only model cannot score items it never saw: left out and counted, never recommended
    id_only = _config(Path(day1.workspace.root), Path(day2.data.path), Path("unused"), "downstream.embeddings=null",
                      "downstream.train.epochs=1")
    blind = recommend.run(id_only, run_dir=train.run(id_only, dataset_dir=dataset1).run_dir)
    assert blind.manifest["items_left_out"] == 6
    new_items = {str(i) for i in range(41, 47)}
    assert not any(set(row["item_ids"]) & new_items
                   for row in pq.read_table(blind.run_dir / "recommendations.parquet").to_pylist())


def test_a_histories_file_without_its_columns_is_refused(tmp_path: Path) -> None:
    _, (day2, _, embeddings2) = _two_days(tmp_path)
    model_run = train.run(day2, embeddings_dir=embeddings2).run_dir
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item\n1,2\n")
    with pytest.raises(BadInput, match=r"bad.csv: no column 'user_id' .*expected user_id, item_id"):
        recommend.run(day2, run_dir=model_run, histories=bad)
    with pytest.raises(BadInput, match="histories file not found"):
        recommend.run(day2, run_dir=model_run, histories=tmp_path / "absent.parquet")


def test_status_says_what_run_would_do_and_gc_keeps_what_is_in_use(tmp_path: Path, tiny_llama: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "art"
    day1 = _config(root, _day(tmp_path, 1, 40), tiny_llama, "downstream.train.epochs=1")
    prepared(day1)
    first = stage.run(day1)
    train.run(day1)
    day2 = _config(root, _day(tmp_path, 2, 43), tiny_llama, "downstream.train.epochs=1", "downstream.train.init=previous")
    report = status.status(day2)
    assert report["published"]["align"]["latest"] == first.run_dir.name
    assert report["next"]["prepare"].startswith("new raw files or data settings")
    assert report["next"]["align"].startswith("decided after prepare")
    prepared(day2)
    report = status.status(day2)
    assert report["next"]["prepare"].startswith("raw files and data settings unchanged")
    assert report["next"]["align"] == f"3 new items, 0 changed, 0 removed since run {first.run_dir.name}: incremental"
    second = stage.run(day2)
    trained = train.run(day2).run_dir
    monkeypatch.setattr(kinds, "load_trained", lambda run_dir: pytest.fail("status loaded a model"))
    assert status.status(day2)["next"]["train-downstream"] == f"inputs and settings unchanged: reuses run {trained.name}"
    monkeypatch.undo()
    assert not any(facts.get("latest_made_by_other_code") for facts in status.status(day2)["published"].values())
    monkeypatch.setattr(train, "code", lambda kind: "other-code")  # as if stage two's code had changed since
    other = status.status(day2)
    assert other["published"]["train-downstream"]["latest_made_by_other_code"]
    assert not other["published"]["align"]["latest_made_by_other_code"]
    assert "made by other code (the next run remakes it)" in "\n".join(status.lines(other))
    assert other["next"]["train-downstream"].startswith("new inputs or settings: trains run")
    monkeypatch.undo()
    # keep 1 per output: day 2's runs stay, and so does nothing else the kept ones read
    dry = gc.collect(root, keep=1, delete=False, lock_wait_s=0, stale_lock_s=60)
    doomed = {run.run_dir for run in dry.deleted}
    assert first.run_dir in doomed and second.run_dir not in doomed and all(run.run_dir.exists() for run in dry.deleted)
    (first.run_dir.parent / LOCK).write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "since": "now"}))
    locked = gc.collect(root, keep=1, delete=True, lock_wait_s=0, stale_lock_s=60)
    assert first.run_dir.exists() and locked.skipped_locked == [first.run_dir.parent]
    (first.run_dir.parent / LOCK).unlink()
    done = gc.collect(root, keep=1, delete=True, lock_wait_s=0, stale_lock_s=60)
    assert not first.run_dir.exists() and second.run_dir.exists() and trained.exists()
    assert not any(p.name.startswith(".gc-") for p in first.run_dir.parent.iterdir())
    assert {run.run_dir for run in [*locked.deleted, *done.deleted]} == doomed  # the other outputs went first
    kept_model = kinds.load_trained(trained)  # what the kept model reads is still there
    assert kept_model.seqs.num_items == 43


def test_the_cron_script_refreshes_two_days_and_skips_when_locked(tmp_path: Path, tiny_llama: Path) -> None:
    raw, root = tmp_path / "raw", tmp_path / "art"
    config = tmp_path / "daily.yaml"
    config.write_text(f"""workspace: {{root: {root}}}
data: {{path: {raw}, kcore_users: 0, kcore_items: 0}}
align: {{lm: {tiny_llama}, said: {{epochs: 1, lr: 0.05, warmup_steps: 2}}, evidence: {{items: 0, neighbour_queries: 20}}}}
downstream:
  model: {{hidden_size: 16, layers: 1, heads: 2, max_length: 10}}
  train: {{epochs: 1, init: previous}}
""")
    env = {**os.environ, "SEQREC_BIN": f"{sys.executable} -m pipeline.cli", "SEQREC_KEEP": "1"}
    script = [str(REPO / "examples" / "refresh.sh"), str(config)]
    outputs = {}
    for day, items in ((1, 40), (2, 44)):
        write_ml100k_slice(shared_dataset("ml-100k"), raw, items=items)
        done = subprocess.run(script, cwd=REPO, env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        outputs[day] = done.stderr
    assert "align: no embeddings run yet: full alignment of 40 items" in outputs[1]
    assert "align: 4 new items, 0 changed, 0 removed since run" in outputs[2]
    assert "warm start from run" in outputs[2]
    embeddings = [p for p in (root / "embeddings" / "ml-100k").iterdir() if not p.name.startswith(".") and p.name != "latest"]
    assert len(embeddings) == 1  # gc --keep 1 removed day 1's run
    lock = root / "datasets" / "ml-100k" / LOCK
    holder = subprocess.Popen(["sleep", "30"])
    try:
        lock.write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename, "since": "now"}))
        skipped = subprocess.run(script, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    finally:
        holder.kill()
        lock.unlink(missing_ok=True)
    assert skipped.returncode == 0 and "refresh: another job holds the workspace; skipped" in skipped.stderr
