"""Recformer's input format: items as "key value" token runs, users as item sequences behind a CLS token.

Each item is tokenised once (`tokenize_catalog`) into a flat cache; sequences are then assembled from
the cache by slicing arrays, so building a batch costs no tokenizer calls.

Ids per token, for a user whose items are [older, newer]::

    tokens          [CLS] key value value key value | key value ... | [PAD] [PAD]
    token types       0    1    2     2    1    2   |  1    2       |   3     3
    item positions    0    1    1     1    1    1   |  2    2       |   0     0
                         ^ newer (most recent first)  ^ older

Item position 0 means "no item" (CLS and padding): padding is masked out of attention anyway, and
sharing row 0 leaves rows 1..max_items for real items. Token positions are not stored here; the
encoder numbers tokens 0..L-1 the way its pretrained model does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from transformers import PreTrainedTokenizerBase

from pipeline.errors import BadInput

CLS, KEY, VALUE, PAD = 0, 1, 2, 3
_TOKENIZE_ROWS = 4096  # rows per tokenizer call: bounds the Python lists alive at once


@dataclass(frozen=True)
class ItemTokens:
    """Every item's tokens in flat arrays: item i is `ids[offsets[i]:offsets[i + 1]]` (and `types` alike)."""

    item_ids: np.ndarray  # (N,) object: the catalog's item ids, in catalog order
    ids: np.ndarray  # (T,) int32 token ids
    types: np.ndarray  # (T,) int8 KEY / VALUE
    offsets: np.ndarray  # (N + 1,) int64

    def __len__(self) -> int:
        return len(self.item_ids)

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @staticmethod
    def concat(parts: Sequence[ItemTokens]) -> ItemTokens:
        """One cache over several catalogs; item indices of part k shift by the sizes of parts before it."""
        starts = np.cumsum([0] + [len(part.ids) for part in parts[:-1]])
        offsets = np.concatenate([[0]] + [part.offsets[1:] + start for part, start in zip(parts, starts)])
        return ItemTokens(np.concatenate([part.item_ids for part in parts]),
                          np.concatenate([part.ids for part in parts]),
                          np.concatenate([part.types for part in parts]), offsets.astype(np.int64))


def attribute_columns(items: pa.Table, wanted: list[str] | None, source: str) -> list[str]:
    """The attribute columns to flatten: `wanted` in its order, or every column but item_id and text
    (the rendered `text` itself, as one attribute, where a catalog has no other columns).

    Raises:
        BadInput: a wanted attribute is not a column of the catalog.
    """
    columns = [name for name in items.column_names if name != "item_id"]
    if wanted is None:
        return [name for name in columns if name != "text"] or ["text"]
    missing = [name for name in wanted if name not in columns]
    if missing:
        raise BadInput(f"recformer.attributes: {source} has no attribute {missing[0]!r} "
                       f"(it has: {', '.join(columns)})")
    return list(wanted)


def tokenize_catalog(items: pa.Table, attributes: list[str], tokenizer: PreTrainedTokenizerBase,
                     max_attribute_tokens: int) -> ItemTokens:
    """Tokenise each item once: per non-empty attribute, the key's tokens then its value's, cut to budget.

    Keys are written as words (`movie_title` -> "movie title") so the pretrained vocabulary reads them.
    """
    keys = [tokenizer(name.replace("_", " "), add_special_tokens=False)["input_ids"] for name in attributes]
    id_chunks, type_chunks, lengths = [], [], np.zeros(items.num_rows, np.int64)
    for start in range(0, items.num_rows, _TOKENIZE_ROWS):
        rows = items.slice(start, _TOKENIZE_ROWS)
        # Cut by the tokenizer itself: a long description is not tokenised whole only to be thrown away.
        values = [tokenizer([v or "" for v in rows.column(name).to_pylist()], add_special_tokens=False,
                            truncation=True, max_length=max_attribute_tokens,
                            return_attention_mask=False, return_token_type_ids=False)["input_ids"]
                  for name in attributes]
        ids: list[int] = []  # this chunk's tokens as plain ints: one array per chunk, not per attribute
        types: list[int] = []
        for row in range(rows.num_rows):
            before = len(ids)
            for key, column in zip(keys, values):
                value = column[row][:max_attribute_tokens]
                if value:
                    ids += key + value
                    types += [KEY] * len(key) + [VALUE] * len(value)
            lengths[start + row] = len(ids) - before
        id_chunks.append(np.asarray(ids, np.int32))
        type_chunks.append(np.asarray(types, np.int8))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return ItemTokens(np.asarray(items.column("item_id").to_pylist(), dtype=object),
                      np.concatenate([np.zeros(0, np.int32), *id_chunks]),
                      np.concatenate([np.zeros(0, np.int8), *type_chunks]), offsets)


@dataclass(frozen=True)
class SequenceFormat:
    """How sequences are cut and padded; assembles model inputs from an `ItemTokens` cache."""

    items: ItemTokens
    cls_id: int
    pad_id: int
    max_items: int
    max_tokens: int

    def sequence(self, history: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, types, item positions) for items given oldest first; laid out most recent first, then cut."""
        recent = list(history)[::-1][: self.max_items]
        spans = [(self.items.offsets[i], self.items.offsets[i + 1]) for i in recent]
        ids = np.concatenate([[self.cls_id]] + [self.items.ids[a:b] for a, b in spans]).astype(np.int64)
        types = np.concatenate([[CLS]] + [self.items.types[a:b] for a, b in spans]).astype(np.int64)
        positions = np.concatenate([[0]] + [np.full(b - a, k + 1) for k, (a, b) in enumerate(spans)]).astype(np.int64)
        return ids[: self.max_tokens], types[: self.max_tokens], positions[: self.max_tokens]

    def batch(self, histories: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """Padded model inputs for several histories: each (B, L) with L the longest sequence."""
        rows = [self.sequence(history) for history in histories]
        length = max(len(ids) for ids, _, _ in rows)
        out = {"input_ids": np.full((len(rows), length), self.pad_id, np.int64),
               "token_type_ids": np.full((len(rows), length), PAD, np.int64),
               "item_position_ids": np.zeros((len(rows), length), np.int64),
               "attention_mask": np.zeros((len(rows), length), np.int64)}
        for b, (ids, types, positions) in enumerate(rows):
            n = len(ids)
            out["input_ids"][b, :n], out["token_type_ids"][b, :n] = ids, types
            out["item_position_ids"][b, :n], out["attention_mask"][b, :n] = positions, 1
        return {name: torch.from_numpy(array) for name, array in out.items()}

    def item_batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """Items encoded as one-item sequences (CLS + the item's tokens, item position 1)."""
        return self.batch([[int(i)] for i in indices])
