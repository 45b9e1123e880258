"""A recommender = an item encoder + a sequence model; scores are dot products with every item's vector.

`build` is the one place that maps `downstream.model` config to the models' flat constructor arguments.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from pipeline.config import ModelConfig
from stages.downstream.gru4rec import GRU4Rec
from stages.downstream.item_encoder import ItemEncoder
from stages.downstream.said_light import SAIDLight
from stages.downstream.sasrec import SASRec


class Recommender(nn.Module):
    """Args:
        items: maps item ids (1..N, 0 = padding) to (H,) vectors.
        sequence: maps (B, L, H) item vectors and a (B, L) padding mask to (B, L, H) user states.
    """

    def __init__(self, items: ItemEncoder, sequence: nn.Module) -> None:
        super().__init__()
        self.items = items
        self.sequence = sequence

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """(B, L) right-aligned item ids -> (B, L', H): state t predicts the item after position t.

        Columns that are padding in every row are dropped first (L' <= L), so a batch of short histories
        costs what its longest history costs, not max_length.
        """
        first = int((history != 0).any(dim=0).int().argmax()) if history.numel() else 0
        history = history[:, first:]
        return self.sequence(self.items(history), history == 0)

    def user_vectors(self, history: torch.Tensor) -> torch.Tensor:
        """(B, L) histories -> (B, H): the state after the last item, which scores the next one."""
        return self(history)[:, -1]

    def scores(self, history: torch.Tensor, item_vectors: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) histories -> (B, N) scores of items 1..N (column j is item j + 1)."""
        table = self.items.all_items() if item_vectors is None else item_vectors
        return self.user_vectors(history) @ table.T


SEQUENCE_MODELS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "sasrec": lambda c: SASRec(c.hidden_size, c.layers, c.heads, c.dropout, c.max_length,
                               c.feedforward_size or 4 * c.hidden_size, c.norm, c.positions),
    "gru4rec": lambda c: GRU4Rec(c.hidden_size, c.layers, c.dropout),
    "said_light": lambda c: SAIDLight(c.hidden_size, c.layers, c.dropout, c.max_length, c.pooling),
}


def sequence_model(config: ModelConfig) -> nn.Module:
    """The sequence model `downstream.model.kind` names, from its flat arguments.

    Raises:
        ValueError: a kind with no sequence model here (recformer has its own training and model).
    """
    if config.kind not in SEQUENCE_MODELS:
        raise ValueError(f"downstream.model.kind {config.kind!r} has no sequence model here "
                         f"(known: {', '.join(SEQUENCE_MODELS)})")
    return SEQUENCE_MODELS[config.kind](config)


def build(config: ModelConfig, num_items: int, embeddings: np.ndarray | None, has_embedding: np.ndarray | None) -> Recommender:
    """The recommender `config` describes, over `embeddings` (N, D) in item order, or IDs alone when None."""
    items = ItemEncoder(
        num_items, config.hidden_size,
        None if embeddings is None else torch.from_numpy(embeddings),
        None if has_embedding is None else torch.from_numpy(has_embedding),
        config.adapter, config.id_embedding, config.freeze_embeddings)
    return Recommender(items, sequence_model(config))
