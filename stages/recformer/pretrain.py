"""Recformer pretraining: masked-language modelling + item-item contrastive loss, under Accelerate.

An example is a prefix of a user's train sequence (as the encoder reads it, most recent first) and
the item that came next. Each step: the masked sequence gives the MLM loss and the sequence vector;
the next item is encoded alone; the contrastive loss scores each sequence against every next item in
the global batch (all processes), cosine / temperature, the true next item being the positive.

Resumable like SAID: batches are a pure function of (seed, epoch) and each step's masking of (seed,
process, step), so with a checkpoint folder every `checkpoint_every` steps (and the last) the state goes to
`<checkpoints>/step-N/` and a killed run continues from there to the same result.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import send_to_device, set_seed
from torch import nn
from transformers import get_constant_schedule_with_warmup

from pipeline.batching import shard
from pipeline.config import RecformerConfig, RecformerPretrainConfig
from pipeline.errors import BadInput
from pipeline.events import Tracker, emit
from stages import resume
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
                 mlm_probability: float) -> None:
        self.fmt, self.examples = fmt, examples
        self.mask_id, self.vocab_size, self.mlm_probability = mask_id, vocab_size, mlm_probability

    def __call__(self, indices: Sequence[int], generator: torch.Generator) -> dict:
        sequences = self.fmt.batch([self.examples.history(e, self.fmt.max_items) for e in indices])
        targets = self.examples.items[self.examples.target[list(indices)]]
        sequences["input_ids"], labels = mask_tokens(sequences["input_ids"], sequences["token_type_ids"],
                                                     self.mask_id, self.vocab_size, self.mlm_probability,
                                                     generator)
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


def adamw(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with no decay on biases and LayerNorm weights (every 1-d parameter)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=lr)


@dataclass
class Position:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch: int = 0  # batches of `epoch` done by this process
    # per step: step, epoch, loss, contrastive, mlm, lr, examples/s (all processes)
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int | None = None


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int, world: int) -> list[np.ndarray]:
    """This process's batches of example indices in `epoch`: full batches of a (seed, epoch) shuffle."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).numpy()
    batches = [order[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]
    return shard(batches, rank, world)


def masking_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """The masking draws of one step on one process, independent of how the run got there (resume)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0]))


def pretrain(encoder: RecformerEncoder, fmt: SequenceFormat, examples: Examples, mask_id: int, temperature: float,
             config: RecformerPretrainConfig, accelerator: Accelerator, checkpoints: Path | None = None,
             checkpoint_every: int = 0) -> tuple[RecformerForPretraining, Position]:
    """Train `encoder` (in place) with a fresh MLM head; returns the unwrapped model and where training ended
    (per-step losses in `history`).

    The head's activation and LayerNorm epsilon follow the backbone's, as BERT's own head does. With
    `checkpoints`, a complete checkpoint found there is resumed from.
    """
    set_seed(config.seed)
    model = RecformerForPretraining(encoder, encoder.backbone_config.hidden_act, encoder.backbone_config.layer_norm_eps)
    collate = PretrainCollator(fmt, examples, mask_id, encoder.word_embeddings.num_embeddings, config.mlm_probability)
    rank, world = accelerator.process_index, accelerator.num_processes

    def batches_of(epoch: int) -> list[np.ndarray]:
        return epoch_batches(len(examples), config.batch_size, config.seed, epoch, rank, world)

    per_epoch = len(batches_of(0))
    if per_epoch == 0:
        raise BadInput(f"recformer.pretrain.batch_size: {config.batch_size} per process exceeds the "
                       f"{len(examples)} training examples")
    total = per_epoch * config.epochs if config.max_steps is None else min(config.max_steps, per_epoch * config.epochs)
    optimizer = adamw(model, config.lr, config.weight_decay)
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    # Not prepared: Accelerate would step it once per process, and warmup counts optimizer steps.
    schedule = get_constant_schedule_with_warmup(optimizer, config.warmup_steps)
    parts = resume.Parts([wrapped], [optimizer], [schedule])
    position = Position()
    restored = resume.restore(accelerator, checkpoints, "step", parts) if checkpoints is not None else None
    if restored is not None:
        start, state = restored
        position = Position(**state)
        position.resumed_from = position.step
        emit("resumed", f"resumed Recformer pretraining from {start.name} (step {position.step} of {total})",
             step=position.step)
    wrapped.train()
    with Tracker("recformer pretraining", total, "steps") as tracker:
        tracker.resume_at(position.step)
        while position.step < total:
            batches = batches_of(position.epoch)
            for i in range(position.batch, len(batches)):
                started = time.perf_counter()
                batch = send_to_device(collate(batches[i].tolist(), masking_generator(config.seed, rank, position.step)),
                                       accelerator.device)
                seq, items, mlm = wrapped(batch["sequences"], batch["items"], batch["mlm_labels"])
                all_items, first = gather_with_local_grad(accelerator, items)
                all_targets, _ = gather_with_local_grad(accelerator, batch["targets"])
                contrastive = item_item_loss(seq, all_items, batch["targets"], all_targets, first, temperature)
                loss = contrastive + config.mlm_weight * mlm
                resume.stop_if_diverged(loss.item(), f"Recformer pretraining step {position.step + 1}")
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(wrapped.parameters(), config.max_grad_norm)
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
                position.step, position.batch = position.step + 1, i + 1
                seconds = max(time.perf_counter() - started, 1e-9)
                position.history.append({"step": position.step, "epoch": position.epoch + 1, "loss": loss.item(),
                                         "contrastive": contrastive.item(), "mlm": mlm.item(), "lr": lr,
                                         "examples_per_s": len(batches[i]) * world / seconds})
                tracker.advance(1, loss=f"{position.history[-1]['loss']:.3f}")
                if checkpoints is not None and checkpoint_every and (
                        position.step % checkpoint_every == 0 or position.step >= total):
                    resume.save(accelerator, checkpoints, "step", position.step, asdict(position), parts)
                if position.step >= total:
                    break
            else:
                position.epoch, position.batch = position.epoch + 1, 0
    return accelerator.unwrap_model(wrapped), position


def run_pretraining(config: RecformerConfig, dataset_dirs: Sequence[Path],
                    accelerator: Accelerator) -> tuple[RecformerForPretraining, Position]:
    """Load the configured model and the datasets' train splits, then pretrain; nothing is written."""
    tokenizer = build.load_tokenizer(config)
    encoder = build.load_encoder(config)
    items, splits = load_corpus(dataset_dirs, config.attributes, tokenizer, config.max_attribute_tokens, ["train"])
    examples = splits["train"]
    emit("recformer_corpus", f"pretraining on {len(examples):,} examples over {len(items):,} items",
         examples=len(examples), items=len(items))
    return pretrain(encoder, build.sequence_format(items, tokenizer, config), examples, tokenizer.mask_token_id,
                    config.temperature, config.pretrain, accelerator)
