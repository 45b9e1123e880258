"""SAID's items cut into fixed shards, each owned by one process (`align.said.shards`).

Each item's vector gets gradients only from its own text, so its row of the item table never needs to
leave the process that owns it: only the projector MLP, shared by all items, is synchronised. A shard
is a contiguous range of catalog rows; process p owns shards p*k .. (p+1)*k - 1 (k = shards / processes),
that is one contiguous range of rows. Each shard is batched on its own, from (seed, epoch, shard), and
every optimizer step takes one group of batches from every shard: what a run computes depends on the
number of shards, never on how many processes share them, so a one-process run with `shards: 2`
reproduces a two-process run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.errors import BadInput


@dataclass(frozen=True)
class Shards:
    """The shards of a catalog of `total` items, and which of them this process owns."""

    total: int
    count: int  # shards in all
    mine: range  # the shard numbers this process owns

    def bounds(self, shard: int) -> tuple[int, int]:
        """Shard `shard`'s rows [start, stop) (shards differ by at most one row, the first ones larger)."""
        size, extra = divmod(self.total, self.count)
        start = shard * size + min(shard, extra)
        return start, start + size + (shard < extra)

    @property
    def rows(self) -> range:
        """This process's rows: its shards' ranges, which are adjacent."""
        return range(self.bounds(self.mine.start)[0], self.bounds(self.mine.stop - 1)[1])


def shard_count(configured: int | None, processes: int) -> int:
    """`align.said.shards`, or one shard per process when it is null."""
    return processes if configured is None else configured


def owned(total: int, configured: int | None, rank: int, processes: int) -> Shards:
    """This process's shards of `total` items.

    Raises:
        BadInput: the shards cannot be dealt out evenly to the processes.
    """
    count = shard_count(configured, processes)
    if count % processes:
        raise BadInput(f"align.said.shards: {count} shards cannot be split evenly over {processes} processes; "
                       f"set it to a multiple of {processes} (or null: one per process)")
    per = count // processes
    return Shards(total, count, range(rank * per, (rank + 1) * per))


def shard_seed(seed: int, epoch: int, shard: int) -> np.random.SeedSequence:
    """The shuffling seed of one shard's batches in one epoch (independent streams per shard)."""
    return np.random.SeedSequence([seed, epoch, shard])


def shard_generator(seed: int, shard: int) -> torch.Generator:
    """The generator of one shard's fresh item rows: the shard's child of `seed` (a stream apart from every
    `shard_seed`), so a shard starts the same whichever process holds it."""
    state = np.random.SeedSequence(seed, spawn_key=(shard,)).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def random_rows(shards: Shards, width: int, seed: int) -> torch.Tensor:
    """This process's rows of a fresh item table (its shards' rows, in order), normal(0, 1) like
    nn.Embedding's start: each shard's from its own generator, never the rows of other processes."""
    sizes = [stop - start for start, stop in map(shards.bounds, shards.mine)]
    return torch.cat([torch.randn(size, width, generator=shard_generator(seed, shard))
                      for shard, size in zip(shards.mine, sizes)])
