"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention over a user's item sequence.

Position t's output summarises items 0..t and is trained to score item t + 1, so one forward pass gives a
training target at every position of the sequence.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn


def causal_mask(padding: torch.Tensor, heads: int) -> torch.Tensor:
    """(B * heads, L, L) bool, True = may not attend: future positions and padding keys.

    A query may always attend to itself, so fully padded rows (left padding) never produce NaN.
    """
    length = padding.shape[1]
    future = torch.ones(length, length, dtype=torch.bool, device=padding.device).triu(1)  # (L, L)
    blocked = future[None] | padding[:, None, :]  # (B, L, L)
    blocked &= ~torch.eye(length, dtype=torch.bool, device=padding.device)[None]
    return blocked.repeat_interleave(heads, dim=0)


class SASRec(nn.Module):
    """Args:
        hidden_size: H, width of item vectors and of the Transformer.
        layers: Transformer blocks.
        heads: attention heads; must divide H.
        dropout: on the input and inside each block.
        max_length: the longest history.
        feedforward_size: width of each block's feed-forward layer (4 x H in the original Transformer;
            RecBole's SASRec uses 256 whatever H is, so a matched comparison must be able to set it).
        norm: "pre" normalises each sub-layer's input and the final states; "post" normalises after each
            residual sum (BERT, RecBole), whose last block already ends in a LayerNorm.
        positions: "newest" counts learned positions back from the most recent item, which always sits at the
            last one (the original SASRec's left-padded layout). "oldest" counts them from the window's first
            item (RecBole, GPT): then the history behind an intermediate training target carries the same
            positions as a history of that length at inference.
    """

    def __init__(self, hidden_size: int, layers: int, heads: int, dropout: float, max_length: int,
                 feedforward_size: int | None = None, norm: Literal["pre", "post"] = "pre",
                 positions: Literal["newest", "oldest"] = "newest") -> None:
        super().__init__()
        if hidden_size % heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by heads {heads}")
        self.heads = heads
        self.count_from_oldest = positions == "oldest"
        self.positions = nn.Embedding(max_length, hidden_size)
        nn.init.normal_(self.positions.weight, std=0.02)  # the scale of ID vectors; N(0, 1) would drown them
        self.norm_in = nn.LayerNorm(hidden_size)  # item vectors from an adapter come at any scale
        self.dropout = nn.Dropout(dropout)
        block = nn.TransformerEncoderLayer(hidden_size, heads, dim_feedforward=feedforward_size or 4 * hidden_size, dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=norm == "pre")
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden_size) if norm == "pre" else nn.Identity()

    def position_ids(self, padding: torch.Tensor) -> torch.Tensor:
        """(B, L) position of each slot of left-padded windows (padding slots get any valid id; they are masked)."""
        if self.count_from_oldest:
            return ((~padding).cumsum(dim=1) - 1).clamp(min=0)
        # The last item is always position max_length - 1, however long the window is.
        length, last = padding.shape[1], self.positions.num_embeddings
        return torch.arange(last - length, last, device=padding.device).expand_as(padding)

    def forward(self, items: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """items: (B, L, H) item vectors; padding: (B, L) bool, True at padding -> (B, L, H) states."""
        x = self.dropout(self.norm_in(items + self.positions(self.position_ids(padding))))  # (B, L, H)
        x = x * ~padding.unsqueeze(-1)
        x = self.blocks(x, mask=causal_mask(padding, self.heads))  # (B, L, H)
        return self.norm(x)
