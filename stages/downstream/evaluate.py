"""Leave-one-out evaluation against every item, for the model and for the popularity baseline.

Valid targets are predicted from the train items; test targets from train + the valid item. Users are
scored in batches: one matrix product, then rank counting (`pipeline.metrics.target_ranks`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from pipeline import metrics
from pipeline.config import EvaluateConfig
from pipeline.errors import BadInput
from stages.downstream.recommender import Recommender
from stages.downstream.sequences import Sequences, history_pairs, padded

ScoreFn = Callable[[np.ndarray, np.ndarray], torch.Tensor]  # (users, history ends) -> (B, N) scores


def split_users(seqs: Sequences, split: str) -> np.ndarray:
    """Users with a target in `split` and at least one item before it."""
    target = seqs.valid if split == "valid" else seqs.test
    return np.flatnonzero((target > 0) & (seqs.split_end(split) > seqs.starts))


def _ranks(score: ScoreFn, seqs: Sequences, split: str, mask_history: bool, batch_size: int) -> torch.Tensor:
    users = split_users(seqs, split)
    if len(users) == 0:
        raise BadInput(f"dataset has no users with a {split} interaction and a history before it; nothing to evaluate")
    targets_all = (seqs.valid if split == "valid" else seqs.test)[users] - 1
    ends_all = seqs.split_end(split)[users]
    ranks = []
    for start in range(0, len(users), batch_size):
        batch, ends = users[start:start + batch_size], ends_all[start:start + batch_size]
        targets = torch.from_numpy(targets_all[start:start + batch_size])
        scores = score(batch, ends).float()  # (B, N)
        if mask_history:
            kept = scores.gather(1, targets[:, None])
            rows, items = history_pairs(seqs, batch, ends)
            scores[torch.from_numpy(rows), torch.from_numpy(items - 1)] = float("-inf")
            scores.scatter_(1, targets[:, None], kept)  # a repeat of a history item stays rankable
        ranks.append(metrics.target_ranks(scores, targets))
    return torch.cat(ranks)


@torch.no_grad()
def evaluate_model(model: Recommender, seqs: Sequences, split: str, config: EvaluateConfig, max_length: int) -> dict[str, float]:
    """Recall@K, NDCG@K and MRR of `model` on `split` ("valid" or "test")."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    table = model.items.all_items()  # (N, H), computed once per evaluation

    def score(users: np.ndarray, ends: np.ndarray) -> torch.Tensor:
        history = torch.from_numpy(padded(seqs, users, ends, max_length)).to(device)
        return model.scores(history, table).cpu()

    result = evaluate_scores(score, seqs, split, config)
    model.train(was_training)
    return result


def evaluate_scores(score: ScoreFn, seqs: Sequences, split: str, config: EvaluateConfig) -> dict[str, float]:
    """Recall@K, NDCG@K and MRR of any scorer of `split_users(seqs, split)`, in batches of that order."""
    return metrics.ranking_metrics(_ranks(score, seqs, split, config.mask_history, config.batch_size), config.ks)


def evaluate_popularity(seqs: Sequences, split: str, config: EvaluateConfig) -> dict[str, float]:
    """The same metrics for ranking every item by its train interaction count (ties against the target)."""
    counts = torch.from_numpy(seqs.train_counts()).float()

    def score(users: np.ndarray, ends: np.ndarray) -> torch.Tensor:
        return counts.expand(len(users), -1).clone()

    return evaluate_scores(score, seqs, split, config)


def protocol(config: EvaluateConfig, seqs: Sequences) -> dict[str, object]:
    """How the numbers were made, written into metrics.json beside them."""
    return {"description": metrics.PROTOCOL, "ks": config.ks, "mask_history": config.mask_history,
            "candidates": seqs.num_items, "valid_history": "train items",
            "test_history": "train items + the valid item",
            "valid_users": int(len(split_users(seqs, "valid"))), "test_users": int(len(split_users(seqs, "test"))),
            "popularity": "items ranked by train interaction count"}


def evaluate_all(model: Recommender, seqs: Sequences, config: EvaluateConfig, max_length: int) -> dict[str, object]:
    """metrics.json's content: model and popularity on valid and test, with the protocol."""
    return {"model": {split: evaluate_model(model, seqs, split, config, max_length) for split in ("valid", "test")},
            "popularity": {split: evaluate_popularity(seqs, split, config) for split in ("valid", "test")},
            "protocol": protocol(config, seqs)}
