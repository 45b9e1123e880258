"""Recformer pretraining: masked-language modelling + item-item contrastive loss, under Accelerate.

An example is a prefix of a user's train sequence (as the encoder reads it, most recent first) and
the item that came next. Each step: the masked sequence gives the MLM loss and the sequence vector;
the next item is encoded alone; the contrastive loss scores each sequence against every next item in
the global batch (all processes), cosine / temperature, the true next item being the positive.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader
from transformers import get_constant_schedule_with_warmup

from pipeline.config import RecformerConfig, RecformerPretrainConfig
from pipeline.errors import BadInput
from pipeline.events import Tracker, emit
from stages.recformer import build
from stages.recformer.data import Examples, load_corpus
from stages.recformer.inputs import VALUE, SequenceFormat
from stages.recformer.model import RecformerEncoder, RecformerForPretraining

IGNORE = -100


def mask_tokens(input_ids: torch.Tensor, token_type_ids: torch.Tensor, mask_id: int, vocab_size: int,
                probability: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking over value tokens only: keys repeat in every item and would teach nothing.

    Returns (masked ids, labels): labels hold the original id where a token was chosen, else -100;
    of the chosen tokens 80% become [MASK], 10% a random token, 10% stay.
    """
    chosen = (torch.rand(input_ids.shape, generator=generator) < probability) & (token_type_ids == VALUE)
    labels = torch.where(chosen, input_ids, IGNORE)
    draw = torch.rand(input_ids.shape, generator=generator)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator)
    masked = torch.where(chosen & (draw < 0.8), mask_id, input_ids)
    masked = torch.where(chosen & (draw >= 0.8) & (draw < 0.9), random_ids, masked)
    return masked, labels


class PretrainCollator:
    """Example indices -> masked sequences, next items as one-item sequences, MLM labels, target ids."""

    def __init__(self, fmt: SequenceFormat, examples: Examples, mask_id: int, vocab_size: int,
                 mlm_probability: float, seed: int) -> None:
        self.fmt, self.examples = fmt, examples
        self.mask_id, self.vocab_size, self.mlm_probability = mask_id, vocab_size, mlm_probability
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, indices: Sequence[int]) -> dict:
        sequences = self.fmt.batch([self.examples.history(e, self.fmt.max_items) for e in indices])
        targets = self.examples.items[self.examples.target[list(indices)]]
        sequences["input_ids"], labels = mask_tokens(sequences["input_ids"], sequences["token_type_ids"],
                                                     self.mask_id, self.vocab_size, self.mlm_probability,
                                                     self.generator)
        return {"sequences": sequences, "items": self.fmt.item_batch(targets),
                "mlm_labels": labels, "targets": torch.from_numpy(targets)}


def gather_with_local_grad(accelerator: Accelerator, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every process's rows (P*B, ...) with this process's own rows still carrying gradient; and where they start.

    `accelerator.gather` returns constants; the local slice is put back so gradients reach this
    process's encoder pass (the others' passes get theirs on their own process, DDP averages).
    """
    if accelerator.num_processes == 1:
        return x, 0
    everyone = accelerator.gather(x.detach())
    start = accelerator.process_index * x.shape[0]
    return torch.cat([everyone[:start], x, everyone[start + x.shape[0]:]]), start


def item_item_loss(seq: torch.Tensor, items: torch.Tensor, seq_targets: torch.Tensor, item_targets: torch.Tensor,
                   first: int, temperature: float) -> torch.Tensor:
    """Cross-entropy of each sequence (B, H) against all next items (N, H); sequence b's positive is row first + b.

    Another row holding the same item as the positive is not a negative: it is masked out.
    """
    logits = nn.functional.normalize(seq, dim=-1) @ nn.functional.normalize(items, dim=-1).T / temperature  # (B, N)
    positives = first + torch.arange(len(seq), device=seq.device)  # (B,)
    duplicate = seq_targets[:, None] == item_targets[None, :]  # (B, N)
    duplicate[torch.arange(len(seq)), positives] = False
    return nn.functional.cross_entropy(logits.masked_fill(duplicate, float("-inf")), positives)


def adamw(model: nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with no decay on biases and LayerNorm weights (every 1-d parameter)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=learning_rate)


def pretrain(encoder: RecformerEncoder, fmt: SequenceFormat, examples: Examples, mask_id: int, temperature: float,
             config: RecformerPretrainConfig,
             accelerator: Accelerator) -> tuple[RecformerForPretraining, list[dict[str, float]]]:
    """Train `encoder` (in place) with a fresh MLM head; returns the unwrapped model and per-step losses.

    The head's activation and LayerNorm epsilon follow the backbone's, as BERT's own head does.
    """
    set_seed(config.seed)
    model = RecformerForPretraining(encoder, encoder.backbone_config.hidden_act, encoder.backbone_config.layer_norm_eps)
    collate = PretrainCollator(fmt, examples, mask_id, encoder.word_embeddings.num_embeddings,
                               config.mlm_probability, config.seed + accelerator.process_index)
    loader = DataLoader(range(len(examples)), batch_size=config.batch_size, shuffle=True, drop_last=True,
                        collate_fn=collate, generator=torch.Generator().manual_seed(config.seed))
    optimizer = adamw(model, config.learning_rate, config.weight_decay)
    wrapped, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    # Not prepared: Accelerate would step it once per process, and warmup counts optimizer steps.
    schedule = get_constant_schedule_with_warmup(optimizer, config.warmup_steps)
    if len(loader) == 0:
        raise BadInput(f"recformer.pretrain.batch_size: {config.batch_size} per process exceeds the "
                       f"{len(examples)} training examples")
    total = len(loader) * config.epochs if config.max_steps is None else min(config.max_steps, len(loader) * config.epochs)
    history: list[dict[str, float]] = []
    wrapped.train()
    with Tracker("recformer pretraining", total, "steps") as tracker:
        for _ in range(config.epochs):
            for batch in loader:
                seq, items, mlm = wrapped(batch["sequences"], batch["items"], batch["mlm_labels"])
                all_items, first = gather_with_local_grad(accelerator, items)
                all_targets, _ = gather_with_local_grad(accelerator, batch["targets"])
                contrastive = item_item_loss(seq, all_items, batch["targets"], all_targets, first, temperature)
                loss = contrastive + config.mlm_weight * mlm
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(wrapped.parameters(), config.max_grad_norm)
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
                history.append({"loss": loss.item(), "contrastive": contrastive.item(), "mlm": mlm.item(), "lr": lr})
                tracker.advance(1, loss=f"{history[-1]['loss']:.3f}")
                if len(history) >= total:
                    return accelerator.unwrap_model(wrapped), history
    return accelerator.unwrap_model(wrapped), history


def run_pretraining(config: RecformerConfig, dataset_dirs: Sequence[Path],
                    accelerator: Accelerator) -> tuple[RecformerForPretraining, list[dict[str, float]]]:
    """Load the configured model and the datasets' train splits, then pretrain; nothing is written."""
    tokenizer = build.load_tokenizer(config)
    encoder = build.load_encoder(config)
    items, splits = load_corpus(dataset_dirs, config.attributes, tokenizer, config.max_attribute_tokens, ["train"])
    examples = splits["train"]
    emit("recformer_corpus", f"pretraining on {len(examples):,} examples over {len(items):,} items",
         examples=len(examples), items=len(items))
    return pretrain(encoder, build.sequence_format(items, tokenizer, config), examples, tokenizer.mask_token_id,
                    config.temperature, config.pretrain, accelerator)
