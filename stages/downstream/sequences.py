"""A canonical dataset run as integer sequences: every user's chronological items in one CSR array.

Items are numbered 1..N in `items.parquet` row order; 0 is padding. Each user's sequence is their
train items, then the valid target (if any), then the test target (leave-one-out), so every history
the stage needs is a contiguous slice `items[start:end]`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.contracts.dataset import ITEMS_FILE, interactions_path, read_interactions, read_items
from pipeline.errors import BadInput

_SPLIT_CODE = {"train": 0, "valid": 1, "test": 2}


@dataclass(frozen=True)
class Sequences:
    item_ids: list[str]  # item k (1-based) is item_ids[k - 1]
    user_ids: list[str]
    offsets: np.ndarray  # (U + 1,) user u's items are items[offsets[u]:offsets[u + 1]]
    items: np.ndarray  # (interactions,) int64, 1-based
    n_train: np.ndarray  # (U,) length of each user's train prefix
    valid: np.ndarray  # (U,) the valid target (1-based), 0 when the user has none
    test: np.ndarray  # (U,) the test target (1-based), 0 when the user has none

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def starts(self) -> np.ndarray:
        return self.offsets[:-1]

    def split_end(self, split: str) -> np.ndarray:
        """(U,) end of the history that predicts `split`'s target: train for valid, train + valid for test."""
        ends = {"train": self.starts + self.n_train, "valid": self.starts + self.n_train,
                "test": self.starts + self.n_train + (self.valid > 0), "all": self.offsets[1:]}
        return ends[split]

    def train_counts(self) -> np.ndarray:
        """(N,) how often each item occurs in train sequences (the popularity baseline's scores)."""
        mask = np.arange(len(self.items)) < np.repeat(self.starts + self.n_train, np.diff(self.offsets))
        return np.bincount(self.items[mask] - 1, minlength=self.num_items)


def load_sequences(dataset_dir: Path) -> Sequences:
    """Read a dataset run's items and interactions (sorted by user, then position).

    Raises:
        BadInput: missing files or columns, unknown items, or a split that is not train..., valid, test.
    """
    item_ids = read_items(dataset_dir, ["item_id"]).column("item_id").cast(pa.string())
    path = interactions_path(dataset_dir)
    inter = read_interactions(dataset_dir, ["user_id", "item_id", "position", "split"]).sort_by([("user_id", "ascending"), ("position", "ascending")])
    codes = pc.index_in(inter.column("item_id").cast(pa.string()), value_set=item_ids)
    if codes.null_count:
        row = pc.index(pc.is_null(codes), True).as_py()
        raise BadInput(f"{path}: row {row + 1} names item {inter.column('item_id')[row].as_py()!r}, absent from {ITEMS_FILE}")
    items = codes.to_numpy().astype(np.int64) + 1
    users = inter.column("user_id").cast(pa.string()).combine_chunks().dictionary_encode()
    user_codes = users.indices.to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, user_codes[1:] != user_codes[:-1]])
    offsets = np.r_[starts, len(items)].astype(np.int64)
    split = np.array([_SPLIT_CODE.get(s, -1) for s in inter.column("split").to_pylist()], dtype=np.int64)
    if (split < 0).any():
        raise BadInput(f"{path}: row {int(np.flatnonzero(split < 0)[0]) + 1}: split must be train, valid or test")
    if (np.diff(split)[np.diff(user_codes) == 0] < 0).any():
        raise BadInput(f"{path}: a user's splits are out of order (expected train..., valid, test by position)")
    n_train = np.add.reduceat((split == 0).astype(np.int64), starts)
    n_valid = np.add.reduceat((split == 1).astype(np.int64), starts)
    n_test = np.add.reduceat((split == 2).astype(np.int64), starts)
    if (n_valid > 1).any() or (n_test > 1).any():
        raise BadInput(f"{path}: a user has more than one valid or test interaction (leave-one-out expected)")
    last = offsets[1:] - 1
    valid = np.where(n_valid > 0, items[last - (n_test > 0)], 0)
    test = np.where(n_test > 0, items[last], 0)
    return Sequences(item_ids.to_pylist(), users.dictionary.take(pa.array(user_codes[starts])).to_pylist(),
                     offsets, items, n_train, valid, test)


def padded(seqs: Sequences, users: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
    """(n, length) int64: the `length` items before each `ends[i]` of user `users[i]`, right-aligned, 0-padded."""
    index = ends[:, None] - length + np.arange(length)[None, :]  # (n, length)
    real = index >= seqs.starts[users][:, None]
    return np.where(real, seqs.items[np.clip(index, 0, None)], 0)


def history_pairs(seqs: Sequences, users: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, item) pairs of every item each user saw before `ends` (whole history, for masking)."""
    starts = seqs.starts[users]
    lengths = ends - starts
    rows = np.repeat(np.arange(len(users)), lengths)
    index = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths) + np.repeat(starts, lengths)
    return rows, seqs.items[index]
