"""Teacher-forced text loss of a frozen causal LM behind a soft prefix, with logits for text positions only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def token_nll(lm: nn.Module, prefix: torch.Tensor | None, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token negative log-likelihood of `ids` given `prefix`, zero where a token is not scored.

    Args:
        lm: a causal LM (`get_decoder`, `get_input_embeddings`, `get_output_embeddings`).
        prefix: (B, k, H) soft tokens put before the text, or None for the text alone.
        ids, mask: (B, L) right-padded text tokens and their mask.
    Returns:
        (B, L) losses. Token j is predicted by the position before it: the last soft token for j = 0;
        without a prefix token 0 has no context and is not scored. Only scored positions go through the
        output layer, so no (B, T, vocab) logits tensor is ever built.
    """
    embeds = lm.get_input_embeddings()(ids)  # (B, L, H)
    k = 0 if prefix is None else prefix.shape[1]
    attention = mask
    if k:
        embeds = torch.cat([prefix.to(embeds.dtype), embeds], dim=1)  # (B, k+L, H)
        attention = torch.cat([mask.new_ones(mask.shape[0], k), mask], dim=1)
    # No KV cache: nothing is generated, and building one costs memory on every step.
    hidden = lm.get_decoder()(inputs_embeds=embeds, attention_mask=attention, use_cache=False).last_hidden_state
    scored = mask.bool().clone()
    if k:
        before = hidden[:, k - 1:k - 1 + ids.shape[1]]  # (B, L, H): the position predicting each text token
    else:
        scored[:, 0] = False
        before = torch.cat([hidden[:, :1], hidden[:, :-1]], dim=1)  # position 0 is a dummy, never scored
    logits = lm.get_output_embeddings()(before[scored]).float()  # (N, vocab)
    cap = getattr(lm.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    losses = torch.zeros(ids.shape, dtype=logits.dtype, device=ids.device)
    losses[scored] = F.cross_entropy(logits, ids[scored], reduction="none")
    return losses
