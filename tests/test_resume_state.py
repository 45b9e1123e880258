"""Checkpoint state without pickles: exact round trips, and a resume that cannot restore everything stops."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import ResumeFailed
from pipeline.store import Output
from stages import checkpoint_state, resume
from stages.downstream import train
from tests.support import SMALL, TINY_MODEL


def test_optimizer_scheduler_and_generators_round_trip_exactly(tmp_path: Path) -> None:
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, betas=(0.8, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    for _ in range(3):
        model(torch.randn(2, 4)).sum().backward()
        optimizer.step()
        scheduler.step()
    saved = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": checkpoint_state.rng_state()}
    checkpoint_state.write(tmp_path, "state", saved)
    draws = (random.random(), np.random.rand(), torch.rand(2))
    back = checkpoint_state.read(tmp_path, "state")
    checkpoint_state.set_rng_state(back["rng"])
    assert (random.random(), np.random.rand()) == draws[:2] and torch.equal(torch.rand(2), draws[2])
    assert back["optimizer"]["param_groups"] == saved["optimizer"]["param_groups"]  # betas come back as a tuple
    for key, state in saved["optimizer"]["state"].items():
        assert all(torch.equal(state[name], back["optimizer"]["state"][key][name]) for name in state)
    assert back["scheduler"] == saved["scheduler"]
    assert not list(tmp_path.glob("*.pkl"))


def test_only_plain_data_can_be_stored(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="cannot store a object in a checkpoint"):
        checkpoint_state.write(tmp_path, "bad", {"x": object()})


def killed_after_one_epoch(workspace, monkeypatch) -> tuple[object, Path]:
    config = workspace("downstream.embeddings=null", "downstream.train.epochs=2")
    save = resume.save

    def save_then_die(*args, **kwargs) -> None:
        save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(resume, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train.run(config)
    monkeypatch.undo()
    partial = next(Output(Path(config.workspace.root) / "downstream" / SMALL).path.glob(".partial-*"))
    return config, partial / "checkpoints" / "epoch-00000001"


@pytest.mark.parametrize("damage", ["rng-0.json", "optimizer-0.safetensors", "model-0.safetensors", "state.json"])
def test_a_resume_missing_a_piece_stops_loudly(workspace, monkeypatch, damage: str) -> None:
    config, checkpoint = killed_after_one_epoch(workspace, monkeypatch)
    if damage == "state.json":  # a checkpoint of the old format, whose state was pickled
        state = json.loads((checkpoint / damage).read_text())
        (checkpoint / damage).write_text(json.dumps(state["loop"]))
    else:
        (checkpoint / damage).unlink()
    with pytest.raises(ResumeFailed, match=f"cannot resume from {checkpoint}: .*; stopping rather than"):
        train.run(config)


def test_the_cli_says_so_in_one_line_and_exits_1(workspace, monkeypatch) -> None:
    config, checkpoint = killed_after_one_epoch(workspace, monkeypatch)
    (checkpoint / "rng-0.safetensors").write_bytes(b"\x00" * 7)
    sets = [f"workspace.root={config.workspace.root}", f"data.name={SMALL}", "downstream.embeddings=null",
            "downstream.train.epochs=2", *TINY_MODEL]
    result = CliRunner().invoke(app, ["train-downstream", *[p for s in sets for p in ("--set", s)]])
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith(f"error: cannot resume from {checkpoint}: ")
