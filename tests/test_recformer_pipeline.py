"""Recformer wired into the commands: align (pretrain + export, incremental, zero-shot), train-downstream, recommend.

Tiny 2-layer BERT with the real MiniLM tokenizer (the `tiny_bert` fixture) on slices of ml-100k.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.contracts.embeddings import check_index, read_embeddings
from pipeline.contracts.history import read_history
from tests.align_support import write_ml100k_slice
from tests.support import shared_dataset, write_embeddings_run

TINY = ["recformer.max_items=8", "recformer.max_tokens=64", "recformer.max_attribute_tokens=8",
        "recformer.pretrain.lr=1e-3", "recformer.pretrain.warmup_steps=0",
        "recformer.pretrain.batch_size=16", "recformer.pretrain.max_steps=30",
        "recformer.encode.batch_size=16", "recformer.encode.chunk_items=25",
        "recformer.finetune.batch_size=32", "recformer.finetune.lr=1e-3",
        "data.kcore_users=0", "data.kcore_items=0", "data.max_history=12", "align.method=recformer",
        "align.evidence.items=0", "downstream.evaluate.batch_size=64"]


def _cli(*args: str) -> Path:
    done = CliRunner().invoke(app, list(args))
    assert done.exit_code == 0, done.output
    return Path(done.stdout.strip().splitlines()[-1])


def _sets(root: Path, raw: Path, model: Path, name: str, *extra: str) -> list[str]:
    settings = [f"workspace.root={root}", f"data.path={raw}", f"data.name={name}", f"recformer.model={model}",
                *TINY, *extra]
    return [part for arg in settings for part in ("--set", arg)]


@pytest.fixture(scope="module")
def raws(tmp_path_factory) -> dict[str, Path]:
    source, base = shared_dataset("ml-100k"), tmp_path_factory.mktemp("raw")
    return {"a": write_ml100k_slice(source, base / "a", items=40),
            "grown": write_ml100k_slice(source, base / "grown", items=46, retitle={"3": "Five Rooms"}),
            "other": write_ml100k_slice(source, base / "other", items=80)}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, raws: dict[str, Path], tiny_bert: Path) -> tuple[Path, Path]:
    """(workspace root, embeddings run): recformer pretrained on slice `a` plus the extra dataset `other`."""
    root = tmp_path_factory.mktemp("ws") / "artifacts"
    _cli("prepare", *_sets(root, raws["other"], tiny_bert, "other"))
    _cli("prepare", *_sets(root, raws["a"], tiny_bert, "a"))
    run = _cli("align", *_sets(root, raws["a"], tiny_bert, "a", "recformer.pretrain.datasets=[other]"))
    return root, run


def test_align_pretrains_on_two_datasets_and_exports_agreeing_files(pretrained, raws, tiny_bert) -> None:
    root, run = pretrained
    manifest = json.loads((run / "manifest.json").read_text())
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "embeddings", "encoder", "history.jsonl",
                                                    "index.faiss", "manifest.json"]
    items = pq.read_table(root / "datasets" / "a" / "latest" / "items.parquet").to_pylist()
    embeddings = read_embeddings(run)
    assert embeddings.item_ids == [row["item_id"] for row in items] and embeddings.vectors.shape == (40, 32)
    assert embeddings.text_sha256 == [hashlib.sha256(row["text"].encode()).hexdigest() for row in items]
    assert embeddings.metadata["method"] == "recformer" and embeddings.metadata["model"] == str(tiny_bert)
    check_index(run, 40, 32)
    training = manifest["training"]
    assert training["steps"] == 30 and training["corpus_items"] == 40 + 80
    assert training["last_loss"] < training["first_loss"] and training["last_mlm"] < training["first_mlm"]
    history = read_history(run)
    assert [h["step"] for h in history] == list(range(1, 31)) and all(h["examples_per_s"] > 0 for h in history)
    assert history[0]["loss"] == pytest.approx(history[0]["contrastive"] + 0.1 * history[0]["mlm"])
    other_run = json.loads((root / "datasets" / "other" / "latest" / "manifest.json").read_text())["run_id"]
    assert manifest["pretrain_datasets"] == {"other": other_run}
    # same config and inputs: the published run is reused, nothing is trained again; fine-tuning settings
    # belong to train-downstream and do not make pretraining run again either
    assert _cli("align", *_sets(root, raws["a"], tiny_bert, "a", "recformer.pretrain.datasets=[other]")) == run
    assert _cli("align", *_sets(root, raws["a"], tiny_bert, "a", "recformer.pretrain.datasets=[other]",
                                "recformer.finetune.epochs=9")) == run


def test_incremental_embeds_only_new_and_changed_items_without_training(pretrained, raws, tiny_bert, tmp_path) -> None:
    root, base = pretrained
    work = tmp_path / "artifacts"
    shutil.copytree(root, work, symlinks=True)  # a workspace with a run made with the same settings
    sets = _sets(work, raws["grown"], tiny_bert, "a", "recformer.pretrain.datasets=[other]")
    _cli("prepare", *sets)
    grown = _cli("align", *sets)
    manifest = json.loads((grown / "manifest.json").read_text())
    assert manifest["items_embedded"] == 7 and manifest["rows"] == 46 and "training" not in manifest
    assert manifest["incremental_base_run_id"] == base.name
    old, new = read_embeddings(base), read_embeddings(grown)
    unchanged = [row for row, item in enumerate(old.item_ids) if item != "3"]  # kept first, then re-embedded
    assert new.item_ids == [old.item_ids[row] for row in unchanged] + ["3"] + [str(i) for i in range(41, 47)]
    assert np.array_equal(new.vectors[:39], old.vectors[unchanged])
    assert not np.allclose(new.vectors[39], old.vectors[2])
    check_index(grown, 46, 32)


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_finetuning_both_stages_then_recommend(pretrained, raws, tiny_bert) -> None:
    root, embeddings_run = pretrained
    sets = _sets(root, raws["a"], tiny_bert, "a", "recformer.pretrain.datasets=[other]", "downstream.model.kind=recformer",
                 "recformer.finetune.epochs=2", "recformer.finetune.frozen_items_epochs=1", "recformer.finetune.patience=5")
    run = _cli("train-downstream", *sets)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["embeddings_run_id"] == embeddings_run.name and manifest["model"] == "recformer"
    assert manifest["zero_shot"] is False and manifest["encoder_start"] == str(embeddings_run / "encoder")
    assert manifest["mixed_precision"] == "no"
    # SASRec's architecture and training settings are not a recformer run's: changing them reuses it
    assert _cli("train-downstream", *sets, "--set", "downstream.train.lr=0.5", "--set", "downstream.model.layers=4") == run
    metrics = _metrics(run)
    assert [(h["stage"], h["epoch"]) for h in metrics["history"]] == [(1, 1), (1, 2), (2, 1)]
    history = read_history(run)
    assert [(h["stage"], h["epoch"], h["score"]) for h in history] == [
        (h["stage"], h["epoch"], h["score"]) for h in metrics["history"]]
    assert [h["best"] for h in history].count(True) == (metrics["best_epoch"] != "before fine-tuning")
    assert set(metrics) >= {"model", "popularity", "protocol"} and metrics["protocol"]["candidates"] == 40
    for split in ("valid", "test"):
        assert 0 <= metrics["model"][split]["ndcg@10"] <= metrics["model"][split]["recall@10"] <= 1
    if metrics["best_epoch"] != "before fine-tuning":  # the final evaluation is the chosen epoch's, on valid
        best = max(h["score"] for h in metrics["history"])
        assert metrics["model"]["valid"]["ndcg@10"] == pytest.approx(best, abs=1e-4)
    # `evaluate` reloads the run and gets the same numbers
    evaluated = CliRunner().invoke(app, ["evaluate", *sets])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["model"]["test"] == pytest.approx(metrics["model"]["test"])
    recommended = _cli("recommend", *sets, "--set", "recommend.k=5", "--user", "1", "--user", "7")
    rows = pq.read_table(recommended / "recommendations.parquet").to_pylist()
    assert [row["user_id"] for row in rows] == ["1", "7"] and all(len(row["item_ids"]) == 5 for row in rows)
    assert all(row["scores"] == sorted(row["scores"], reverse=True) for row in rows)
    searched = _cli("recommend", *sets, "--set", "recommend.k=5", "--set", "recommend.search=faiss", "--user", "1")
    assert len(pq.read_table(searched / "recommendations.parquet").to_pylist()[0]["item_ids"]) == 5


def test_zero_shot_on_a_dataset_the_encoder_never_saw(pretrained, raws, tiny_bert) -> None:
    """Embed and evaluate `fresh` (movies 81-140, none pretrained on) with the encoder of `a` + `other`: no training."""
    root, embeddings_run = pretrained
    raw = write_ml100k_slice(shared_dataset("ml-100k"), raws["a"].parent / "fresh", items=60, skip=80)
    encoder = embeddings_run / "encoder"
    sets = _sets(root, raw, encoder, "fresh", "recformer.pretrain.epochs=0", "downstream.model.kind=recformer",
                 "recformer.finetune.epochs=0", "recformer.finetune.frozen_items_epochs=0")
    _cli("prepare", *sets)
    aligned = _cli("align", *sets)
    manifest = json.loads((aligned / "manifest.json").read_text())
    assert "training" not in manifest and manifest["rows"] == 60
    run = _cli("train-downstream", *sets)
    manifest, metrics = json.loads((run / "manifest.json").read_text()), _metrics(run)
    assert manifest["zero_shot"] is True and metrics["history"] == [] and metrics["best_epoch"] == "before fine-tuning"
    assert metrics["popularity"]["test"]["ndcg@10"] > 0 and "ndcg@10" in metrics["model"]["test"]
    # the exported item vectors are the encoder's zero-shot table
    exported = read_embeddings(aligned).vectors
    table = load_file(str(run / "item_table.safetensors"))["table"].numpy()
    np.testing.assert_allclose(table, exported / np.linalg.norm(exported, axis=1, keepdims=True), atol=1e-5)


def test_unknown_pretraining_dataset_and_non_recformer_embeddings_are_one_line_errors(pretrained, raws, tiny_bert,
                                                                                     workspace) -> None:
    root, _ = pretrained
    missing = CliRunner().invoke(app, ["align", *_sets(root, raws["a"], tiny_bert, "a",
                                                        "recformer.pretrain.datasets=[nowhere]")])
    assert missing.exit_code == 2 and "recformer.pretrain.datasets: no dataset 'nowhere'" in missing.output
    assert len(missing.output.strip().splitlines()) == 1
    config = workspace("downstream.model.kind=recformer")
    write_embeddings_run(Path(config.workspace.root), Path(config.workspace.root) / "datasets" / "small" / "latest", 16)
    sets = [part for arg in [f"workspace.root={config.workspace.root}", "data.name=small",
                             "downstream.model.kind=recformer"] for part in ("--set", arg)]
    refused = CliRunner().invoke(app, ["train-downstream", *sets])
    assert refused.exit_code == 2 and "no Recformer encoder (method 'text_hash')" in refused.output


def test_a_checkpoint_start_is_identified_by_its_weights(pretrained, tiny_bert) -> None:
    from pipeline.config import load_config
    from pipeline.integrity import sha256_file
    from stages.recformer.checkpoint import model_identity

    _, run = pretrained
    of = lambda model: model_identity(load_config(None, [f"recformer.model={model}"]).recformer)
    assert of(tiny_bert) is None  # a plain Hugging Face folder: its path is in the hashed config already
    assert of(run / "encoder") == sha256_file(run / "encoder" / "recformer.safetensors")
