"""A trained run applied to today's data: the newest histories and every item that can be scored now.

A model trained yesterday still serves today: users' histories come from the latest dataset run (or a
file), and the candidates are every item of today's catalog. An item that arrived after training is
scored through its frozen embedding and the trained adapter (it has no ID vector); an item the model
knows keeps its ID vector, with today's embedding where the model reads embeddings. Items with neither an
embedding nor an ID vector cannot be scored: they are left out of candidates and histories, and counted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch
from torch import nn

from pipeline.contracts.embeddings import Embeddings
from pipeline.errors import BadInput
from stages.downstream.recommender import Recommender
from stages.downstream.runs import Trained
from stages.downstream.sequences import Sequences


class FixedItems(nn.Module):
    """Item vectors computed once, as `Recommender.items` offers them: row 0 is padding."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", torch.cat([torch.zeros(1, table.shape[1]), table]))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table[ids]

    def all_items(self) -> torch.Tensor:
        return self.table[1:]


@dataclass(frozen=True)
class Current:
    """A model over today's item space: `seqs.item_ids` are the candidates, `scoreable` which can be scored."""

    model: nn.Module
    seqs: Sequences
    scoreable: np.ndarray  # (N,) bool
    facts: dict[str, int]


def _item_vectors(trained: Trained, item_ids: list[str], embeddings: Embeddings | None) -> tuple[torch.Tensor, np.ndarray]:
    """(N, H) vectors of `item_ids` and which could be made."""
    encoder = trained.model.items
    known_row = {item: row + 1 for row, item in enumerate(trained.seqs.item_ids)}
    known = torch.tensor([known_row.get(item, 0) for item in item_ids], dtype=torch.long)
    with torch.no_grad():
        trained_table = encoder.all_items()  # (N_trained, H)
        vectors = torch.zeros(len(item_ids), trained_table.shape[1])
        vectors[known > 0] = trained_table[known[known > 0] - 1]
        scoreable = (known > 0).numpy()
        if embeddings is not None and getattr(encoder, "uses_embeddings", False):
            row_of = {item: row for row, item in enumerate(embeddings.item_ids)}
            rows = np.array([row_of.get(item, -1) for item in item_ids])
            has = torch.from_numpy(rows >= 0)
            now = torch.zeros(len(item_ids), embeddings.dim)
            now[has] = torch.from_numpy(embeddings.vectors[rows[rows >= 0]])
            # Items whose embedding is the one the model trained with keep their trained vector exactly.
            same = (known > 0) & has & (now == encoder.table[known]).all(dim=1) & encoder.has_embedding[known]
            fresh = has & ~same
            if fresh.any():
                vectors[fresh] = encoder.encode_embeddings(now[fresh], known[fresh])
            scoreable = scoreable | has.numpy()
    return vectors, scoreable


def _candidates(seqs: Sequences, embeddings: Embeddings | None) -> list[str]:
    """Today's item space: the dataset's items, then items only the embeddings run has."""
    in_dataset = set(seqs.item_ids)
    extra = [] if embeddings is None else [item for item in embeddings.item_ids if item not in in_dataset]
    return [*seqs.item_ids, *extra]


def keep_items(seqs: Sequences, keep: np.ndarray) -> tuple[Sequences, int]:
    """`seqs` without the interactions whose item is not kept (`keep` (N,) bool); how many were dropped."""
    lengths = np.diff(seqs.offsets)
    user = np.repeat(np.arange(len(lengths)), lengths)
    position = np.arange(len(seqs.items)) - seqs.offsets[user]
    split = np.where(position < seqs.n_train[user], 0,
                     np.where((position == seqs.n_train[user]) & (seqs.valid[user] > 0), 1, 2))
    mask = keep[seqs.items - 1]
    counts = np.bincount(user[mask], minlength=len(lengths))
    kept_user, kept_split, items = user[mask], split[mask], seqs.items[mask]
    valid = np.zeros(len(lengths), np.int64)
    test = np.zeros(len(lengths), np.int64)
    valid[kept_user[kept_split == 1]] = items[kept_split == 1]
    test[kept_user[kept_split == 2]] = items[kept_split == 2]
    out = dataclasses.replace(seqs, offsets=np.r_[0, np.cumsum(counts)].astype(np.int64), items=items,
                              n_train=np.bincount(kept_user[kept_split == 0], minlength=len(lengths)),
                              valid=valid, test=test)
    return out, int((~mask).sum())


