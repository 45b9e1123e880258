"""The frozen-encoder baseline: an item's vector is the mean of the encoder's last hidden states over its text."""

from __future__ import annotations

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

from stages.align.dist import my_range, progress
from stages.align.tokens import Tokens, collate


@torch.no_grad()
def mean_pooled(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L) ids and mask -> (B, H): last hidden states averaged over the real (unpadded) tokens."""
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, H)
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1)


def encode(accelerator: Accelerator, model: nn.Module, tokens: Tokens, batch_size: int, pad_id: int
           ) -> tuple[range, np.ndarray]:
    """This process's share of the items and their vectors (share, H) in row order; each process encodes its
    share in length order.

    Only one batch of activations and the finished vectors of the share are ever held, so memory stays bounded.
    """
    mine = my_range(accelerator, len(tokens.lengths))
    order = np.argsort(tokens.lengths[mine.start:mine.stop], kind="stable")  # similar lengths together: little padding
    model.to(accelerator.device)
    vectors = np.zeros((len(mine), model.config.hidden_size), np.float32)
    with progress(accelerator, "embedding items", len(tokens.lengths), "items") as bar:
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            ids, mask = (t.to(accelerator.device) for t in collate(tokens, batch + mine.start, pad_id))
            with accelerator.autocast():
                vectors[batch] = mean_pooled(model, ids, mask).float().cpu().numpy()
            bar.advance(len(batch) * accelerator.num_processes)
    return mine, vectors
