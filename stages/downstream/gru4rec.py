"""GRU4Rec (Hidasi et al., ICLR 2016; the RecBole variant): a GRU over the item sequence.

The recurrent state after item t is projected back to the item space to score item t + 1, so every
position is a training target in one pass.
"""

from __future__ import annotations

import torch
from torch import nn


class GRU4Rec(nn.Module):
    """Args:
        hidden_size: H, width of item vectors and of the GRU state.
        layers: stacked GRU layers.
        dropout: on the input item vectors (and between GRU layers when there are several).
    """

    def __init__(self, hidden_size: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(hidden_size, hidden_size, num_layers=layers, batch_first=True,
                          dropout=dropout if layers > 1 else 0.0)
        self.project = nn.Linear(hidden_size, hidden_size)

    def forward(self, items: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """items: (B, L, H); padding: (B, L) bool -> (B, L, H) states.

        Histories are right-aligned, so the left padding (zero vectors) only moves the starting state.
        """
        x = self.dropout(items * ~padding.unsqueeze(-1))
        states, _ = self.gru(x)  # (B, L, H)
        return self.project(states)
