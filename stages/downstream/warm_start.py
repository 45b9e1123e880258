"""Warm start (`downstream.train.init: previous`): begin from yesterday's model instead of a fresh one.

The source is the newest published run with the same model settings and the same kind of item side
(ID-only, or embeddings of the same method and width), trained on another dataset run: a run made from
the same dataset run is a re-run of this one, never its source, so re-running stays a no-op.
Per-item rows (ID vectors, unfrozen embeddings) are matched by item id; new items keep their fresh start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from pipeline.config import PipelineConfig
from pipeline.contracts import downstream as downstream_run
from pipeline.contracts.embeddings import Embeddings
from pipeline.errors import BadInput
from pipeline.store import workspace_output
from pipeline.workspace import Published, newest

# State-dict entries with one row per item id (row 0 = padding), the item side's (each member's, in a model of
# several): matched by item id, not copied whole.
ITEM_ROWS = ("ids.weight", "table")


def has_item_rows(name: str) -> bool:
    return name.startswith("items.") and name.endswith(tuple(f".{rows}" for rows in ITEM_ROWS))


@dataclass(frozen=True)
class WarmStart:
    """The run to start from, and how to read its weights and the item ids their rows belong to (row k + 1 =
    item_ids[k]). Read only when training starts: run ids and `status` need the run id alone."""

    run_id: str
    read: Callable[[], tuple[dict[str, torch.Tensor], list[str]]]


def find_source(config: PipelineConfig, dataset_run_id: str, embeddings: Embeddings | None) -> Published | None:
    """The run to warm-start from, or None (no compatible run yet: a fresh start); its kind loads it."""
    wanted_model = config.downstream.model.model_dump(mode="json")
    method = None if embeddings is None else embeddings.manifest.get("method")
    dim = None if embeddings is None else embeddings.dim

    def compatible(run: Published) -> bool:
        made = run.manifest
        if made.get("kind") != "downstream" or made.get("dataset_run_id") == dataset_run_id:
            return False
        if (made.get("embeddings_method"), made.get("embedding_dim")) != (method, dim):
            return False
        try:
            saved = downstream_run.read_saved_config(run.run_dir)
        except (BadInput, OSError):
            return False
        return saved.get("model") == wanted_model

    return newest(workspace_output(config, "downstream"), compatible)


def apply(model: torch.nn.Module, source: WarmStart, item_ids: list[str]) -> dict[str, int | str]:
    """Load `source` into a freshly built `model` over `item_ids`; the facts the manifest records."""
    saved_state, saved_ids = source.read()
    row_of = {item: row + 1 for row, item in enumerate(saved_ids)}
    rows = torch.tensor([row_of.get(item, 0) for item in item_ids], dtype=torch.long)
    known = rows > 0
    state = model.state_dict()
    with torch.no_grad():
        for name, tensor in state.items():
            saved = saved_state.get(name)
            if saved is None:
                continue
            if has_item_rows(name):
                tensor[1:][known] = saved[rows[known]].to(tensor.dtype)
            elif saved.shape == tensor.shape:
                tensor.copy_(saved)
            else:
                raise BadInput(f"warm start from run {source.run_id}: {name} has shape {tuple(saved.shape)}, "
                               f"the model wants {tuple(tensor.shape)}; set downstream.train.init=scratch")
    model.load_state_dict(state)
    return {"init_run_id": source.run_id, "items_matched": int(known.sum()), "items_new": int((~known).sum())}

