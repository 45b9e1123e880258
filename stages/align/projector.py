"""SAID's projector: a trainable vector per item, mapped by a small MLP to k soft tokens for a frozen LM."""

from __future__ import annotations

import math

import torch
from torch import nn


class SAIDProjector(nn.Module):
    """Item index -> k soft-token vectors at the scale of the LM's own token embeddings.

    Each soft token is RMS-normalised and multiplied by `token_rms`, the typical RMS of the LM's input
    embeddings (as `get_input_embeddings()(ids)` returns them, so a model that scales embeddings itself,
    like Gemma's sqrt(hidden), is matched too); a prefix far off that scale is out of the LM's distribution.
    """

    def __init__(self, num_items: int, item_dim: int, width: int, soft_tokens: int, hidden: int,
                 token_rms: float) -> None:
        super().__init__()
        self.soft_tokens, self.hidden = soft_tokens, hidden
        self.items = nn.Embedding(num_items, item_dim)
        self.mlp = nn.Sequential(nn.Linear(item_dim, width), nn.GELU(), nn.Linear(width, soft_tokens * hidden))
        self.register_buffer("token_rms", torch.tensor(float(token_rms)))
        # How item_init: text places an item (zero until used): the catalog's mean token embedding and the
        # (hidden, item_dim) map onto its whitened principal components. Kept with the weights, so items
        # added by a later incremental run are placed the same way.
        self.register_buffer("text_mean", torch.zeros(hidden))
        self.register_buffer("text_basis", torch.zeros(hidden, item_dim))

    @torch.no_grad()
    def init_from_text(self, rows: torch.Tensor, means: torch.Tensor) -> None:
        """Start items `rows` from their texts: `means` (R, hidden) are their mean input-token embeddings.

        The first call fits the principal components on these items; every call projects onto them, each
        component scaled to unit variance (the scale of the default normal start).
        """
        means = means.float()
        if not self.text_basis.any():
            self.text_mean.copy_(means.mean(dim=0))
            _, spread, directions = torch.linalg.svd(means - self.text_mean, full_matrices=False)
            k = min(self.items.embedding_dim, len(directions))
            std = spread[:k] / math.sqrt(max(len(means) - 1, 1))
            self.text_basis[:, :k] = directions[:k].T / std.clamp_min(1e-6)
        self.items.weight[rows] = (means - self.text_mean) @ self.text_basis

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.soft_tokens_of(self.mlp(self.items(rows)))

    def soft_tokens_of(self, mapped: torch.Tensor) -> torch.Tensor:
        """The MLP's output (B, k*H) as k soft tokens (B, k, H) at the LM's token scale (training calls the MLP
        itself, wrapped for synchronisation, on its own rows of the item table)."""
        x = mapped.view(-1, self.soft_tokens, self.hidden)
        rms = x.pow(2).mean(dim=-1, keepdim=True).add(1e-6).sqrt()
        return x / rms * self.token_rms


@torch.no_grad()
def token_rms(embedding: nn.Module, vocab_size: int, chunk: int = 8192) -> float:
    """Mean RMS of the token embeddings the LM actually feeds its first layer, over the whole vocabulary."""
    device = next(embedding.parameters()).device
    total = 0.0
    for start in range(0, vocab_size, chunk):
        ids = torch.arange(start, min(start + chunk, vocab_size), device=device)
        total += embedding(ids).float().pow(2).mean(dim=-1).sqrt().sum().item()
    return total / vocab_size


def pool(soft: torch.Tensor, how: str) -> torch.Tensor:
    """(B, k, H) soft tokens -> one vector per item: their mean (B, H) or their concatenation (B, k*H)."""
    return soft.mean(dim=1) if how == "mean" else soft.flatten(1)
