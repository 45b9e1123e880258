"""SAID training: only the projector learns; the frozen LM reproduces each item's text behind its prefix.

Resumable: every `checkpoint_every` optimizer steps the full state (projector, optimizer, scheduler, RNG,
position in the epoch) is saved under `<partial>/checkpoints/step-N/`, and counts only once its
`COMPLETE` marker exists. Batches are a pure function of (seed, epoch), so a resumed run skips exactly
the batches it had done.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

from pipeline.batching import length_batches, shard
from stages import resume
from stages.align.dist import progress, say
from stages.align.loss import token_nll
from stages.align.tokens import Tokens, collate


@dataclass(frozen=True)
class TrainPlan:
    lr: float  # the shared projector MLP
    item_lr: float  # the per-item vectors: each row sees one batch per epoch, so it needs far larger steps
    weight_decay: float
    schedule: str  # constant | linear | cosine
    warmup_steps: int
    epochs: int
    max_steps: int | None
    grad_accum: int
    batch_size: int
    length_pool: int
    seed: int
    checkpoint_every: int


@dataclass
class Position:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch: int = 0  # batches of `epoch` done by this process
    losses: list[float] = field(default_factory=list)  # mean text loss of each optimizer step
    resumed_from: int | None = None
    # Per optimizer step: step, epoch, loss, both learning rates, items/s and text tokens/s (all processes).
    # Kept here, with the resumable state, so a resumed run still publishes the whole curve.
    history: list[dict[str, float]] = field(default_factory=list)


def lr_factor(schedule: str, warmup: int, total: int) -> Callable[[int], float]:
    """Linear warm-up, then constant, linear or cosine decay to zero at step `total`."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress_ = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "linear":
            return 1.0 - progress_
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress_))
        return 1.0
    return factor


def enable_checkpointing(lm: nn.Module) -> None:
    """Recompute the frozen LM's layer activations in backward instead of storing them.

    transformers only checkpoints layers whose own `training` flag is set; setting that flag on the
    layer modules alone keeps every dropout inside them in eval mode, so the LM stays deterministic.
    """
    from transformers.modeling_layers import GradientCheckpointingLayer

    kwargs = {"use_reentrant": False}
    if hasattr(lm, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name warns there
        lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    for module in lm.modules():
        if isinstance(module, GradientCheckpointingLayer):
            module.training = True


def fit(accelerator: Accelerator, lm: nn.Module, projector: nn.Module, tokens: Tokens, plan: TrainPlan,
        pad_id: int, checkpoints: Path) -> Position:
    """Train `projector` (row i = tokens' item i) so that `lm` reproduces each item's text behind it."""
    rows = np.arange(len(tokens.lengths))
    optimizer = torch.optim.AdamW([{"params": projector.items.parameters(), "lr": plan.item_lr},
                                   {"params": projector.mlp.parameters(), "lr": plan.lr}],
                                  weight_decay=plan.weight_decay)

    def batches_of(epoch: int) -> list[np.ndarray]:
        batches = length_batches(rows, tokens.lengths, plan.batch_size, plan.length_pool, plan.seed + epoch)
        return shard(batches, accelerator.process_index, accelerator.num_processes)

    per_epoch = math.ceil(len(batches_of(0)) / plan.grad_accum)
    total = min(per_epoch * plan.epochs, plan.max_steps or per_epoch * plan.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(plan.schedule, plan.warmup_steps, total))
    projector, optimizer = accelerator.prepare(projector, optimizer)
    parts = resume.Parts([projector], [optimizer], [scheduler])
    position = Position()
    restored = resume.restore(accelerator, checkpoints, "step", parts)
    if restored is not None:
        start, state = restored
        position = Position(**state)
        position.resumed_from = position.step
        say(accelerator)("resumed", f"resumed SAID training from {start.name} (step {position.step} of {total})",
                         step=position.step)
    device = accelerator.device
    with progress(accelerator, "SAID alignment", total, "steps") as bar:
        bar.resume_at(position.step)
        while position.step < total:
            batches = batches_of(position.epoch)
            step_loss, step_items, step_tokens, started = 0.0, 0, 0, time.perf_counter()
            for i in range(position.batch, len(batches)):
                sync = (i + 1) % plan.grad_accum == 0 or i + 1 == len(batches)
                ids, mask = (t.to(device) for t in collate(tokens, batches[i], pad_id))
                with contextlib.ExitStack() as stack:
                    if not sync:
                        stack.enter_context(accelerator.no_sync(projector))
                    with accelerator.autocast():
                        prefix = projector(torch.as_tensor(batches[i], device=device))  # (B, k, H)
                        loss = token_nll(lm, prefix, ids, mask).sum() / mask.sum()
                    accelerator.backward(loss / plan.grad_accum)
                step_loss += loss.item() / plan.grad_accum
                step_items, step_tokens = step_items + len(batches[i]), step_tokens + int(mask.sum())
                if not sync:
                    continue
                item_lr, lr = (group["lr"] for group in optimizer.param_groups)  # the rates this step used
                # One collective for the step's loss (mean) and the items and tokens of every process (sum),
                # before the step: every process sees the same loss, and all stop before a NaN reaches the weights.
                summed = accelerator.reduce(torch.tensor([step_loss, step_items, step_tokens], device=device),
                                            "sum").tolist()
                resume.stop_if_diverged(summed[0] / accelerator.num_processes, f"SAID step {position.step + 1}")
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                position.step, position.batch = position.step + 1, i + 1
                position.losses.append(summed[0] / accelerator.num_processes)
                seconds = max(time.perf_counter() - started, 1e-9)
                position.history.append({"step": position.step, "epoch": position.epoch + 1,
                                         "loss": position.losses[-1], "lr": lr, "item_lr": item_lr,
                                         "items_per_s": summed[1] / seconds, "tokens_per_s": summed[2] / seconds})
                step_loss, step_items, step_tokens = 0.0, 0, 0
                bar.advance(1, loss=f"{position.losses[-1]:.3f}")
                # The last step is saved too: a crash while exporting then resumes straight to the export.
                if plan.checkpoint_every and (position.step % plan.checkpoint_every == 0 or position.step >= total):
                    resume.save(accelerator, checkpoints, "step", position.step, asdict(position), parts)
                if position.step >= total:
                    break
                started = time.perf_counter()  # after the checkpoint: its save time is not the next step's
            else:
                position.epoch, position.batch = position.epoch + 1, 0
    return position
