import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from pipeline.contracts.embeddings import read_embeddings
from pipeline.contracts.history import read_history
from pipeline.errors import BadInput
from pipeline.store import Output, publish_run
from stages import resume
from stages.downstream import fit, kinds, runs, train, warm_start
from stages.downstream.evaluate import evaluate_model
from stages.downstream.sequences import load_sequences
from stages.downstream.warm_start import WarmStart
from tests.fault_support import plant, planted_sites
from tests.support import write_embeddings_run

ID_ONLY = "downstream.embeddings=null"


def _dataset_dir(config) -> Path:
    return runs.dataset_dir(config).resolve()


def test_publishes_a_complete_run_that_names_its_embeddings(workspace) -> None:
    config = workspace("downstream.train.epochs=1")
    write_embeddings_run(Path(config.workspace.root), _dataset_dir(config), 16)
    result = train.run(config)
    assert sorted(os.listdir(result.run_dir)) == ["config.json", "history.jsonl", "index.faiss", "manifest.json", "metrics.json",
                                                 "model.safetensors"]
    manifest = result.manifest
    assert (manifest["kind"], manifest["embeddings_run_id"], manifest["embedding_dim"]) == ("downstream", "hash0001", 16)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert set(metrics["model"]["test"]) == {"mrr", "recall@10", "ndcg@10", "recall@50", "ndcg@50"}
    assert metrics["popularity"]["test"]["recall@50"] > 0
    assert metrics["protocol"]["mask_history"] is False and metrics["protocol"]["candidates"] == manifest["num_items"]
    assert "weights" not in json.dumps(manifest) and not (result.run_dir / "checkpoints").exists()
    assert train.run(config).reused


@pytest.mark.parametrize(("batch_by", "ema_decay"), [("windows", None), ("targets", None), ("windows", 0.9)])
def test_a_killed_run_resumes_and_ends_as_an_uninterrupted_one(workspace, monkeypatch, batch_by: str,
                                                               ema_decay: float | None) -> None:
    config = workspace(ID_ONLY, "downstream.train.epochs=3", "downstream.train.patience=5",
                       f"downstream.train.batch_by={batch_by}", f"downstream.train.ema_decay={ema_decay or 'null'}")
    uninterrupted = train.run(config)
    expected = load_file(uninterrupted.run_dir / "model.safetensors")
    expected_history = read_history(uninterrupted.run_dir)
    shutil.rmtree(uninterrupted.run_dir.parent)

    save = resume.save

    def save_then_die(accelerator, root, prefix, counter, *rest) -> None:
        save(accelerator, root, prefix, counter, *rest)
        if counter == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(resume, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train.run(config)
    partial = Output(uninterrupted.run_dir.parent).partial_dir(uninterrupted.manifest["run_id"])
    assert (partial / "checkpoints" / "epoch-00000002" / "COMPLETE").is_file()
    (partial / "checkpoints" / "epoch-00000003").mkdir()  # a checkpoint cut off mid-write: no marker, ignored
    monkeypatch.undo()
    marker = partial.parent / "pickle-ran"
    planted = plant(partial / "checkpoints" / "epoch-00000002", marker) + plant(partial, marker)

    resumed = train.run(config)
    planted_sites(planted, marker)
    assert resumed.manifest["epochs"] == 3
    assert resumed.manifest["metrics"] == uninterrupted.manifest["metrics"]
    weights = load_file(resumed.run_dir / "model.safetensors")
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[name], expected[name]) for name in expected)
    history = read_history(resumed.run_dir)  # the epochs before the kill come back from the checkpoint
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert [h["best"] for h in history].count(True) == 1
    assert history[[h["best"] for h in history].index(True)]["epoch"] == resumed.manifest["best_epoch"]
    assert [h["loss"] for h in history] == [h["loss"] for h in expected_history]
    assert [h["valid_ndcg@10"] for h in history] == [h["valid_ndcg@10"] for h in expected_history]
    assert all(h["valid_recall@50"] >= h["valid_recall@10"] and h["train_s"] > 0 for h in history)


def test_the_moving_average_is_what_is_evaluated_and_published(workspace) -> None:
    """A decay near 0 averages nothing (the run is the plain one); 0.9 publishes weights no step produced."""
    def run(*settings: str):
        return train.run(workspace(ID_ONLY, "downstream.train.epochs=2", *settings))

    plain, unaveraged, averaged = run(), run("downstream.train.ema_decay=1e-9"), run("downstream.train.ema_decay=0.9")
    weights = {name: load_file(result.run_dir / "model.safetensors")
               for name, result in (("plain", plain), ("unaveraged", unaveraged), ("averaged", averaged))}
    assert weights["plain"].keys() == weights["averaged"].keys()
    assert all(torch.allclose(weights["plain"][k], weights["unaveraged"][k], atol=1e-5) for k in weights["plain"])
    assert unaveraged.manifest["metrics"]["test"] == pytest.approx(plain.manifest["metrics"]["test"], abs=1e-4)
    assert not torch.allclose(weights["plain"]["items.ids.weight"], weights["averaged"]["items.ids.weight"], atol=1e-4)
    history = read_history(averaged.run_dir)  # the valid curve is the average's
    assert history[averaged.manifest["best_epoch"] - 1]["valid_ndcg@10"] == pytest.approx(
        averaged.manifest["metrics"]["valid"]["ndcg@10"])


