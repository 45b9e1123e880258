import math

import numpy as np
import pytest
import torch

from pipeline.config import EvaluateConfig
from pipeline.metrics import BlockedRanks, ranking_metrics, target_ranks
from stages.downstream.evaluate import evaluate_popularity, split_users
from stages.downstream.sequences import Sequences


def test_ties_count_against_the_target() -> None:
    scores = torch.tensor([[0.1, 0.5, 0.3, 0.5],
                           [0.1, 0.5, 0.3, 0.5],
                           [0.2, 0.2, 0.2, 0.2],
                           [0.9, 0.5, 0.3, 0.5]])
    targets = torch.tensor([1, 2, 0, 0])
    # row 0: item 3 ties with the target -> above it; row 2: everything ties -> worst rank
    assert target_ranks(scores, targets).tolist() == [1, 2, 3, 0]


def test_masked_items_never_rank_above_the_target() -> None:
    scores = torch.tensor([[float("-inf"), 0.5, float("-inf"), 0.1]])
    assert target_ranks(scores, torch.tensor([3])).tolist() == [1]


def test_a_nan_target_score_ranks_last() -> None:
    assert target_ranks(torch.tensor([[0.1, float("nan"), 0.3]]), torch.tensor([1])).tolist() == [2]


def test_recall_ndcg_mrr_by_hand() -> None:
    result = ranking_metrics(torch.tensor([0, 1, 2, 10]), [1, 3])
    assert result["recall@1"] == pytest.approx(1 / 4)
    assert result["recall@3"] == pytest.approx(3 / 4)
    assert result["ndcg@1"] == pytest.approx(1 / 4)
    assert result["ndcg@3"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(4)) / 4)
    assert result["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 11) / 4)


def _hand_sequences() -> Sequences:
    # user a: 1 2 | valid 3 | test 4;  user b: 1 | valid 2 | test 3;  user c: 1 2 | test 1 (a repeat)
    return Sequences(item_ids=["i1", "i2", "i3", "i4"], user_ids=["a", "b", "c"],
                     offsets=np.array([0, 4, 7, 10]), items=np.array([1, 2, 3, 4, 1, 2, 3, 1, 2, 1]),
                     n_train=np.array([2, 1, 2]), valid=np.array([3, 2, 0]), test=np.array([4, 3, 1]))


@pytest.mark.parametrize(("mask", "valid_ranks", "test_ranks"), [
    (False, [3, 1], [3, 3, 0]),  # train counts: i1 3, i2 2, i3 0, i4 0
    (True, [1, 0], [0, 1, 0]),   # history masked, but c's repeated target stays rankable
])
def test_popularity_with_and_without_history_masking(mask: bool, valid_ranks: list[int], test_ranks: list[int]) -> None:
    seqs = _hand_sequences()
    assert seqs.train_counts().tolist() == [3, 2, 0, 0]
    assert split_users(seqs, "valid").tolist() == [0, 1]
    config = EvaluateConfig(ks=[1], mask_history=mask, batch_size=2)
    valid = evaluate_popularity(seqs, "valid", config)
    test = evaluate_popularity(seqs, "test", config)
    assert valid["mrr"] == pytest.approx(np.mean([1 / (r + 1) for r in valid_ranks]))
    assert test["mrr"] == pytest.approx(np.mean([1 / (r + 1) for r in test_ranks]))
    assert test["recall@1"] == pytest.approx(np.mean([r < 1 for r in test_ranks]))


def _plain_ranks(users: torch.Tensor, items: torch.Tensor, targets: torch.Tensor,
                 masked: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """The reference: the whole (B, N) score matrix, history set to -inf, the target restored, then counted."""
    scores = users @ items.T
    if masked is not None:
        kept = scores.gather(1, targets[:, None])
        scores[masked] = float("-inf")
        scores.scatter_(1, targets[:, None], kept)
    return target_ranks(scores, targets)


@pytest.mark.parametrize(("num_items", "dim", "batch", "block"), [(1000, 8, 50, 64), (777, 3, 300, 128), (130, 64, 7, 2048)])
def test_blocked_ranks_equal_the_plain_ranks(num_items: int, dim: int, batch: int, block: int) -> None:
    generator = torch.Generator().manual_seed(num_items)
    # Small integer-valued vectors: every product is exact, so the plain and blocked paths see the same
    # scores whatever kernel computes them, and ties are frequent.
    items = torch.randint(-2, 3, (num_items, dim), generator=generator).float()
    users = torch.randint(-2, 3, (batch, dim), generator=generator).float()
    items[5] = items[7]  # duplicate items tie
    users[3, 0] = float("nan")  # a NaN target ranks last
    targets = torch.randint(0, num_items, (batch,), generator=generator)
    targets[0] = 5
    rows = torch.randint(0, batch, (10 * batch,), generator=generator)
    columns = torch.randint(0, num_items, (10 * batch,), generator=generator)
    rows[:5], columns[:5] = torch.arange(5), targets[:5]  # a repeated target stays rankable
    ranker = BlockedRanks(items, block)
    for masked in (None, (rows, columns)):
        assert torch.equal(ranker(users, targets, masked), _plain_ranks(users, items, targets, masked))
    assert ranker(users, targets)[3] == num_items - 1


def test_blocked_ranks_tie_duplicate_float_items_with_the_target() -> None:
    # Real-valued scores: the target's score must be bitwise the score its duplicates get in their tiles.
    generator = torch.Generator().manual_seed(0)
    items = torch.randn(1024, 64, generator=generator)  # whole blocks: no padding in the reference
    items[512:] = items[:512]
    users = torch.randn(40, 64, generator=generator)
    targets = torch.randint(0, 1024, (40,), generator=generator)
    ranks = BlockedRanks(items, 256)(users, targets)
    scores = torch.cat([users @ block.T for block in items.split(256)], dim=1)  # the same tile shapes
    assert torch.equal(ranks, target_ranks(scores, targets))
    assert (ranks >= 1).all()  # each target's duplicate scores >= the target
