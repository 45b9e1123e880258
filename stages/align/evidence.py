"""Evidence that an alignment learned something, stored in the manifest and printed at the end.

1. Prefix loss (SAID): the frozen LM's mean per-token loss on item text behind the item's own learned
   prefix, behind no prefix, and behind another item's prefix. Token 0 has no context without a prefix,
   so all three score tokens 1.. of the same items.
2. Neighbour check (every method): how often an item's nearest neighbour by embedding shares a value of
   an attribute (genre, brand, category) with it, against the same rate for random pairs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import faiss
import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

from pipeline.contracts.embeddings import l2_normalise
from stages.align.loss import token_nll
from stages.align.tokens import Tokens, collate

CONDITIONS = ("learned_prefix", "no_prefix", "other_item_prefix")


@torch.no_grad()
def prefix_losses(accelerator: Accelerator, lm: nn.Module, soft_tokens: Callable[[np.ndarray], torch.Tensor],
                  owned: range, tokens: Tokens, sample: int, batch_size: int, pad_id: int, seed: int) -> dict[str, object]:
    """Mean loss and perplexity under the three conditions on `sample` random items (the same draw on every process).

    Each process scores the drawn items among the catalog rows it `owned` and gives each the prefix of the one
    drawn before it among them (never its own where it owns two or more), so prefixes come from the item rows it
    holds (`soft_tokens(rows)`) and only the sums cross processes.
    """
    n = len(tokens.lengths)
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(n)[:min(sample, n)]
    mine = chosen[(chosen >= owned.start) & (chosen < owned.stop)]
    donors = np.roll(mine, 1)
    device = accelerator.device
    sums = torch.zeros(len(CONDITIONS), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, len(mine), batch_size):
        picked = slice(start, start + batch_size)
        ids, mask = (t.to(device) for t in collate(tokens, mine[picked], pad_id))
        scored = mask.clone()
        scored[:, 0] = 0
        own, other = soft_tokens(mine[picked]), soft_tokens(donors[picked])
        with accelerator.autocast():
            for c, prefix in enumerate((own, None, other)):
                sums[c] += (token_nll(lm, prefix, ids, mask) * scored).sum().double()
        count += scored.sum().double()
    sums, count = accelerator.reduce(sums, "sum"), accelerator.reduce(count, "sum")
    result: dict[str, object] = {"items": len(chosen), "tokens_scored": int(count.item())}
    for c, name in enumerate(CONDITIONS):
        loss = (sums[c] / count.clamp(min=1)).item()
        result[name] = {"loss": round(loss, 4), "perplexity": round(math.exp(min(loss, 50.0)), 2)}
    return result


def attribute_sets(values: list[str | None], separator: str | None) -> list[frozenset[str]]:
    """Each item's attribute values as a set (several when `separator` splits them); empty when missing."""
    def split(value: str | None) -> frozenset[str]:
        if not value:
            return frozenset()
        parts = value.split(separator) if separator else [value]
        return frozenset(p.strip() for p in parts if p.strip())
    return [split(v) for v in values]


def neighbour_rate(index: faiss.Index, read_rows: Callable[[np.ndarray], np.ndarray], values: list[frozenset[str]],
                   queries: int, seed: int, depth: int = 10) -> dict[str, object]:
    """Share rate of the nearest neighbour (cosine, self excluded) vs random pairs, over items with a value.

    Looked up in the run's own `index` (row i = values[i]): the first of the `depth` nearest that has a value is
    the neighbour; `read_rows(rows)` gives the asked items' vectors, so no more than those are read.
    """
    eligible = np.array([i for i, v in enumerate(values) if v])
    if len(eligible) < 3:
        return {"skipped": f"only {len(eligible)} items have the attribute"}
    rng = np.random.default_rng(seed)
    asked = rng.choice(eligible, size=min(queries, len(eligible)), replace=False)
    _, found = index.search(l2_normalise(read_rows(asked)), min(depth, int(index.ntotal)))
    matched = [(q, n) for q, n in ((q, next((int(n) for n in row if n >= 0 and n != q and values[n]), None))
                                   for q, row in zip(asked, found)) if n is not None]
    if not matched:
        return {"skipped": f"no item with the attribute among the {depth} nearest of any asked item"}
    asked, neighbours = np.array([q for q, _ in matched]), [n for _, n in matched]
    shared = np.mean([bool(values[q] & values[nb]) for q, nb in zip(asked, neighbours)])
    first = rng.choice(eligible, size=len(asked))
    second = rng.choice(eligible, size=len(asked))
    pairs = [(a, b) for a, b in zip(first, second) if a != b]
    random_rate = np.mean([bool(values[a] & values[b]) for a, b in pairs])
    return {"queries": len(asked), "nearest_neighbour_share_rate": round(float(shared), 4),
            "random_pair_share_rate": round(float(random_rate), 4),
            "lift": round(float(shared / random_rate), 3) if random_rate else None}
