"""Full-ranking metrics for leave-one-out evaluation: one target per user, ranked against every item.

Ties count against the target: an item scoring exactly the target's score is ranked above it, so a
model that scores everything equal gets the worst rank, not an average one.
"""

from __future__ import annotations

import torch

PROTOCOL = ("leave-one-out; the target is ranked against all items (no sampled negatives); "
            "rank = number of other items scoring >= the target (ties count against it); "
            "Recall@K = share of users with rank < K; NDCG@K = 1/log2(rank+2) when rank < K; "
            "MRR = mean 1/(rank+1) over the full ranking")


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each user's target among all items.

    Args:
        scores: (B, N) item scores; masked items hold -inf.
        targets: (B,) column of each user's target in `scores`.
    Returns:
        (B,) int64: how many non-target items score higher than, or equal to, the target.
    """
    # Same as counting (scores > target) | (scores == target & not the target column): the target is
    # the one item that always ties with itself, so subtract it. One comparison pass, no scatter.
    target_scores = scores.gather(1, targets[:, None])  # (B, 1)
    ranks = (scores >= target_scores).sum(dim=1, dtype=torch.int32).long() - 1  # int32: a faster reduction
    return torch.where(torch.isnan(target_scores[:, 0]), scores.shape[1] - 1, ranks)  # NaN: the worst rank


def metric_sums(ranks: torch.Tensor, ks: list[int]) -> dict[str, float]:
    """Per-metric sums over a batch of ranks (divide by the user count at the end)."""
    ranks = ranks.to(torch.float64)
    sums = {"mrr": float((1.0 / (ranks + 1)).sum())}
    for k in ks:
        hit = ranks < k
        sums[f"recall@{k}"] = float(hit.sum())
        sums[f"ndcg@{k}"] = float(torch.where(hit, 1.0 / torch.log2(ranks + 2), 0.0).sum())
    return sums


def ranking_metrics(ranks: torch.Tensor, ks: list[int]) -> dict[str, float]:
    """Recall@K, NDCG@K and MRR averaged over users, from their targets' 0-based ranks."""
    if len(ranks) == 0:
        raise ValueError("no users to evaluate")
    return {name: value / len(ranks) for name, value in metric_sums(ranks, ks).items()}

