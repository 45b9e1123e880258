"""The Recformer encoder: a pretrained bidirectional Transformer behind Recformer's embedding layer.

Embedding = word + token position + token type (CLS/key/value/pad) + item position, then LayerNorm
and dropout. The word and token-position tables and the LayerNorm are the pretrained model's own; the
two new tables start so that the whole encoder reproduces the pretrained model exactly at step 0:
every token-type row is a copy of the pretrained type-0 row (what the model always saw), and the
item-position rows are zero (they add nothing until training gives them meaning).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask

from stages.recformer.inputs import PAD

N_TOKEN_TYPES = PAD + 1


class RecformerEncoder(nn.Module):
    """Sequences of item texts -> token states (B, L, H) and one vector per sequence (B, H).

    Args:
        backbone: a Hugging Face BERT/RoBERTa-style encoder (`.embeddings` with word / position / type
            tables and LayerNorm, `.encoder` the layer stack); its embeddings and layers are taken over.
        max_items: items per sequence; item positions 1..max_items (0 = CLS and padding).
        pooling: "cls" (the CLS token's state) or "mean" (over attended tokens).
    """

    def __init__(self, backbone: PreTrainedModel, max_items: int, pooling: str) -> None:
        super().__init__()
        embeddings, hidden = backbone.embeddings, backbone.config.hidden_size
        self.word_embeddings = embeddings.word_embeddings
        self.position_embeddings = embeddings.position_embeddings
        self.layer_norm = embeddings.LayerNorm
        self.dropout = nn.Dropout(backbone.config.hidden_dropout_prob)
        self.token_type_embeddings = nn.Embedding(N_TOKEN_TYPES, hidden)
        self.item_position_embeddings = nn.Embedding(max_items + 1, hidden)
        with torch.no_grad():
            pretrained_type = getattr(embeddings, "token_type_embeddings", None)
            self.token_type_embeddings.weight.zero_()
            if pretrained_type is not None:
                self.token_type_embeddings.weight += pretrained_type.weight[0]
            self.item_position_embeddings.weight.zero_()
        # RoBERTa numbers tokens from padding_idx + 1; BERT from 0 (it has no padding_idx attribute).
        self.position_offset = getattr(embeddings, "padding_idx", -1) + 1
        self.encoder = backbone.encoder
        self.backbone_config = backbone.config  # read by the attention-mask builder (attention implementation)
        self.pooling = pooling
        self.max_positions = backbone.config.max_position_embeddings - self.position_offset

    @property
    def hidden_size(self) -> int:
        return self.word_embeddings.embedding_dim

    @property
    def max_items(self) -> int:
        return self.item_position_embeddings.num_embeddings - 1

    def hidden_states(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
                      item_position_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """All token states (B, L, H); inputs are (B, L) as `SequenceFormat.batch` makes them."""
        length = input_ids.shape[1]
        positions = torch.arange(length, device=input_ids.device) + self.position_offset  # (L,)
        x = (self.word_embeddings(input_ids) + self.position_embeddings(positions)[None]
             + self.token_type_embeddings(token_type_ids) + self.item_position_embeddings(item_position_ids))
        x = self.dropout(self.layer_norm(x))  # (B, L, H)
        mask = create_bidirectional_mask(config=self.backbone_config, inputs_embeds=x, attention_mask=attention_mask)
        return self.encoder(x, attention_mask=mask).last_hidden_state

    def pool(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, H) token states -> (B, H) sequence vectors."""
        if self.pooling == "cls":
            return states[:, 0]
        weights = attention_mask.unsqueeze(-1).to(states.dtype)  # (B, L, 1)
        return (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
                item_position_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One vector per sequence (B, H); an item is encoded as a one-item sequence."""
        states = self.hidden_states(input_ids, token_type_ids, item_position_ids, attention_mask)
        return self.pool(states, attention_mask)


class MLMHead(nn.Module):
    """BERT's masked-LM head: dense + activation + LayerNorm, then a decoder tied to the word embeddings.

    Nothing here is pretrained for MiniLM: the transform and the bias start fresh; the decoder's weight
    *is* the encoder's word-embedding table, so the two stay one tensor through training.
    """

    def __init__(self, word_embeddings: nn.Embedding, hidden_act: str, layer_norm_eps: float) -> None:
        super().__init__()
        vocab, hidden = word_embeddings.weight.shape
        self.dense = nn.Linear(hidden, hidden)
        self.activation = ACT2FN[hidden_act]
        self.layer_norm = nn.LayerNorm(hidden, eps=layer_norm_eps)
        self.decoder = nn.Linear(hidden, vocab)
        self.decoder.weight = word_embeddings.weight
        nn.init.zeros_(self.decoder.bias)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """(N, H) states of masked tokens -> (N, V) vocabulary logits."""
        return self.decoder(self.layer_norm(self.activation(self.dense(states))))


class RecformerForPretraining(nn.Module):
    """Encoder + MLM head in one forward, so DDP sees every parameter used in a single call.

    The sequence vector comes from the masked sequence itself (one pass serves both losses); the
    next item is encoded unmasked, as a one-item sequence.
    """

    def __init__(self, encoder: RecformerEncoder, hidden_act: str, layer_norm_eps: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.mlm_head = MLMHead(encoder.word_embeddings, hidden_act, layer_norm_eps)

    def forward(self, sequences: dict[str, torch.Tensor], items: dict[str, torch.Tensor],
                mlm_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (sequence vectors (B, H), next-item vectors (B, H), MLM loss); labels -100 = not masked."""
        states = self.encoder.hidden_states(**sequences)  # (B, L, H)
        seq_vectors = self.encoder.pool(states, sequences["attention_mask"])
        item_vectors = self.encoder(**items)
        masked = mlm_labels != -100
        logits = self.mlm_head(states[masked])  # (N_masked, V): only masked tokens reach the big matmul
        mlm_loss = (nn.functional.cross_entropy(logits, mlm_labels[masked]) if masked.any()
                    else states.sum() * 0.0)
        return seq_vectors, item_vectors, mlm_loss
