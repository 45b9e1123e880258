"""Several models as one (`downstream.model.members`): each member has its own item side and sequence model,
starts from its own weights and draws its own dropout, and is trained by its own loss on the same batches.

Members make different errors, so the sum of their scores ranks better than any one of them (a seed ensemble,
measured in docs/defaults.md). The sum of the members' dot products is one dot product of their concatenated
user and item vectors: evaluation, `recommend` and the item index see one model members x hidden_size wide,
and only the loss (`Objective`) splits the vectors back into members.
"""

from __future__ import annotations

import torch
from torch import nn

from stages.downstream.item_encoder import ItemEncoder


class MemberItems(nn.Module):
    """Item encoders side by side: an item's vector is their outputs concatenated, member by member. They read
    one frozen embedding table (`ItemEncoder.share_table`), the first member's."""

    def __init__(self, members: list[ItemEncoder]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.num_items = members[0].num_items
        self.uses_embeddings = members[0].uses_embeddings

    @property
    def table(self) -> torch.Tensor:
        return self.members[0].table

    @property
    def has_embedding(self) -> torch.Tensor:
        return self.members[0].has_embedding

    @property
    def input_dim(self) -> int | None:
        return self.members[0].input_dim

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.cat([member(ids) for member in self.members], dim=-1)

    def encode_embeddings(self, embeddings: torch.Tensor, known_ids: torch.Tensor) -> torch.Tensor:
        return torch.cat([member.encode_embeddings(embeddings, known_ids) for member in self.members], dim=-1)

    def all_items(self) -> torch.Tensor:
        return torch.cat([member.all_items() for member in self.members], dim=-1)


class MemberSequences(nn.Module):
    """Sequence models side by side: member k reads the k-th block of every item vector and writes the k-th
    block of every state."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, items: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        blocks = items.chunk(len(self.members), dim=-1)
        return torch.cat([member(block, padding) for member, block in zip(self.members, blocks)], dim=-1)
