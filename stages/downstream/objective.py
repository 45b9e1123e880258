"""Training losses over every position of a batch of sequences at once.

Wrapped as a module so that Accelerate (DDP) sees one forward pass that returns the loss.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from stages.downstream.recommender import Recommender


class Objective(nn.Module):
    """Args:
        recommender: the model being trained.
        loss: "ce" (softmax over all items), "sampled" (softmax over the target and shared sampled
            negatives) or "bce" (target vs. each negative, SASRec's original loss).
        negatives: how many negatives are drawn per batch (shared by all its positions).
        sampling: (N,) probability of drawing each item as a negative, or None for uniform. With a
            non-uniform draw the sampled softmax subtracts log(K q(item)) from every logit (the logQ
            correction), so it estimates the full softmax instead of a popularity-tilted one.
        targets_per_batch: the mean number of targets in a batch over an epoch. A batch's summed loss is
            divided by it, not by its own target count, so every target weighs the same whatever batch
            it lands in. Length-batched batches hold from one to max_length targets per sequence; a
            per-batch mean would give a target in a batch of short histories many times the weight of
            one in a batch of long ones.
    """

    def __init__(self, recommender: Recommender, loss: str, negatives: int, targets_per_batch: float,
                 sampling: torch.Tensor | None = None) -> None:
        super().__init__()
        if loss not in ("ce", "sampled", "bce"):
            raise ValueError(f"unknown loss {loss!r}")
        self.recommender = recommender
        self.loss = loss
        self.negatives = negatives
        self.targets_per_batch = targets_per_batch
        self.register_buffer("sampling", sampling, persistent=False)
        self.register_buffer("log_q", None if sampling is None else torch.log(sampling * negatives), persistent=False)

    def _draw(self, device: torch.device) -> torch.Tensor:
        """(K,) 1-based negative item ids, uniform or from `sampling`."""
        if self.sampling is None:
            return torch.randint(1, self.recommender.items.num_items + 1, (self.negatives,), device=device)
        return torch.multinomial(self.sampling, self.negatives, replacement=True) + 1

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """inputs, targets: (B, L) right-aligned item ids, targets[t] follows inputs[t]; 0 = padding.

        A model of several members is trained by the mean of their losses, each member scoring with its own
        block of the vectors: members trained together learn as each would alone.
        """
        states = self.recommender(inputs)  # (B, L', H): leading all-padding columns dropped
        cut = inputs.shape[1] - states.shape[1]
        real = inputs[:, cut:] != 0  # a target counts only after a real item (right-aligned: targets are real too)
        states, positives = states[real], targets[:, cut:][real]  # (P, H), (P,)
        items = self.recommender.items
        if self.loss == "ce":
            losses = [self._full(*member, positives) for member in self._by_member(states, items.all_items())]
        else:
            negatives = self._draw(states.device)  # (K,)
            losses = [self._sampled(*member, positives, negatives)
                      for member in self._by_member(states, items(positives), items(negatives))]
        return sum(losses) / (self.targets_per_batch * len(losses))

    def _by_member(self, *vectors: torch.Tensor) -> Iterator[tuple[torch.Tensor, ...]]:
        """Each member's block of every (..., members x H) tensor, member by member."""
        return zip(*(tensor.chunk(self.recommender.members, dim=-1) for tensor in vectors))

    def _full(self, states: torch.Tensor, table: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        logits = states @ table.T  # (P, N)
        return F.cross_entropy(logits, positives - 1, reduction="sum")

    def _sampled(self, states: torch.Tensor, positive_vectors: torch.Tensor, negative_vectors: torch.Tensor,
                 positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """The summed loss of (P, H) states against their (P, H) targets and (K, H) shared negatives."""
        positive_logits = (states * positive_vectors).sum(-1, keepdim=True)  # (P, 1)
        negative_logits = states @ negative_vectors.T  # (P, K)
        negative_logits = negative_logits.masked_fill(negatives[None] == positives[:, None], float("-inf"))
        if self.loss == "sampled" and self.log_q is not None:
            positive_logits = positive_logits - self.log_q[positives - 1, None]
            negative_logits = negative_logits - self.log_q[negatives - 1][None]
        if self.loss == "sampled":
            logits = torch.cat([positive_logits, negative_logits], dim=1)  # (P, 1 + K)
            return F.cross_entropy(logits, torch.zeros_like(positives), reduction="sum")
        negative_loss = -F.logsigmoid(-negative_logits)  # (P, K); collisions give -log(1) = 0
        return (-F.logsigmoid(positive_logits).squeeze(1) + negative_loss.mean(dim=1)).sum()
