"""A Recformer encoder behind the `Recommender` interface, so evaluation and `recommend` use it unchanged.

Items are the rows of a fixed item table (the encoder's item vectors, L2-normalised); a user is their
history's texts read by the encoder; a score is the cosine of the two (the paper's ranking; the
temperature only scales the training softmax).
"""

from __future__ import annotations

import torch
from torch import nn

from stages.recformer.inputs import SequenceFormat
from stages.recformer.model import RecformerEncoder


class ItemTable(nn.Module):
    """The frozen (N, H) item vectors, as `Recommender.items` offers them."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", nn.functional.normalize(table.float(), dim=-1))

    def all_items(self) -> torch.Tensor:
        return self.table


class RecformerRecommender(nn.Module):
    """Args:
        encoder: the (fine-tuned) Recformer encoder.
        fmt: the dataset's item token cache and sequence format (catalog row i = item i + 1).
        table: (N, H) item vectors in catalog order.
    """

    def __init__(self, encoder: RecformerEncoder, fmt: SequenceFormat, table: torch.Tensor) -> None:
        super().__init__()
        self.encoder = encoder
        self.items = ItemTable(table)
        self.fmt = fmt

    def user_vectors(self, history: torch.Tensor) -> torch.Tensor:
        """(B, L) right-aligned 1-based item ids (0 = padding) -> (B, H) L2-normalised user vectors."""
        histories = [[item - 1 for item in row if item > 0] for row in history.tolist()]
        device = self.items.table.device
        batch = {name: value.to(device) for name, value in self.fmt.batch(histories).items()}
        return nn.functional.normalize(self.encoder(**batch).float(), dim=-1)

    def scores(self, history: torch.Tensor, item_vectors: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) histories -> (B, N) cosine scores of items 1..N (column j is item j + 1)."""
        table = self.items.all_items() if item_vectors is None else item_vectors
        return self.user_vectors(history) @ table.T
