"""The item side: a frozen LM embedding through a trainable adapter, an optional ID vector, or IDs alone.

Row 0 of every table is padding and always maps to the zero vector.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def whitening(table: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and PCA-whitening matrix of the rows of `table` (N, D): (x - mean) @ W has identity covariance."""
    mean = table.mean(dim=0)
    centred = table - mean
    cov = centred.T @ centred / max(len(table) - 1, 1)  # (D, D)
    values, vectors = torch.linalg.eigh(cov.double())
    return mean, (vectors / torch.sqrt(values.clamp_min(0) + eps)).float()


ID_INIT_STD = 0.02  # RecBole's SASRec initialises its item vectors normal with this std
SCALE_SAMPLE = 8192  # rows an adapter's starting scale is measured on


def _id_table(num_items: int, hidden_size: int) -> nn.Embedding:
    """Trainable ID vectors, initialised as in RecBole's SASRec (normal, std 0.02); row 0 stays zero."""
    table = nn.Embedding(num_items + 1, hidden_size, padding_idx=0)
    nn.init.normal_(table.weight, std=ID_INIT_STD)
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
        adapter: "linear" | "mlp" | "whiten" (PCA whitening computed from `embeddings`, then linear) | "init":
            the embeddings only start the ID vectors (`semantic_start`); nothing else reads them.
        id_embedding: add a trainable ID vector to every adapted embedding.
        freeze: keep `embeddings` fixed (stored outside the state dict); False trains them too.
        normalise: L2-normalise every output vector (scores by cosine, `downstream.model.temperature`).
    """

    def __init__(self, num_items: int, hidden_size: int, embeddings: torch.Tensor | None,
                 has_embedding: torch.Tensor | None, adapter: str, id_embedding: bool, freeze: bool,
                 normalise: bool = False) -> None:
        super().__init__()
        self.num_items = num_items
        self.normalise = normalise
        self.uses_embeddings = embeddings is not None
        if embeddings is None:
            self.ids = _id_table(num_items, hidden_size)
            return
        if embeddings.shape[0] != num_items:
            raise ValueError(f"embeddings have {embeddings.shape[0]} rows for {num_items} items")
        has = torch.ones(num_items, dtype=torch.bool) if has_embedding is None else has_embedding
        if adapter == "init":
            self.uses_embeddings = False
            self.ids = _id_table(num_items, hidden_size)
            with torch.no_grad():
                self.ids.weight[1:][has] = semantic_start(embeddings[has].float(), hidden_size)
            return
        padded = torch.cat([torch.zeros(1, embeddings.shape[1]), embeddings.float()])  # (N + 1, D)
        if freeze:
            self.register_buffer("table", padded, persistent=False)
        else:
            self.table = nn.Parameter(padded)
        self.register_buffer("has_embedding", torch.cat([torch.zeros(1, dtype=torch.bool), has]), persistent=False)
        self.add_id = id_embedding
        self.ids = _id_table(num_items, hidden_size) if id_embedding or not has.all() else None
        self.adapter = self._adapter(adapter, embeddings[has].float(), hidden_size)

    @staticmethod
    def _adapter(kind: str, rows: torch.Tensor, hidden_size: int) -> nn.Module:
        dim = rows.shape[1]
        if kind == "linear":
            adapter: nn.Module = nn.Linear(dim, hidden_size)
        elif kind == "mlp":
            adapter = nn.Sequential(nn.Linear(dim, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size))
        elif kind == "whiten":
            adapter = Whiten(*whitening(rows), hidden_size)
        else:
            raise ValueError(f"unknown adapter {kind!r}")
        return start_at_id_scale(adapter, rows)

    def share_table(self, other: ItemEncoder) -> None:
        """Read `other`'s frozen embedding table instead of this encoder's own copy (members of one model)."""
        if self.uses_embeddings and "table" in self._buffers:
            self.table = other.table

    @property
    def input_dim(self) -> int | None:
        """D of the embeddings this encoder was built for (None in ID-only mode)."""
        return int(self.table.shape[1]) if self.uses_embeddings else None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(...) int64 item ids -> (..., H) vectors; padding (0) gives zeros."""
        return self._normalised(self._vectors(ids))

    def _normalised(self, vectors: torch.Tensor) -> torch.Tensor:
        return F.normalize(vectors, dim=-1) if self.normalise else vectors

    def _vectors(self, ids: torch.Tensor) -> torch.Tensor:
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
        return self._normalised(vectors + self.ids(known_ids) if self.ids is not None and self.add_id else vectors)

    def all_items(self) -> torch.Tensor:
        """(N, H): every item's vector, row i for item id i + 1."""
        return self(torch.arange(1, self.num_items + 1, device=next(self.parameters()).device))


def semantic_start(rows: torch.Tensor, hidden_size: int) -> torch.Tensor:
    """(M, H) starting ID vectors from (M, D) embeddings: their top principal components, whitened and scaled to
    the ID vectors' std (random beyond D components). Similar items start close, and the model is then an
    ID-only model: its capacity, and where it converges, are ID-only SASRec's."""
    mean, matrix = whitening(rows)
    top = matrix.flip(1)[:, :hidden_size]  # eigh sorts ascending: the largest components first
    start = torch.randn(len(rows), hidden_size) * ID_INIT_STD
    start[:, :top.shape[1]] = (rows - mean) @ top * ID_INIT_STD
    return start


def start_at_id_scale(adapter: nn.Module, rows: torch.Tensor) -> nn.Module:
    """Scale the adapter's last linear layer so its outputs over `rows` start with the ID vectors' std.

    Item vectors are scored against the sequence model's normalised states, so their scale at the start sets
    how sharp the first softmax is. Whitened or raw LM vectors through a default-initialised layer come out
    tens of times larger than ID vectors (Scientific, whitened text vectors: std 0.6 against 0.02): the
    softmax starts saturated (loss above log N) and the adapter learns slower than ID vectors would.
    """
    last = [module for module in adapter.modules() if isinstance(module, nn.Linear)][-1]
    with torch.no_grad():
        std = float(adapter(rows[:SCALE_SAMPLE]).std())
        if std > 0:
            last.weight.mul_(ID_INIT_STD / std)
            last.bias.mul_(ID_INIT_STD / std)
    return adapter


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
