"""The item side: a frozen LM embedding through a trainable adapter, an optional ID vector, or IDs alone.

Row 0 of every table is padding and always maps to the zero vector.
"""

from __future__ import annotations

import torch
from torch import nn


def whitening(table: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and PCA-whitening matrix of the rows of `table` (N, D): (x - mean) @ W has identity covariance."""
    mean = table.mean(dim=0)
    centred = table - mean
    cov = centred.T @ centred / max(len(table) - 1, 1)  # (D, D)
    values, vectors = torch.linalg.eigh(cov.double())
    return mean, (vectors / torch.sqrt(values.clamp_min(0) + eps)).float()


def _id_table(num_items: int, hidden_size: int) -> nn.Embedding:
    """Trainable ID vectors, initialised as in RecBole's SASRec (normal, std 0.02); row 0 stays zero."""
    table = nn.Embedding(num_items + 1, hidden_size, padding_idx=0)
    nn.init.normal_(table.weight, std=0.02)
    with torch.no_grad():
        table.weight[0].zero_()
    return table


# The whitening saved with the weights since it is persistent; runs saved before recompute it from their table.
WHITENING = ("items.adapter.mean", "items.adapter.matrix")


class ItemEncoder(nn.Module):
    """Maps 1-based item ids to hidden_size vectors.

    Args:
        num_items: N; ids run 1..N, 0 is padding.
        hidden_size: H, the width of the output vectors.
        embeddings: (N, D) frozen item embeddings in id order, or None for the ID-only baseline.
        has_embedding: (N,) bool, which rows of `embeddings` are real; items without one use an ID vector.
        adapter: "linear" | "mlp" | "whiten" (PCA whitening computed from `embeddings`, then linear).
        id_embedding: add a trainable ID vector to every adapted embedding.
        freeze: keep `embeddings` fixed (stored outside the state dict); False trains them too.
    """

    def __init__(self, num_items: int, hidden_size: int, embeddings: torch.Tensor | None,
                 has_embedding: torch.Tensor | None, adapter: str, id_embedding: bool, freeze: bool) -> None:
        super().__init__()
        self.num_items = num_items
        self.uses_embeddings = embeddings is not None
        if embeddings is None:
            self.ids = _id_table(num_items, hidden_size)
            return
        if embeddings.shape[0] != num_items:
            raise ValueError(f"embeddings have {embeddings.shape[0]} rows for {num_items} items")
        has = torch.ones(num_items, dtype=torch.bool) if has_embedding is None else has_embedding
        padded = torch.cat([torch.zeros(1, embeddings.shape[1]), embeddings.float()])  # (N + 1, D)
        if freeze:
            self.register_buffer("table", padded, persistent=False)
        else:
            self.table = nn.Parameter(padded)
        self.register_buffer("has_embedding", torch.cat([torch.zeros(1, dtype=torch.bool), has]), persistent=False)
        self.add_id = id_embedding
        self.ids = _id_table(num_items, hidden_size) if id_embedding or not has.all() else None
        self.adapter = self._adapter(adapter, embeddings[has], hidden_size)

    @staticmethod
    def _adapter(kind: str, rows: torch.Tensor, hidden_size: int) -> nn.Module:
        dim = rows.shape[1]
        if kind == "linear":
            return nn.Linear(dim, hidden_size)
        if kind == "mlp":
            return nn.Sequential(nn.Linear(dim, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size))
        if kind == "whiten":
            return Whiten(*whitening(rows.float()), hidden_size)
        raise ValueError(f"unknown adapter {kind!r}")

    @property
    def input_dim(self) -> int | None:
        """D of the embeddings this encoder was built for (None in ID-only mode)."""
        return int(self.table.shape[1]) if self.uses_embeddings else None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(...) int64 item ids -> (..., H) vectors; padding (0) gives zeros."""
        if not self.uses_embeddings:
            return self.ids(ids)
        vectors = self.adapter(self.table[ids]) * (ids != 0).unsqueeze(-1)  # (..., H)
        if self.ids is None:
            return vectors
        id_vectors = self.ids(ids)
        known = self.has_embedding[ids].unsqueeze(-1)
        return torch.where(known, vectors + id_vectors if self.add_id else vectors, id_vectors)

    def encode_embeddings(self, embeddings: torch.Tensor, known_ids: torch.Tensor) -> torch.Tensor:
        """(M, D) frozen embeddings -> (M, H) item vectors through the trained adapter, plus the ID vector of
        items the model knows (`known_ids` 1-based, 0 = an item it never saw: no ID vector)."""
        vectors = self.adapter(embeddings.float())
        return vectors + self.ids(known_ids) if self.ids is not None and self.add_id else vectors

    def all_items(self) -> torch.Tensor:
        """(N, H): every item's vector, row i for item id i + 1."""
        return self(torch.arange(1, self.num_items + 1, device=next(self.parameters()).device))


class Whiten(nn.Module):
    """Fixed PCA whitening (from the embedding table), then a trainable linear map.

    The whitening is saved with the weights: recomputed from another table (a catalog with new items) its
    eigenvectors can flip sign or turn, and the trained linear map would read scrambled coordinates.
    """

    def __init__(self, mean: torch.Tensor, matrix: torch.Tensor, hidden_size: int) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("matrix", matrix)
        self.linear = nn.Linear(matrix.shape[1], hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear((x - self.mean) @ self.matrix)