@pytest.mark.parametrize("members", [1, 3])
def test_the_moving_average_shares_the_frozen_embedding_table_and_copies_the_weights(members: int) -> None:
    from pipeline.config import load_config
    from stages.downstream.recommender import build
    from stages.downstream.sasrec import SASRec

    config = load_config(None, ["downstream.model.adapter=whiten", "downstream.model.id_embedding=true",
                                f"downstream.model.members={members}"]).downstream.model
    model = build(config, lambda c: SASRec(c.hidden_size, c.layers, c.heads, c.dropout, c.max_length), 50,
                  np.random.default_rng(0).normal(size=(50, 24)).astype(np.float32), None)
    average = fit.moving_average(model, 0.9)
    sides = [(model.items, average.module.items)] if members == 1 else list(
        zip(model.items.members, average.module.items.members))
    table = sides[0][0].table
    for trained, averaged in sides:
        assert averaged.table.data_ptr() == trained.table.data_ptr() == table.data_ptr()  # one N x D table for all
        assert torch.equal(averaged.ids.weight, trained.ids.weight)
        assert averaged.ids.weight.data_ptr() != trained.ids.weight.data_ptr()
    assert table.shape == (51, 24) and fit.moving_average(model, None) is None


def test_embeddings_must_exist_and_cover_the_datasets_items_whatever_run_made_them(workspace) -> None:
    config = workspace("downstream.train.epochs=1")
    root, dataset_dir = Path(config.workspace.root), _dataset_dir(config)
    with pytest.raises(BadInput, match=r"no published embeddings run yet; run `seqrec-pipeline align` first, or "
                                       r"set downstream.embeddings=null"):
        train.run(config)
    # stage one is keyed by the catalog: embeddings made from another dataset run over the same items serve
    write_embeddings_run(root, dataset_dir, 8, dataset_run_id="another", run_id="other")
    assert train.run(config).manifest["embeddings_run_id"] == "other"
    items = pq.read_table(dataset_dir / "items.parquet").column("item_id").to_pylist()
    write_embeddings_run(root, dataset_dir, 8, item_ids=items[3:], run_id="partial")
    with pytest.raises(BadInput, match="3 dataset items have no embedding"):
        train.run(config)
    fallback = train.run(workspace("downstream.missing_items=id_vector", "downstream.train.epochs=1"))
    assert fallback.manifest["items_without_embedding"] == 3


def test_embeddings_of_another_dimension_than_the_checkpoint_are_refused(workspace) -> None:
    config = workspace("downstream.train.epochs=1", "downstream.model.adapter=whiten")
    root, dataset_dir = Path(config.workspace.root), _dataset_dir(config)
    write_embeddings_run(root, dataset_dir, 16)
    run_dir = train.run(config).run_dir
    assert kinds.load_trained(run_dir).model.items.input_dim == 16
    shutil.rmtree(root / "embeddings")
    write_embeddings_run(root, dataset_dir, 24)  # same run id, now 24 wide
    with pytest.raises(BadInput, match="embeddings have dim 24, but .*model.safetensors was trained on dim 16"):
        kinds.load_trained(run_dir)


def _derived_dataset(workspace, name: str, keep, valid: bool = True) -> object:
    """Publish a dataset of the small dataset's real rows, each user cut to `keep(user_index)` items
    (without a valid split when `valid` is false)."""
    base = workspace()
    source = _dataset_dir(base)
    inter = pq.read_table(source / "interactions.parquet")
    users = inter.column("user_id").to_numpy(zero_copy_only=False)
    codes = np.unique(users, return_inverse=True)[1]
    position = inter.column("position").to_numpy()
    keep_n = np.array([keep(u) for u in range(codes.max() + 1)])[codes]
    inter = inter.filter(pa.array(position < keep_n))
    from_end = keep_n[position < keep_n] - 1 - inter.column("position").to_numpy()
    length = keep_n[position < keep_n]
    split = np.where((from_end == 0) & (length >= 2), "test",
                     np.where((from_end == 1) & (length >= 3) & valid, "valid", "train"))
    inter = inter.set_column(inter.column_names.index("split"), "split", pa.array(split))

    def build(folder: Path) -> dict:
        shutil.copy(source / "items.parquet", folder / "items.parquet")
        pq.write_table(inter, folder / "interactions.parquet")
        return {"kind": "dataset", "name": name}

    publish_run(Output(Path(base.workspace.root) / "datasets" / name), name, build)
    return workspace(ID_ONLY, f"data.name={name}", "downstream.train.epochs=1")


