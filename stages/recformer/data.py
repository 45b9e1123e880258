"""Training and evaluation examples (history -> next item) from canonical dataset runs.

Several datasets can be pooled: their catalogs are concatenated into one item index space, so an
example of dataset k names items by their global index (catalog row + the sizes of catalogs before it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from transformers import PreTrainedTokenizerBase

from pipeline.contracts.dataset import interactions_path, items_path, read_interactions, read_items
from pipeline.errors import BadInput
from stages.recformer.inputs import ItemTokens, attribute_columns, tokenize_catalog


@dataclass(frozen=True)
class Examples:
    """Chronological user sequences in one flat array, and the examples cut from them.

    Example e predicts `items[target[e]]` from `items[start[e]:target[e]]` (the user's earlier items).
    """

    items: np.ndarray  # (I,) int64 global item indices, grouped by user, oldest first
    start: np.ndarray  # (E,) int64 where the example's user begins in `items`
    target: np.ndarray  # (E,) int64 where the example's target sits in `items`
    user_ids: np.ndarray  # (E,) object: the example's user id

    def __len__(self) -> int:
        return len(self.target)

    def history(self, e: int, max_items: int) -> np.ndarray:
        """The at most `max_items` items before example e's target, oldest first."""
        return self.items[max(self.start[e], self.target[e] - max_items): self.target[e]]

    def subset(self, rows: np.ndarray | slice) -> Examples:
        """Some of the examples (e.g. a sample of validation users), over the same item sequences."""
        return Examples(self.items, self.start[rows], self.target[rows], self.user_ids[rows])

    def targets(self) -> np.ndarray:
        """(E,) the global item index each example predicts."""
        return self.items[self.target]

    @staticmethod
    def concat(parts: Sequence[Examples]) -> Examples:
        shifts = np.cumsum([0] + [len(part.items) for part in parts[:-1]])
        return Examples(np.concatenate([part.items for part in parts]),
                        np.concatenate([part.start + s for part, s in zip(parts, shifts)]),
                        np.concatenate([part.target + s for part, s in zip(parts, shifts)]),
                        np.concatenate([part.user_ids for part in parts]))


def cut_examples(interactions: pa.Table, catalog_ids: pa.Array, offset: int, splits: set[str], source: str) -> Examples:
    """Every interaction in `splits` that has earlier items becomes an example; its history is all earlier items.

    Raises:
        BadInput: an interaction names an item missing from the catalog.
    """
    table = interactions.sort_by([("user_id", "ascending"), ("position", "ascending")])
    rows = pc.index_in(table.column("item_id"), value_set=catalog_ids)
    if rows.null_count:
        missing = pc.filter(table.column("item_id"), pc.is_null(rows))[0].as_py()
        raise BadInput(f"{source}: item {missing!r} is not in the catalog")
    items = rows.to_numpy(zero_copy_only=False).astype(np.int64) + offset
    users = table.column("user_id").combine_chunks().dictionary_encode().indices.to_numpy(zero_copy_only=False)
    first = np.r_[True, users[1:] != users[:-1]]
    user_start = np.maximum.accumulate(np.where(first, np.arange(len(users)), 0))
    chosen = pc.is_in(table.column("split"), value_set=pa.array(sorted(splits))).to_numpy(zero_copy_only=False)
    target = np.flatnonzero(chosen & ~first)
    return Examples(items, user_start[target], target.astype(np.int64),
                    np.asarray(table.column("user_id").take(pa.array(target)).to_pylist(), dtype=object))


def load_corpus(run_dirs: Sequence[Path], attributes: list[str] | None,
                tokenizer: PreTrainedTokenizerBase, max_attribute_tokens: int,
                splits: Sequence[str]) -> tuple[ItemTokens, dict[str, Examples]]:
    """Tokenised catalogs of one or more dataset runs in one global item index space, and per split
    name the examples whose target lies in that split (e.g. "train" to train on, "valid" to select by)."""
    catalogs, examples, offset = [], {split: [] for split in splits}, 0
    for run_dir in map(Path, run_dirs):
        items = read_items(run_dir)
        columns = attribute_columns(items, attributes, str(items_path(run_dir)))
        catalogs.append(tokenize_catalog(items, columns, tokenizer, max_attribute_tokens))
        interactions = read_interactions(run_dir, ["user_id", "item_id", "position", "split"])
        for split in splits:
            examples[split].append(cut_examples(interactions, items.column("item_id").combine_chunks(), offset,
                                                {split}, str(interactions_path(run_dir))))
        offset += items.num_rows
    return ItemTokens.concat(catalogs), {split: Examples.concat(parts) for split, parts in examples.items()}
