"""Stage two's model kinds come from one table: an unknown kind is refused by name, and a new kind is one
model file plus one table line (here the model is defined in the test and the line is monkeypatched in)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline import api
from pipeline.errors import BadInput
from stages.downstream import kinds, train

KNOWN = "sasrec, gru4rec, said_light, recformer"


class RunningMean(nn.Module):
    """A toy sequence model: the state at t is a linear map of the mean of the item vectors up to t."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.out = nn.Linear(hidden_size, hidden_size)

    def forward(self, items: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """(B, L, H) item vectors, (B, L) padding mask -> (B, L, H) states."""
        kept = (~padding).unsqueeze(-1).float()
        totals = (items * kept).cumsum(dim=1)
        return self.out(totals / kept.cumsum(dim=1).clamp(min=1))


def test_an_unknown_kind_is_refused_with_the_known_ones() -> None:
    with pytest.raises(BadInput, match=rf"no model kind 'transformer_xl' \(known: {KNOWN}\)"):
        kinds.kind_of("transformer_xl")


def test_an_unknown_kind_stops_a_run_before_anything_is_trained(workspace) -> None:
    config = workspace("downstream.embeddings=null", "downstream.model.kind=transformer_xl")
    with pytest.raises(BadInput, match=rf"known: {KNOWN}"):
        train.run(config)
    assert not (Path(config.workspace.root) / "downstream").exists()
    with pytest.raises(BadInput, match=rf"known: {KNOWN}"):  # the main job: before prepare, before alignment
        api.run(config)
    assert sorted(p.name for p in Path(config.workspace.root).iterdir()) == ["datasets"]


def test_a_kind_added_by_one_table_line_trains_evaluates_and_publishes(workspace, monkeypatch) -> None:
    monkeypatch.setitem(kinds.KINDS, "running_mean",
                        lambda: kinds.SequenceKind(lambda c: RunningMean(c.hidden_size)))
    config = workspace("downstream.embeddings=null", "downstream.train.epochs=2", "downstream.model.kind=running_mean")
    result = train.run(config)
    manifest = result.manifest
    assert (manifest["model"], manifest["epochs"]) == ("running_mean", 2)
    assert 0 <= manifest["metrics"]["test"]["ndcg@10"] <= 1
    sasrec = workspace("downstream.embeddings=null", "downstream.train.epochs=2")
    assert result.run_dir.name != train.run_id(sasrec, manifest["dataset_run_id"], None)
    assert train.run(config).reused  # its run id is as stable as any kind's
    assert kinds.load_trained(result.run_dir).seqs.num_items > 0  # and the run loads back for `recommend`
