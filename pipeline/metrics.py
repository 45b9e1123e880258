"""Full-ranking metrics for leave-one-out evaluation: one target per user, ranked against every item.

Ties count against the target: an item scoring exactly the target's score is ranked above it, so a
model that scores everything equal gets the worst rank, not an average one.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

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


class BlockedRanks:
    """`target_ranks` of `users @ items.T` without ever holding the (B, N) score matrix.

    Full-ranking evaluation is a matrix product with a small inner dimension (H ~ 64) followed by one
    comparison per score, so it is bound by memory traffic, not arithmetic, when the (B, N) product is
    written out and read back. Here items are scored in blocks of `block` columns into a preallocated
    (B, block) tile that stays in cache, and each tile is compared with the targets' scores and counted
    before the next one overwrites it.

    On CPU the users are split across `torch.get_num_threads()` Python threads, each running its share
    single-threaded: a tile is small, and an OpenMP barrier after every small op made throughput
    collapse (3-4x slower, measured) whenever the shared cores were also busy with other processes.

    Exactness: a float product's rounding depends on the kernel the BLAS picks for a shape, so the
    target's score must come from a product of the same shape as the tiles it is compared with (an item
    tying with the target must tie bitwise). The item table is therefore padded with zero rows to whole
    blocks, and the targets' scores are read off a tile of the same shape whose columns are the
    targets' own vectors; the padding columns are never counted.
    """

    def __init__(self, items: torch.Tensor, block: int) -> None:
        """Args:
            items: (N, H) item vectors; column j of the scores is `items[j]`.
            block: items scored per tile (a multiple of 64 keeps every tile on the same kernel path).
        """
        self.num_items, self.block = items.shape[0], block
        padded = -(-self.num_items // block) * block
        self.items = torch.nn.functional.pad(items, (0, 0, 0, padded - self.num_items))  # (N', H), zero rows
        self.workers = torch.get_num_threads() if items.device.type == "cpu" else 1

    def _target_scores(self, users: torch.Tensor, targets: torch.Tensor, tile: torch.Tensor) -> torch.Tensor:
        """(B,) each target's score, from tiles of the same shape as the item tiles (see the class docstring)."""
        scores = torch.empty(len(targets), dtype=tile.dtype, device=tile.device)
        for start in range(0, len(targets), self.block):
            chunk = targets[start:start + self.block]
            columns = torch.zeros(self.block, dtype=torch.long, device=targets.device)
            columns[:len(chunk)] = chunk
            torch.mm(users, self.items[columns].T, out=tile)
            scores[start:start + len(chunk)] = tile[start:start + len(chunk)].diagonal()
        return scores

    def _counts(self, users: torch.Tensor, targets: torch.Tensor,
                masked: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) int32 items scoring >= each target (itself included), and (B,) the targets' scores."""
        tile = self.items.new_empty(len(users), self.block)  # (B, block), reused by every product
        hits = torch.empty(tile.shape, dtype=torch.bool, device=tile.device)
        target_scores = self._target_scores(users, targets, tile)[:, None]  # (B, 1)
        if masked is not None:
            rows, columns = masked
            order = torch.argsort(columns)
            rows, columns = rows[order], columns[order]
            bounds = torch.searchsorted(columns, torch.arange(0, len(self.items) + 1, self.block, device=columns.device)).tolist()
        counts = torch.zeros(len(users), dtype=torch.int32, device=users.device)
        for index, start in enumerate(range(0, self.num_items, self.block)):
            torch.mm(users, self.items[start:start + self.block].T, out=tile)  # (B, block)
            if masked is not None and bounds[index] < bounds[index + 1]:
                part = slice(bounds[index], bounds[index + 1])
                tile[rows[part], columns[part] - start] = float("-inf")
            width = min(self.block, self.num_items - start)  # the last tile's padding is not counted
            torch.ge(tile[:, :width], target_scores, out=hits[:, :width])
            counts += hits[:, :width].sum(dim=1, dtype=torch.int32)  # int32: a faster reduction
        return counts, target_scores[:, 0]

    def _single_threaded_counts(self, users: torch.Tensor, targets: torch.Tensor,
                                masked: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
        torch.set_num_threads(1)  # this worker thread's own math; the caller's setting is restored after
        return self._counts(users, targets, masked)

    def __call__(self, users: torch.Tensor, targets: torch.Tensor, masked: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """0-based rank of each user's target, exactly `target_ranks(users @ items.T, targets)`.

        Args:
            users: (B, H) user vectors on the items' device (cast to the items' dtype).
            targets: (B,) each user's target column.
            masked: (rows, columns) score entries to set to -inf before ranking (a user's history), or
                None. A pair naming the user's own target is ignored: a repeated item stays rankable.
        Returns:
            (B,) int64 ranks; ties count against the target, a NaN target ranks last.
        """
        users = users.to(self.items.dtype)
        if masked is not None:
            rows, columns = masked
            keep = columns != targets[rows]
            masked = rows[keep], columns[keep]
        if self.workers == 1 or len(users) < self.workers:
            counts, target_scores = self._counts(users, targets, masked)
        else:
            bounds = [len(users) * worker // self.workers for worker in range(self.workers + 1)]
            parts = []
            for low, high in itertools.pairwise(bounds):
                mine = None if masked is None else (masked[0] >= low) & (masked[0] < high)
                parts.append((users[low:high], targets[low:high], None if masked is None else (masked[0][mine] - low, masked[1][mine])))
            threads = torch.get_num_threads()
            try:
                with ThreadPoolExecutor(self.workers) as pool:
                    done = list(pool.map(lambda part: self._single_threaded_counts(*part), parts))
            finally:
                torch.set_num_threads(threads)
            counts, target_scores = torch.cat([c for c, _ in done]), torch.cat([t for _, t in done])
        ranks = counts.long() - 1  # the target always ties with itself
        return torch.where(torch.isnan(target_scores), self.num_items - 1, ranks)


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

