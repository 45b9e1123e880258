"""Item text -> token ids, tokenized once and cached; batches cut by length to keep padding small."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from pipeline.contracts.dataset import ITEMS_FILE
from pipeline.errors import BadInput


@dataclass
class Tokens:
    """Token ids of every item, flat: item i owns `ids[offsets[i]:offsets[i+1]]`."""

    ids: np.ndarray  # (total,) int64
    offsets: np.ndarray  # (items + 1,) int64
    truncated: int  # items whose text was cut at max_text_tokens

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def item(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i]:self.offsets[i + 1]]


def render(items: pa.Table, template: str) -> list[str]:
    """Each item's text from `template`, a format string over the item columns (e.g. "{text}").

    Raises:
        BadInput: the template names a column the items do not have, or an item's text is empty.
    """
    rows = items.to_pylist()
    try:
        texts = [template.format_map(row) for row in rows]
    except KeyError as exc:
        raise BadInput(f"align.template: {ITEMS_FILE} has no column {exc.args[0]!r} "
                       f"(it has: {', '.join(items.column_names)})") from None
    empty = [row["item_id"] for row, text in zip(rows, texts) if not text.strip()]
    if empty:
        raise BadInput(f"align.template: {len(empty)} items render to empty text (e.g. item {empty[0]})")
    return texts


def text_sha256(texts: list[str]) -> list[str]:
    return [hashlib.sha256(text.encode()).hexdigest() for text in texts]


def tokenize(texts: list[str], tokenizer: object, max_tokens: int, special_tokens: bool,
             cache: Path | None = None) -> Tokens:
    """Token ids cut at `max_tokens`; read from `cache` when it holds these very texts and settings.

    `special_tokens` adds the tokenizer's own (e.g. BERT's [CLS] ... [SEP]); a soft prefix replaces them.
    """
    settings = [type(tokenizer).__name__, str(len(tokenizer)), str(max_tokens), str(special_tokens)]
    key = hashlib.sha256("\x00".join([*settings, *texts]).encode()).hexdigest()
    stored = _cached(cache, key)
    if stored is not None:
        return stored
    encoded = tokenizer(texts, add_special_tokens=special_tokens)["input_ids"] if texts else []
    lengths = np.array([min(len(ids), max_tokens) for ids in encoded], dtype=np.int64)
    if (lengths == 0).any():
        raise BadInput(f"align.template: item row {int(np.argmin(lengths)) + 1} has text with no tokens")
    ids = np.fromiter((t for seq in encoded for t in seq[:max_tokens]), dtype=np.int64, count=int(lengths.sum()))
    tokens = Tokens(ids, np.concatenate([[0], np.cumsum(lengths)]),
                    sum(len(seq) > max_tokens for seq in encoded))
    if cache is not None:
        tmp = cache.with_name(cache.name + ".tmp.npz")
        np.savez(tmp, key=key, ids=tokens.ids, offsets=tokens.offsets, truncated=tokens.truncated)
        tmp.replace(cache)
    return tokens


def _cached(cache: Path | None, key: str) -> Tokens | None:
    """The cached tokens when `cache` holds this very `key`; an unreadable cache (never a pickle) is ignored."""
    if cache is None or not cache.is_file():
        return None
    try:
        with np.load(cache, allow_pickle=False) as stored:
            if str(stored["key"]) == key:
                return Tokens(stored["ids"], stored["offsets"], int(stored["truncated"]))
    except (OSError, ValueError, KeyError, EOFError):  # cut short by a crash, or not ours: tokenize again
        return None
    return None


def collate(tokens: Tokens, rows: np.ndarray, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, L) and their mask (B, L) for the items `rows`."""
    seqs = [tokens.item(int(r)) for r in rows]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for b, seq in enumerate(seqs):
        ids[b, :len(seq)] = torch.from_numpy(seq)
        mask[b, :len(seq)] = 1
    return ids, mask
