"""Recformer wired into the commands: align (pretrain + export, incremental, zero-shot), train-downstream, recommend.

Tiny 2-layer BERT with the real MiniLM tokenizer (the `tiny_bert` fixture) on slices of ml-100k.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from align_support import write_ml100k_slice
from conftest import shared_dataset
from pipeline.cli import app
from pipeline.embeddings import check_index, read_embeddings

TINY = ["recformer.max_items=8", "recformer.max_tokens=64", "recformer.max_attribute_tokens=8",
        "recformer.pretrain.learning_rate=1e-3", "recformer.pretrain.warmup_steps=0",
        "recformer.pretrain.batch_size=16", "recformer.pretrain.max_steps=30",
        "recformer.encode.batch_size=16", "recformer.encode.chunk_items=25",
        "recformer.finetune.batch_size=32", "recformer.finetune.learning_rate=1e-3",
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
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "embeddings.parquet", "encoder", "index.faiss",
                                                    "manifest.json"]
    items = pq.read_table(root / "datasets" / "a" / "latest" / "items.parquet").to_pylist()
    embeddings = read_embeddings(run)
    assert embeddings.item_ids == [row["item_id"] for row in items] and embeddings.vectors.shape == (40, 32)
    assert embeddings.text_sha256 == [hashlib.sha256(row["text"].encode()).hexdigest() for row in items]
    assert embeddings.metadata["method"] == "recformer" and embeddings.metadata["model"] == str(tiny_bert)
    check_index(run, 40, 32)
    training = manifest["training"]
    assert training["steps"] == 30 and training["corpus_items"] == 40 + 80
    assert training["last_loss"] < training["first_loss"] and training["last_mlm"] < training["first_mlm"]
    other_run = json.loads((root / "datasets" / "other" / "latest" / "manifest.json").read_text())["run_id"]
    assert manifest["pretrain_datasets"] == {"other": other_run}
    # same config and inputs: reused; another pretraining dataset list: another run id
    assert _cli("align", *_sets(root, raws["a"], tiny_bert, "a", "recformer.pretrain.datasets=[other]")) == run


def test_incremental_embeds_only_new_and_changed_items_without_training(pretrained, raws, tiny_bert, tmp_path) -> None:
    root, base = pretrained
    work = tmp_path / "artifacts"
    (work / "datasets").mkdir(parents=True)
    (work / "embeddings" / "a").mkdir(parents=True)
    (work / "embeddings" / "a" / "latest").symlink_to(base)
    sets = _sets(work, raws["grown"], tiny_bert, "a", "recformer.pretrain.datasets=[]")
    _cli("prepare", *sets)
    grown = _cli("align", *sets, "--incremental")
    manifest = json.loads((grown / "manifest.json").read_text())
    assert manifest["items_embedded"] == 7 and manifest["rows"] == 46 and "training" not in manifest
    old, new = read_embeddings(base), read_embeddings(grown)
    assert new.item_ids[:40] == old.item_ids and new.item_ids[40:] == [str(i) for i in range(41, 47)]
    unchanged = [row for row, item in enumerate(old.item_ids) if item != "3"]
    assert np.array_equal(new.vectors[unchanged], old.vectors[unchanged])
    assert not np.allclose(new.vectors[2], old.vectors[2])
    check_index(grown, 46, 32)