def on_current_data(trained: Trained, seqs: Sequences, embeddings: Embeddings | None) -> Current:
    """`trained` over the items of `seqs` (today's dataset run) and of `embeddings`.

    Histories keep only scoreable items. Recformer runs score the items they were trained with (their
    item table comes from the text encoder, which recommend does not load).
    """
    if isinstance(trained.model, Recommender):
        item_ids = _candidates(seqs, embeddings)
        vectors, scoreable = _item_vectors(trained, item_ids, embeddings)
        model: nn.Module = Recommender(FixedItems(vectors), trained.model.sequence, trained.model.temperature).eval()
        current, history_dropped = keep_items(dataclasses.replace(seqs, item_ids=item_ids), scoreable)
    else:
        item_ids = trained.seqs.item_ids
        scoreable = np.ones(len(item_ids), bool)
        model, (current, history_dropped) = trained.model, remap(seqs, item_ids)
    trained_items = set(trained.seqs.item_ids)
    facts = {"items": len(item_ids), "items_scoreable": int(scoreable.sum()),
             "items_left_out": int((~scoreable).sum()) + len(set(seqs.item_ids) - set(item_ids)),
             "items_new_since_training": sum(1 for item in item_ids if item not in trained_items),
             "history_interactions_left_out": history_dropped}
    return Current(model, current, scoreable, facts)


def remap(seqs: Sequences, item_ids: list[str]) -> tuple[Sequences, int]:
    """`seqs` renumbered into the item space `item_ids`; interactions with items outside it are dropped (counted)."""
    row_of = {item: row + 1 for row, item in enumerate(item_ids)}
    codes = np.array([0, *(row_of.get(item, 0) for item in seqs.item_ids)], dtype=np.int64)  # codes[old id]
    kept, dropped = keep_items(seqs, codes[1:] > 0)
    return dataclasses.replace(kept, item_ids=list(item_ids), items=codes[kept.items], valid=codes[kept.valid],
                               test=codes[kept.test]), dropped


def read_histories(path: Path, current: Current) -> tuple[Sequences, dict[str, int]]:
    """Histories from a file (Parquet or CSV: user_id, item_id, one row per interaction in time order), in
    `current`'s item space. Rows naming an item that cannot be scored are skipped and counted; users keep
    their order of first appearance.

    Raises:
        BadInput: the file is missing, unreadable, or lacks a column.
    """
    try:
        table = pq.read_table(path) if path.suffix == ".parquet" else pacsv.read_csv(
            path, convert_options=pacsv.ConvertOptions(column_types={"user_id": pa.string(), "item_id": pa.string()}))
    except FileNotFoundError:
        raise BadInput(f"{path}: histories file not found") from None
    except (pa.ArrowException, OSError) as exc:
        raise BadInput(f"{path}: not a readable {'Parquet' if path.suffix == '.parquet' else 'CSV'} file "
                       f"({' '.join(str(exc).split())})") from None
    missing = [name for name in ("user_id", "item_id") if name not in table.column_names]
    if missing:
        raise BadInput(f"{path}: no column {missing[0]!r} (it has: {', '.join(table.column_names)}); "
                       "expected user_id, item_id in time order")
    if table.column("user_id").null_count or table.column("item_id").null_count:
        column = "user_id" if table.column("user_id").null_count else "item_id"
        row = table.column(column).to_pylist().index(None)
        raise BadInput(f"{path}: row {row + 1} has no {column}")
    users = [str(u) for u in table.column("user_id").to_pylist()]
    items = [str(i) for i in table.column("item_id").to_pylist()]
    row_of = {item: row + 1 for row, item in enumerate(current.seqs.item_ids) if current.scoreable[row]}
    order = {user: n for n, user in enumerate(dict.fromkeys(users))}
    pairs = sorted((order[u], n, row_of[i]) for n, (u, i) in enumerate(zip(users, items)) if i in row_of)
    counts = np.bincount(np.array([p[0] for p in pairs], np.int64), minlength=len(order))
    codes = np.array([p[2] for p in pairs], np.int64)
    none = np.zeros(len(order), np.int64)
    seqs = Sequences(list(current.seqs.item_ids), list(order), np.r_[0, np.cumsum(counts)].astype(np.int64), codes,
                     counts.astype(np.int64), none, none.copy())
    return seqs, {"history_rows": len(users), "history_rows_skipped": len(users) - len(pairs),
                  "users_without_known_items": int((counts == 0).sum())}
