"""SAID partitioned by item: each process trains only its shards' rows, only the MLP is synchronised, and the
result depends on the number of shards, not of processes; a kill mid-epoch resumes per process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from pipeline.contracts.embeddings import read_embeddings
from pipeline.contracts.history import read_history
from pipeline.errors import BadInput
from stages.align import dist, said, said_items, stage
from stages.align.item_shards import owned
from stages.align.said import TrainPlan, batches_of, step_batches, steps_per_epoch
from stages.align.said_items import read_item_table
from stages.align.tokens import Tokens
from tests.align_support import align_config, align_sets, launch, prepared, write_ml100k_slice
from tests.support import shared_dataset

MLP = ["mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"]


def _plan(batch_size: int, grad_accum: int = 1) -> TrainPlan:
    return TrainPlan(lr=1e-3, item_lr=1e-2, weight_decay=0.0, schedule="constant", warmup_steps=0, epochs=1,
                     max_steps=None, grad_accum=grad_accum, batch_size=batch_size, length_pool=2, seed=3,
                     checkpoint_every=0)


@pytest.mark.parametrize("processes", [1, 2, 4])
def test_every_item_is_in_exactly_one_batch_an_epoch_and_steps_do_not_depend_on_processes(processes: int) -> None:
    lengths = np.random.default_rng(0).integers(1, 30, 103)
    tokens = Tokens(np.zeros(int(lengths.sum()), np.int64), np.concatenate([[0], np.cumsum(lengths)]), 0)
    plan = _plan(batch_size=5, grad_accum=2)
    steps, seen = [], []
    for rank in range(processes):
        shards = owned(103, 4, rank, processes)
        per_shard = batches_of(shards, tokens, plan, epoch=1)
        assert all(shards.rows.start <= row < shards.rows.stop for batches in per_shard for b in batches for row in b)
        per_epoch = steps_per_epoch(shards, tokens, plan)
        steps.append(per_epoch)
        seen += [row for step in range(per_epoch) for b in step_batches(per_shard, step, 2) for row in b]
    assert sorted(seen) == list(range(103))  # once each, whatever the number of processes
    assert len(set(steps)) == 1 and steps[0] == 3  # 26 rows a shard, pools of 10 cut by 5: 6 batches, 2 a step
    one = [b.tolist() for batches in batches_of(owned(103, 4, 0, 1), tokens, plan, 1) for b in batches]
    two = [b.tolist() for rank in (0, 1) for batches in batches_of(owned(103, 4, rank, 2), tokens, plan, 1)
           for b in batches]
    assert one == two


def test_shards_that_cannot_be_dealt_out_evenly_name_the_key() -> None:
    with pytest.raises(BadInput, match=r"align\.said\.shards: 3 shards .* 2 processes; set it to a multiple of 2"):
        owned(40, 3, 0, 2)


def test_two_processes_train_disjoint_shards_resume_after_a_kill_and_match_one_process(
        tmp_path: Path, tiny_llama: Path) -> None:
    """40 items in 2 shards of 20, batches of 8: 3 steps an epoch, 2 epochs, a checkpoint every 2 steps; the
    launched run is killed while its second checkpoint (step 4, mid-epoch 2) drops the first."""
    raw = write_ml100k_slice(shared_dataset("ml-100k"), tmp_path / "raw", items=40)
    overrides = ["align.said.epochs=2", "align.checkpoint_every=2", "align.evidence.items=0", "align.said.shards=2"]
    config = align_config(tmp_path / "one", raw, tiny_llama, *overrides)
    prepared(config)
    one = stage.run(config)
    assert one.manifest["training"]["synchronised"] == {"parameters": [], "allreduce_bytes_per_step": 0}

    prepared(align_config(tmp_path / "two", raw, tiny_llama, *overrides))
    sets = align_sets(tmp_path / "two", raw, tiny_llama, *overrides)
    killed = launch("align", sets, env={"SEQREC_CRASH_AT": "checkpoint.discard@1"})
    assert killed.returncode != 0 and "crash point checkpoint.discard: killed" in killed.stderr
    checkpoint = next((tmp_path / "two" / "embeddings" / "ml-100k").glob(".partial-*")) / "checkpoints" / "step-00000004"
    assert (checkpoint / "COMPLETE").is_file()
    for rank in (0, 1):  # each process saved its own 20 rows of the item table, nobody the whole table
        assert load_file(str(checkpoint / f"model-0-p{rank}.safetensors"))["weight"].shape == (20, 64)

    resumed = launch("align", sets)
    assert resumed.returncode == 0, resumed.stderr[-8000:]
    run_dir = Path(resumed.stdout.strip().splitlines()[-1])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    training = manifest["training"]
    assert manifest["processes"] == 2 and training["shards"] == 2 and training["resumed_from_step"] == 4
    assert training["steps"] == 6 and training["last_loss"] < training["first_loss"]
    mlp_bytes = sum(v.numel() * 4 for k, v in load_file(str(run_dir / "projector.safetensors")).items()
                    if k.startswith("mlp."))
    assert training["synchronised"] == {"parameters": MLP, "allreduce_bytes_per_step": mlp_bytes}  # no item row
    # each process wrote the 20 rows it trained as its own part of the item table; none gathered the table
    parts = sorted((run_dir / said_items.ITEMS_DIR).iterdir())
    assert [p.name for p in parts] == ["part-00001.safetensors", "part-00002.safetensors"]
    assert [load_file(str(p))["weight"].shape for p in parts] == [(20, 64), (20, 64)]
    assert not hasattr(said, "gather_items") and not hasattr(dist, "gather_rows")
    np.testing.assert_allclose(read_item_table(run_dir), read_item_table(one.run_dir), atol=1e-5)
    history = read_history(run_dir)
    assert [sum(h["items"] for h in history if h["epoch"] == epoch) for epoch in (1, 2)] == [40, 40]
    assert run_dir.name == one.run_dir.name  # same shards, same run
    np.testing.assert_allclose(read_embeddings(run_dir).vectors, read_embeddings(one.run_dir).vectors, atol=1e-5)