def test_an_empty_valid_split_is_refused(workspace) -> None:
    config = _derived_dataset(workspace, "no-valid", lambda user: 5, valid=False)
    with pytest.raises(BadInput, match=r"no-valid/interactions.parquet: no users with a valid interaction"):
        train.run(config)


def test_users_with_one_interaction_are_skipped_and_counted(workspace) -> None:
    config = _derived_dataset(workspace, "some-single", lambda user: 1 if user % 10 == 0 else 20)
    result = train.run(config)
    singles = len(range(0, result.manifest["users"]["total"], 10))
    assert result.manifest["users"]["one_interaction_skipped"] == singles
    assert result.manifest["users"]["trained_on"] == result.manifest["users"]["total"] - singles
    assert pc.sum(pc.equal(pq.read_table(runs.dataset_dir(config) / "interactions.parquet").column("position"), 0)).as_py() == result.manifest["users"]["total"]


def test_training_windows_cover_every_train_target_exactly_once(workspace) -> None:
    seqs = load_sequences(runs.dataset_dir(workspace()))
    rows, without = fit.training_rows(seqs, max_length=3)
    inputs, targets = rows[:, :-1], rows[:, 1:]
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    got = np.sort(targets[inputs != 0].numpy())
    train_items = [seqs.items[start + 1:start + n] for start, n in zip(seqs.starts, seqs.n_train)]
    np.testing.assert_array_equal(got, np.sort(np.concatenate(train_items)))
    assert without == int((seqs.n_train < 2).sum())


def test_auto_loss_is_the_full_softmax_on_small_catalogs_and_sampled_past_the_limit(workspace) -> None:
    config = workspace("downstream.embeddings=null", "downstream.train.epochs=1")
    items = train.catalog_size(_dataset_dir(config))
    auto = train.run(config)
    assert auto.run_dir == train.run(workspace("downstream.embeddings=null", "downstream.train.epochs=1",
                                               "downstream.train.loss=ce")).run_dir  # the same run as ce
    sampled = train.run(workspace("downstream.embeddings=null", "downstream.train.epochs=1",
                                  f"downstream.train.full_softmax_max_items={items - 1}"))
    saved = json.loads((sampled.run_dir / "config.json").read_text())["train"]
    assert (saved["loss"], saved["sampler"]) == ("sampled", "popularity") and sampled.run_dir != auto.run_dir


def test_a_run_saved_before_settings_were_added_still_loads(workspace) -> None:
    run_dir = train.run(workspace("downstream.embeddings=null", "downstream.train.epochs=1")).run_dir
    saved = json.loads((run_dir / "config.json").read_text())
    for key in ("init", "sampler", "full_softmax_max_items", "batch_by"):
        del saved["train"][key]
    (run_dir / "config.json").write_text(json.dumps(saved))
    loaded = kinds.load_trained(run_dir)
    assert (loaded.config.train.init, loaded.config.train.sampler, loaded.config.train.batch_by) == \
        ("scratch", "uniform", "windows")  # what the older run did


def test_a_model_of_members_publishes_reloads_serves_new_vectors_and_warm_starts_each_member(workspace) -> None:
    config = workspace("downstream.train.epochs=2", "downstream.model.members=2", "downstream.model.adapter=whiten",
                       "downstream.model.id_embedding=true", "downstream.train.ema_decay=0.9")
    embeddings = read_embeddings(write_embeddings_run(Path(config.workspace.root), _dataset_dir(config), 16))
    result = train.run(config)
    assert {"items.members.1.ids.weight", "sequence.members.1.positions.weight"} <= load_file(
        result.run_dir / "model.safetensors").keys()
    trained = kinds.load_trained(result.run_dir)
    model, seqs, hidden = trained.model, trained.seqs, config.downstream.model.hidden_size
    test = evaluate_model(model, seqs, "test", config.downstream.evaluate, config.downstream.model.max_length)
    assert test == pytest.approx(result.manifest["metrics"]["test"])
    with torch.no_grad():  # an item's vector made from its embedding (as for a new item) is its trained vector
        table = model.items.all_items()
        assert table.shape == (seqs.num_items, 2 * hidden)
        known = torch.arange(1, seqs.num_items + 1)
        assert torch.allclose(model.items.encode_embeddings(model.items.table[known], known), table, atol=1e-5)

    vectors, has = runs.item_vectors(embeddings, seqs, config.downstream)
    fresh = kinds.build_recommender(config.downstream.model, seqs.num_items, vectors, has)
    saved = WarmStart("earlier", lambda: (model.state_dict(), seqs.item_ids))
    warm_start.apply(fresh, saved, seqs.item_ids[::-1])  # the same items, numbered the other way round
    for new, old in zip(fresh.items.members, model.items.members):
        assert torch.equal(new.ids.weight[1:], old.ids.weight[1:].flip(0))
        assert torch.equal(new.adapter.linear.weight, old.adapter.linear.weight)
