"""Leave-one-out evaluation against every item, for the model and for the popularity baseline.

Valid targets are predicted from the train items; test targets from train + the valid item. Users are
encoded in batches (`UserFn`: one vector per user), then ranked against every item by one blocked matrix
product with rank counting per tile (`pipeline.metrics.BlockedRanks`), so the (B, N) score matrix is
never materialised.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import gather_object

from pipeline import events, metrics
from pipeline.config import EvaluateConfig
from pipeline.contracts.dataset import interactions_path
from pipeline.errors import BadInput
from stages.accelerator import process_state
from stages.downstream.recommender import Recommender
from stages.downstream.sequences import Sequences, history_pairs, padded

UserFn = Callable[[np.ndarray, np.ndarray], torch.Tensor]  # (users, history ends) -> (B, H) user vectors

# Items scored per tile. Measured on a 2-core AVX-512 EPYC (H = 64, 100k items, batches of 512-2048
# users): 2048 was the fastest with 1024-user batches; 256-512 pay per-call overheads, 4096+ spill the
# (B, block) tile out of L2. A multiple of 64 keeps every tile on the BLAS's full-tile kernel.
ITEM_BLOCK = 2048


def split_users(seqs: Sequences, split: str) -> np.ndarray:
    """Users with a target in `split` and at least one item before it."""
    target = seqs.valid if split == "valid" else seqs.test
    return np.flatnonzero((target > 0) & (seqs.split_end(split) > seqs.starts))


def check_splits(seqs: Sequences, dataset_dir: Path) -> None:
    """Fail before training when there is nothing to train on, select by, or test on."""
    path = interactions_path(dataset_dir)
    if not (seqs.n_train >= 2).any():
        raise BadInput(f"{path}: no user has two train interactions; nothing to train on")
    for split in ("valid", "test"):
        if len(split_users(seqs, split)) == 0:
            raise BadInput(f"{path}: no users with a {split} interaction and a history before it")


def _ranks(encode: UserFn, items: torch.Tensor, seqs: Sequences, split: str, mask_history: bool, batch_size: int) -> torch.Tensor:
    """Ranks of every evaluated user's target among all items, scored as `encode(users) @ items.T`.

    Users go in order of history length, so a batch of short histories is not padded to a long one. Under
    `accelerate launch` each process ranks every P-th of them (similar lengths for all) and the ranks are
    gathered: every process gets all of them, in no particular order (the metrics are means).
    """
    users = split_users(seqs, split)
    users = users[np.argsort(seqs.split_end(split)[users] - seqs.starts[users], kind="stable")]
    if len(users) == 0:
        raise BadInput(f"dataset has no users with a {split} interaction and a history before it; nothing to evaluate")
    state = process_state()
    users = users[state.process_index::state.num_processes]
    targets_all = (seqs.valid if split == "valid" else seqs.test)[users] - 1
    ends_all = seqs.split_end(split)[users]
    rank = metrics.BlockedRanks(items, ITEM_BLOCK)
    ranks = []
    with events.Tracker(f"evaluate {split}", len(users), "users") as tracker:
        for start in range(0, len(users), batch_size):
            batch, ends = users[start:start + batch_size], ends_all[start:start + batch_size]
            targets = torch.from_numpy(targets_all[start:start + batch_size]).to(items.device)
            masked = None
            if mask_history:
                rows, columns = history_pairs(seqs, batch, ends)
                masked = (torch.from_numpy(rows).to(items.device), torch.from_numpy(columns - 1).to(items.device))
            ranks.append(rank(encode(batch, ends), targets, masked).cpu())
            tracker.advance(len(batch))
    mine = torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)
    return mine if state.num_processes == 1 else torch.cat(gather_object([mine]))


@torch.no_grad()
def evaluate_model(model: Recommender, seqs: Sequences, split: str, config: EvaluateConfig, max_length: int) -> dict[str, float]:
    """Recall@K, NDCG@K and MRR of `model` on `split` ("valid" or "test")."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    table = model.items.all_items()  # (N, H), computed once per evaluation

    def encode(users: np.ndarray, ends: np.ndarray) -> torch.Tensor:
        history = torch.from_numpy(padded(seqs, users, ends, max_length)).to(device)
        return model.user_vectors(history)

    result = evaluate_scores(encode, table, seqs, split, config)
    model.train(was_training)
    return result


def evaluate_scores(encode: UserFn, items: torch.Tensor, seqs: Sequences, split: str,
                    config: EvaluateConfig) -> dict[str, float]:
    """Recall@K, NDCG@K and MRR of any model scoring `encode(users) @ items.T` for the users of `split_users`."""
    return metrics.ranking_metrics(_ranks(encode, items, seqs, split, config.mask_history, config.batch_size), config.ks)


def evaluate_popularity(seqs: Sequences, split: str, config: EvaluateConfig) -> dict[str, float]:
    """The same metrics for ranking every item by its train interaction count (ties against the target)."""
    # A product with one dimension: every user's vector is 1, item j's is its count (exact in float32).
    counts = torch.from_numpy(seqs.train_counts()).float()[:, None]  # (N, 1)

    def encode(users: np.ndarray, ends: np.ndarray) -> torch.Tensor:
        return torch.ones(len(users), 1)

    return evaluate_scores(encode, counts, seqs, split, config)


def protocol(config: EvaluateConfig, seqs: Sequences) -> dict[str, object]:
    """How the numbers were made, written into metrics.json beside them."""
    return {"description": metrics.PROTOCOL, "ks": config.ks, "mask_history": config.mask_history,
            "candidates": seqs.num_items, "valid_history": "train items",
            "test_history": "train items + the valid item",
            "valid_users": len(split_users(seqs, "valid")), "test_users": len(split_users(seqs, "test")),
            "popularity": "items ranked by train interaction count"}


def evaluate_all(model: Recommender, seqs: Sequences, config: EvaluateConfig, max_length: int,
                 valid: dict[str, float] | None = None) -> dict[str, object]:
    """metrics.json's content: model and popularity on valid and test, with the protocol.

    `valid`: the model's valid metrics when training already scored these very weights (the chosen epoch).
    """
    model_valid = valid if valid is not None else evaluate_model(model, seqs, "valid", config, max_length)
    return {"model": {"valid": model_valid, "test": evaluate_model(model, seqs, "test", config, max_length)},
            "popularity": {split: evaluate_popularity(seqs, split, config) for split in ("valid", "test")},
            "protocol": protocol(config, seqs)}


def summary(metrics: dict[str, Any], k: int) -> str:
    """One line for people at the end of training: the model's test NDCG@k and Recall@k beside
    popularity's, and the epoch validation chose."""
    model, popularity = metrics["model"]["test"], metrics["popularity"]["test"]
    return (f"test NDCG@{k} {model[f'ndcg@{k}']:.4f}, Recall@{k} {model[f'recall@{k}']:.4f} "
            f"(popularity {popularity[f'ndcg@{k}']:.4f}, {popularity[f'recall@{k}']:.4f}); "
            f"best epoch {metrics['best_epoch']}")
