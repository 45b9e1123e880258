"""The frozen-encoder baseline: an item's vector is the mean of the encoder's last hidden states over its text."""

from __future__ import annotations

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

from stages.align.dist import gather_rows, my_rows, progress
from stages.align.tokens import Tokens, collate


@torch.no_grad()
def mean_pooled(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L) ids and mask -> (B, H): last hidden states averaged over the real (unpadded) tokens."""
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, H)
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1)


def encode(accelerator: Accelerator, model: nn.Module, tokens: Tokens, batch_size: int, pad_id: int) -> np.ndarray:
    """Every item's vector, (items, H) on every process; each process encodes its share, in length order.

    Only one batch of activations and the finished vectors are ever held, so memory stays bounded.
    """
    total = len(tokens.lengths)
    mine = my_rows(accelerator, np.arange(total))
    mine = mine[np.argsort(tokens.lengths[mine], kind="stable")]  # similar lengths together: little padding
    model.to(accelerator.device)
    vectors = []
    with progress(accelerator, "embedding items", total, "items") as bar:
        for start in range(0, len(mine), batch_size):
            batch = mine[start:start + batch_size]
            ids, mask = (t.to(accelerator.device) for t in collate(tokens, batch, pad_id))
            with accelerator.autocast():
                vectors.append(mean_pooled(model, ids, mask).float().cpu())
            bar.advance(len(batch) * accelerator.num_processes)
    width = model.config.hidden_size
    local = torch.cat(vectors) if vectors else torch.zeros((0, width))
    return gather_rows(accelerator, mine, local, total)
