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


@dataclass
class Trainer:
    """What one SAID optimizer step needs (`train_step`); `make_trainer` builds it."""

    accelerator: Accelerator
    lm: nn.Module  # frozen
    projector: nn.Module  # prepared by `accelerator`
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    tokens: Tokens
    pad_id: int
    grad_accum: int


@dataclass(frozen=True)
class Step:
    """One optimizer step, over every process."""

    loss: float  # mean text loss of the step's batches, averaged over the processes
    items: int  # items in the step's batches, all processes
    tokens: int  # text tokens in them, all processes


def batches_of(accelerator: Accelerator, tokens: Tokens, plan: TrainPlan, epoch: int) -> list[np.ndarray]:
    """This process's batches of `epoch`, cut by length: a pure function of (seed, epoch)."""
    rows = np.arange(len(tokens.lengths))
    batches = length_batches(rows, tokens.lengths, plan.batch_size, plan.length_pool, plan.seed + epoch)
    return shard(batches, accelerator.process_index, accelerator.num_processes)


def make_trainer(accelerator: Accelerator, lm: nn.Module, projector: nn.Module, tokens: Tokens, plan: TrainPlan,
                 pad_id: int, total: int) -> Trainer:
    """AdamW (the item vectors and the MLP at their own rates), its schedule over `total` steps, both prepared."""
    optimizer = torch.optim.AdamW([{"params": projector.items.parameters(), "lr": plan.item_lr},
                                   {"params": projector.mlp.parameters(), "lr": plan.lr}],
                                  weight_decay=plan.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(plan.schedule, plan.warmup_steps, total))
    projector, optimizer = accelerator.prepare(projector, optimizer)
    return Trainer(accelerator, lm, projector, optimizer, scheduler, tokens, pad_id, plan.grad_accum)


def train_step(trainer: Trainer, batches: list[np.ndarray], where: str) -> Step:
    """One optimizer step over `batches` (at most `grad_accum` of them; fewer at the end of an epoch, where
    each batch's loss still counts 1/grad_accum).

    Gradients are synchronised across processes on the last batch only. One collective gives the step's
    loss (mean) and the items and tokens of every process (sum) before the step: every process sees the
    same loss, and all stop before a NaN reaches the weights (`where` names the step in that error).
    """
    accelerator, projector, device = trainer.accelerator, trainer.projector, trainer.accelerator.device
    step_loss, step_items, step_tokens = 0.0, 0, 0
    for i, rows in enumerate(batches):
        ids, mask = (t.to(device) for t in collate(trainer.tokens, rows, trainer.pad_id))
        with contextlib.ExitStack() as stack:
            if i + 1 < len(batches):
                stack.enter_context(accelerator.no_sync(projector))
            with accelerator.autocast():
                prefix = projector(torch.as_tensor(rows, device=device))  # (B, k, H)
                loss = token_nll(trainer.lm, prefix, ids, mask).sum() / mask.sum()
            accelerator.backward(loss / trainer.grad_accum)
        step_loss += loss.item() / trainer.grad_accum
        step_items, step_tokens = step_items + len(rows), step_tokens + int(mask.sum())
    summed = accelerator.reduce(torch.tensor([step_loss, step_items, step_tokens], device=device), "sum").tolist()
    mean_loss = summed[0] / accelerator.num_processes
    resume.stop_if_diverged(mean_loss, where)
    trainer.optimizer.step()
    trainer.scheduler.step()
    trainer.optimizer.zero_grad()
    return Step(mean_loss, int(summed[1]), int(summed[2]))


def fit(accelerator: Accelerator, lm: nn.Module, projector: nn.Module, tokens: Tokens, plan: TrainPlan,
        pad_id: int, checkpoints: Path) -> Position:
    """Train `projector` (row i = tokens' item i) so that `lm` reproduces each item's text behind it."""
    per_epoch = math.ceil(len(batches_of(accelerator, tokens, plan, 0)) / plan.grad_accum)
    total = min(per_epoch * plan.epochs, plan.max_steps or per_epoch * plan.epochs)
    trainer = make_trainer(accelerator, lm, projector, tokens, plan, pad_id, total)
    parts = resume.Parts([trainer.projector], [trainer.optimizer], [trainer.scheduler])
    position = Position()
    restored = resume.restore(accelerator, checkpoints, "step", parts)
    if restored is not None:
        start, state = restored
        position = Position(**state)
        position.resumed_from = position.step
        say(accelerator)("resumed", f"resumed SAID training from {start.name} (step {position.step} of {total})",
                         step=position.step)
    with progress(accelerator, "SAID alignment", total, "steps") as bar:
        bar.resume_at(position.step)
        while position.step < total:
            batches = batches_of(accelerator, tokens, plan, position.epoch)
            while position.batch < len(batches) and position.step < total:
                group = batches[position.batch:position.batch + plan.grad_accum]
                item_lr, lr = (g["lr"] for g in trainer.optimizer.param_groups)  # the rates this step uses
                started = time.perf_counter()
                step = train_step(trainer, group, f"SAID step {position.step + 1}")
                seconds = max(time.perf_counter() - started, 1e-9)
                position.step, position.batch = position.step + 1, position.batch + len(group)
                position.losses.append(step.loss)
                position.history.append({"step": position.step, "epoch": position.epoch + 1, "loss": step.loss,
                                         "lr": lr, "item_lr": item_lr, "items_per_s": step.items / seconds,
                                         "tokens_per_s": step.tokens / seconds})
                bar.advance(1, loss=f"{step.loss:.3f}")
                # The last step is saved too: a crash while exporting then resumes straight to the export.
                if plan.checkpoint_every and (position.step % plan.checkpoint_every == 0 or position.step >= total):
                    resume.save(accelerator, checkpoints, "step", position.step, asdict(position), parts)
            if position.step < total:  # the epoch is done; a run ending on its last batch stays in it
                position.epoch, position.batch = position.epoch + 1, 0
    return position
