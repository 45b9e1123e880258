"""Shuffled batches of rows with similar lengths, and their split across processes (both stages use them)."""

from __future__ import annotations

import numpy as np


def length_batches(rows: np.ndarray, lengths: np.ndarray, batch_size: int, pool: int,
                   seed: int | np.random.SeedSequence,
                   budget: float | None = None) -> list[np.ndarray]:
    """Shuffled batches of `rows` with similar `lengths` (token counts, history lengths).

    Rows are shuffled, cut into pools of `batch_size * pool`, each pool sorted by length and cut into
    batches, and the batches shuffled again, so padding stays small while the order stays random.
    A pool is cut every `batch_size` rows, or, with a `budget`, wherever a batch's lengths add up to it:
    batches of short rows then hold more rows, and every batch about the same total length.
    The same seed gives the same batches, which is what lets a resumed run skip the ones it did.
    """
    rng = np.random.default_rng(seed)
    order = rows[rng.permutation(len(rows))]
    batches = []
    span = batch_size * pool
    for start in range(0, len(order), span):
        chunk = order[start:start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        if budget is None:
            batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
        else:  # batch k takes the rows whose running total of lengths ends in (k * budget, (k + 1) * budget]
            which = ((np.cumsum(lengths[chunk]) - 1) // budget).astype(np.int64)
            batches.extend(np.split(chunk, np.flatnonzero(np.diff(which)) + 1))
    return [batches[i] for i in rng.permutation(len(batches))]


def shard(batches: list[np.ndarray], rank: int, world: int) -> list[np.ndarray]:
    """This process's batches; the list is wrapped round so every process gets the same count."""
    if world == 1 or not batches:
        return batches
    per = -(-len(batches) // world)
    padded = [batches[i % len(batches)] for i in range(per * world)]
    return padded[rank::world]
