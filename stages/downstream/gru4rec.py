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
        """items: (B, L, H); padding: (B, L) bool -> (B, L, H) states (padding slots hold any value).

        Histories come right-aligned. Fed as they are, each left padding step would move the GRU's start
        state (its biases act on a zero input), so a history would read differently alone and in a batch of
        longer ones, in training and in evaluation. Each row is rolled to start at slot 0, where the GRU
        starts from the zero state as RecBole's left-aligned sequences do; the padding then trails the
        history, which a causal GRU never reads back, and the states are rolled back into place.
        """
        length = padding.shape[1]
        start = padding.sum(dim=1, keepdim=True)  # (B, 1) padding slots before each history
        slots = torch.arange(length, device=padding.device)[None]  # (1, L)
        states, _ = self.gru(self.dropout(roll_rows(items, (slots + start) % length)))  # (B, L, H) left-aligned
        return self.project(roll_rows(states, (slots - start) % length))


def roll_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x: (B, L, H), index: (B, L) -> (B, L, H) with row b's slot t taken from slot index[b, t]."""
    return x.gather(1, index.unsqueeze(-1).expand_as(x))
