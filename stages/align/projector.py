"""SAID's projector: a small MLP that maps an item's trainable vector to k soft tokens for a frozen LM."""

from __future__ import annotations

import math

import torch
from torch import nn


class SAIDProjector(nn.Module):
    """Item vector -> k soft-token vectors at the scale of the LM's own token embeddings.

    Each soft token is RMS-normalised and multiplied by `token_rms`, the typical RMS of the LM's input
    embeddings (as `get_input_embeddings()(ids)` returns them, so a model that scales embeddings itself,
    like Gemma's sqrt(hidden), is matched too); a prefix far off that scale is out of the LM's distribution.
    The item table is not part of it: each process holds only its own rows (`said.OwnItems`), while this
    module, the part every process shares, is the same small size on all of them.
    """

    def __init__(self, item_dim: int, width: int, soft_tokens: int, hidden: int, token_rms: float) -> None:
        super().__init__()
        self.soft_tokens, self.hidden = soft_tokens, hidden
        self.mlp = nn.Sequential(nn.Linear(item_dim, width), nn.GELU(), nn.Linear(width, soft_tokens * hidden))
        self.register_buffer("token_rms", torch.tensor(float(token_rms)))
        # How item_init: text places an item (zero until used): the mean token embedding of a sample of the
        # catalog's items and the (hidden, item_dim) map onto their whitened principal components. Kept with the
        # weights, so items added by a later incremental run are placed the same way.
        self.register_buffer("text_mean", torch.zeros(hidden))
        self.register_buffer("text_basis", torch.zeros(hidden, item_dim))

    @property
    def item_dim(self) -> int:
        return self.mlp[0].in_features

    @property
    def places_by_text(self) -> bool:
        """Whether the text map is set (fitted here, or taken from a published run)."""
        return bool(self.text_basis.any())

    @torch.no_grad()
    def fit_text_basis(self, means: torch.Tensor) -> None:
        """Fit the text map on `means` (R, hidden), mean input-token embeddings of a sample of items: their
        principal components, each scaled to unit variance (the scale of the default normal start)."""
        means = means.float()
        self.text_mean.copy_(means.mean(dim=0))
        _, spread, directions = torch.linalg.svd(means - self.text_mean, full_matrices=False)
        k = min(self.item_dim, len(directions))
        std = spread[:k] / math.sqrt(max(len(means) - 1, 1))
        self.text_basis[:, :k] = directions[:k].T / std.clamp_min(1e-6)

    @torch.no_grad()
    def text_start(self, means: torch.Tensor) -> torch.Tensor:
        """The start vectors (R, item_dim) of items whose mean input-token embeddings are `means` (R, hidden)."""
        return (means.float() - self.text_mean) @ self.text_basis

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        """Item vectors (B, item_dim) -> their soft tokens (B, k, H)."""
        return self.soft_tokens_of(self.mlp(vectors))

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
