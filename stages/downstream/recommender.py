"""A recommender = an item encoder + a sequence model; scores are dot products with every item's vector.

`build` maps `downstream.model` to the item side's flat constructor arguments; each kind in `kinds` builds its
own sequence model.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import ModelConfig
from stages.downstream.item_encoder import ItemEncoder
from stages.downstream.members import MemberItems, MemberSequences


class Recommender(nn.Module):
    """Args:
        items: maps item ids (1..N, 0 = padding) to (H,) vectors.
        sequence: maps (B, L, H) item vectors and a (B, L) padding mask to (B, L, H) user states.
        temperature: None scores by dot product; t scores by cosine / t: the states come out L2-normalised and
            divided by t, and `items` must give L2-normalised vectors.
        members: how many equal blocks every vector holds, one per member model (`stages.downstream.members`):
            a score is the sum of the members' scores, and each member is trained by its own loss.
    """

    def __init__(self, items: nn.Module, sequence: nn.Module, temperature: float | None = None,
                 members: int = 1) -> None:
        super().__init__()
        self.items = items
        self.sequence = sequence
        self.temperature = temperature
        self.members = members

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """(B, L) right-aligned item ids -> (B, L', H): state t predicts the item after position t.

        Columns that are padding in every row are dropped first (L' <= L), so a batch of short histories
        costs what its longest history costs, not max_length.
        """
        first = int((history != 0).any(dim=0).int().argmax()) if history.numel() else 0
        history = history[:, first:]
        states = self.sequence(self.items(history), history == 0)
        return states if self.temperature is None else F.normalize(states, dim=-1) / self.temperature

    def user_vectors(self, history: torch.Tensor) -> torch.Tensor:
        """(B, L) histories -> (B, H): the state after the last item, which scores the next one."""
        return self(history)[:, -1]

    def scores(self, history: torch.Tensor, item_vectors: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) histories -> (B, N) scores of items 1..N (column j is item j + 1)."""
        table = self.items.all_items() if item_vectors is None else item_vectors
        return self.user_vectors(history) @ table.T


def build(config: ModelConfig, sequence: Callable[[ModelConfig], nn.Module], num_items: int,
          embeddings: np.ndarray | None, has_embedding: np.ndarray | None) -> Recommender:
    """The sequence model `sequence` builds over the item side `config` describes: `embeddings` (N, D) in item
    order, or IDs alone when None; `config.members` of them side by side. The item side is built first, member
    by member: a seed gives the weights it always gave."""
    def item_side() -> ItemEncoder:
        return ItemEncoder(
            num_items, config.hidden_size,
            None if embeddings is None else torch.from_numpy(embeddings),
            None if has_embedding is None else torch.from_numpy(has_embedding),
            config.adapter, config.id_embedding, config.freeze_embeddings, normalise=config.temperature is not None)

    if config.members == 1:
        return Recommender(item_side(), sequence(config), config.temperature)
    items, sequences = [], []
    for _ in range(config.members):
        items.append(item_side())
        sequences.append(sequence(config))
        items[-1].share_table(items[0])  # before the next member is built: one copy of the table at a time
    return Recommender(MemberItems(items), MemberSequences(sequences), config.temperature, config.members)
