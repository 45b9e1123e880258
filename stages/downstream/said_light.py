"""SAID's light downstream model (Hu et al., WWW 2024): the user is a pooling of their history's item
embeddings passed through a small MLP, matched against the next item's embedding.

The pooling is causal (position t pools items 0..t), so, like SASRec, one pass trains every position.
"""

from __future__ import annotations

import torch
from torch import nn


class SAIDLight(nn.Module):
    """Args:
        hidden_size: H, width of item vectors and of the MLP.
        layers: MLP layers after pooling (residual).
        dropout: on the input item vectors and inside the MLP.
        max_length: L, the longest history (attention pooling learns one vector per position).
        pooling: "mean" or "attention" (a learned query scores each history item).
    """

    def __init__(self, hidden_size: int, layers: int, dropout: float, max_length: int, pooling: str) -> None:
        super().__init__()
        if pooling not in ("mean", "attention"):
            raise ValueError(f"unknown pooling {pooling!r}")
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        if pooling == "attention":  # only then: parameters without gradients would stall DDP
            self.positions = nn.Embedding(max_length, hidden_size)
            nn.init.normal_(self.positions.weight, std=0.02)
            self.key = nn.Linear(hidden_size, hidden_size)
            self.query = nn.Parameter(torch.zeros(hidden_size))
        self.mlp = nn.ModuleList(nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.Dropout(dropout))
                                 for _ in range(layers))
        self.norm = nn.LayerNorm(hidden_size)

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, H) -> (B, L) unnormalised weight of each history item."""
        if self.pooling == "mean":
            return x.new_zeros(x.shape[:2])
        size = self.positions.num_embeddings  # right-aligned, as in SASRec
        positions = self.positions(torch.arange(size - x.shape[1], size, device=x.device))[None]  # (1, L, H)
        return torch.tanh(self.key(x + positions)) @ self.query  # (B, L)

    def forward(self, items: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """items: (B, L, H); padding: (B, L) bool -> (B, L, H) user states, position t from items 0..t."""
        length = items.shape[1]
        x = self.dropout(items)
        future = torch.ones(length, length, dtype=torch.bool, device=x.device).triu(1)  # (L, L)
        blocked = future[None] | padding[:, None, :]  # (B, L, L): query t, key j
        blocked &= ~torch.eye(length, dtype=torch.bool, device=x.device)[None]  # a padded row pools itself (zero)
        logits = self._scores(x)[:, None, :].masked_fill(blocked, float("-inf"))  # (B, L, L)
        pooled = torch.softmax(logits, dim=-1) @ x  # (B, L, H)
        for layer in self.mlp:
            pooled = pooled + layer(pooled)
        return self.norm(pooled)
