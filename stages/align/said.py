"""SAID training: only the projector learns; the frozen LM reproduces each item's text behind its prefix.

Resumable: every `checkpoint_every` optimizer steps the full state (projector, optimizer, scheduler, RNG,
position in the epoch) is saved under `<partial>/checkpoints/step-N/`, and counts only once its
`COMPLETE` marker exists. Batches are a pure function of (seed, epoch, shard), so a resumed run skips exactly
the batches it had done.

Partitioned by item (`item_shards`): each process trains only the item-table rows of the shards it owns,
kept and checkpointed there alone; the processes exchange only the MLP's gradients, once per step.
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

from pipeline.batching import length_batches
from stages import resume
from stages.align.dist import progress, say
from stages.align.item_shards import Shards, shard_seed
from stages.align.loss import token_nll
from stages.align.projector import SAIDProjector
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
    batch: int = 0  # batches of `epoch` done by each shard
    losses: list[float] = field(default_factory=list)  # mean text loss of each optimizer step
    resumed_from: int | None = None
    # Per optimizer step: step, epoch, loss, both learning rates, items, items/s and text tokens/s (all processes).
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


@dataclass(frozen=True)
class OwnItems:
    """This process's rows of the item table (those of the shards it owns), which never leave it, and the
    projector that maps them to prefixes: what training starts from and what it leaves."""

    projector: SAIDProjector
    table: nn.Embedding  # row i = catalog row `rows.start` + i
    shards: Shards

    @property
    def rows(self) -> range:
        """The catalog rows of `table`."""
        return self.shards.rows

    def soft_tokens(self, rows: np.ndarray, mlp: nn.Module | None = None) -> torch.Tensor:
        """The prefixes of catalog rows `rows` (all in `self.rows`): (B, k, H), through `mlp` (training passes the
        MLP wrapped for synchronisation) or the projector's own."""
        local = torch.as_tensor(rows - self.rows.start, device=self.table.weight.device)
        return self.projector.soft_tokens_of((self.projector.mlp if mlp is None else mlp)(self.table(local)))


@dataclass
class Trainer:
    """What one SAID optimizer step needs (`train_step`); `make_trainer` builds it."""

    accelerator: Accelerator
    lm: nn.Module  # frozen
    own: OwnItems  # the projector (its MLP trained through `mlp`) and this process's rows: never synchronised
    mlp: nn.Module  # the projector's MLP, wrapped by `accelerator` to synchronise it across processes
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    tokens: Tokens
    pad_id: int
    grad_accum: int

    def soft_tokens(self, rows: np.ndarray) -> torch.Tensor:
        """The prefixes of catalog rows `rows` (all owned by this process) through the synchronised MLP."""
        return self.own.soft_tokens(rows, self.mlp)

    @property
    def synchronised(self) -> list[nn.Parameter]:
        """The parameters the processes all-reduce each step (none in one process or with a frozen MLP)."""
        if not isinstance(self.mlp, nn.parallel.DistributedDataParallel):
            return []
        return [p for p in self.mlp.module.parameters() if p.requires_grad]


@dataclass(frozen=True)
class Fitted:
    """What training leaves: where it stopped, what the processes exchanged (`synchronised_facts`) and this
    process's trained rows."""

    position: Position
    synchronised: dict[str, object]
    items: OwnItems


@dataclass(frozen=True)
class Step:
    """One optimizer step, over every process."""

    loss: float  # mean text loss of the step's batches, all shards
    items: int  # items in the step's batches, all processes
    tokens: int  # text tokens in them, all processes


def batches_of(shards: Shards, tokens: Tokens, plan: TrainPlan, epoch: int) -> list[list[np.ndarray]]:
    """The batches of `epoch` of each shard this process owns, cut by length: a pure function of (seed, epoch,
    shard), so every item is in exactly one batch an epoch whatever the number of processes."""
    out = []
    for shard in shards.mine:
        rows = np.arange(*shards.bounds(shard))
        out.append(length_batches(rows, tokens.lengths, plan.batch_size, plan.length_pool,
                                  shard_seed(plan.seed, epoch, shard)))
    return out


def steps_per_epoch(shards: Shards, tokens: Tokens, plan: TrainPlan) -> int:
    """Optimizer steps an epoch takes: set by the largest shard (shard 0), the same on every process."""
    rows = np.arange(*shards.bounds(0))
    batches = length_batches(rows, tokens.lengths, plan.batch_size, plan.length_pool, shard_seed(plan.seed, 0, 0))
    return math.ceil(len(batches) / plan.grad_accum)


def step_batches(per_shard: list[list[np.ndarray]], step: int, grad_accum: int) -> list[np.ndarray]:
    """The batches optimizer step `step` of an epoch takes: the next `grad_accum` of each shard (fewer, or none,
    where a shard's epoch ends first)."""
    return [rows for batches in per_shard for rows in batches[step * grad_accum:(step + 1) * grad_accum]]


def make_trainer(accelerator: Accelerator, lm: nn.Module, start: OwnItems, tokens: Tokens, plan: TrainPlan,
                 pad_id: int, total: int) -> Trainer:
    """This process's rows of the item table and the MLP (wrapped for synchronisation), trained from `start`: AdamW
    over both at their own rates and its schedule over `total` steps."""
    projector, items = start.projector, start.table
    projector.to(accelerator.device)
    items.to(accelerator.device)
    # Fused: the same update in one kernel. It touches every row of the table each step, a cost that grows
    # with the items a process owns: 0.13 s instead of 0.47 s a step for 500k rows of 64 on one CPU thread.
    optimizer = torch.optim.AdamW([{"params": items.parameters(), "lr": plan.item_lr},
                                   {"params": projector.mlp.parameters(), "lr": plan.lr}],
                                  weight_decay=plan.weight_decay, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(plan.schedule, plan.warmup_steps, total))
    trains_mlp = any(p.requires_grad for p in projector.mlp.parameters())  # frozen when extending a run
    mlp = accelerator.prepare_model(projector.mlp) if trains_mlp else projector.mlp
    optimizer = accelerator.prepare_optimizer(optimizer)
    return Trainer(accelerator, lm, start, mlp, optimizer, scheduler, tokens, pad_id, plan.grad_accum)


def _synchronise(trainer: Trainer) -> None:
    """All-reduce the MLP's gradients (DDP averages them over the processes on a backward outside `no_sync`;
    this one adds zero) and scale them to the mean over shards. Item rows get no such step: each process's
    gradients for its own rows are already whole."""
    accelerator = trainer.accelerator
    if trainer.synchronised:
        idle = torch.zeros(1, trainer.own.table.embedding_dim, device=accelerator.device)
        accelerator.backward(trainer.mlp(idle).sum() * 0.0)
    scale = accelerator.num_processes / trainer.own.shards.count
    if scale != 1.0:
        for parameter in trainer.own.projector.mlp.parameters():
            if parameter.grad is not None:
                parameter.grad.mul_(scale)


def train_step(trainer: Trainer, batches: list[np.ndarray], where: str) -> Step:
    """One optimizer step over this process's `batches` (at most `grad_accum` per shard it owns; fewer at the end
    of an epoch, where each batch's loss still counts 1/grad_accum).

    The MLP's gradient is the mean over shards of each shard's summed batch losses / grad_accum, exchanged
    once per step; an item's gradient comes from its own batch alone. One collective gives the step's mean
    loss and the items and tokens of every process before the step: every process sees the same loss, and
    all stop before a NaN reaches the weights (`where` names the step in that error).
    """
    accelerator, device = trainer.accelerator, trainer.accelerator.device
    loss_sum, step_items, step_tokens = 0.0, 0, 0
    with accelerator.no_sync(trainer.mlp) if trainer.synchronised else contextlib.nullcontext():
        for rows in batches:
            ids, mask = (t.to(device) for t in collate(trainer.tokens, rows, trainer.pad_id))
            with accelerator.autocast():
                loss = token_nll(trainer.lm, trainer.soft_tokens(rows), ids, mask).sum() / mask.sum()
            accelerator.backward(loss / trainer.grad_accum)
            loss_sum += loss.item()
            step_items, step_tokens = step_items + len(rows), step_tokens + int(mask.sum())
    _synchronise(trainer)
    summed = accelerator.reduce(torch.tensor([loss_sum, len(batches), step_items, step_tokens], device=device),
                                "sum").tolist()
    mean_loss = summed[0] / max(summed[1], 1)
    resume.stop_if_diverged(mean_loss, where)
    trainer.optimizer.step()
    trainer.scheduler.step()
    trainer.optimizer.zero_grad()
    return Step(mean_loss, int(summed[2]), int(summed[3]))


def synchronised_facts(trainer: Trainer) -> dict[str, object]:
    """What the processes exchange each step (for the manifest): the parameters DDP wraps, and their gradients' bytes."""
    names = {id(p): f"mlp.{name}" for name, p in trainer.own.projector.mlp.named_parameters()}
    return {"parameters": [names[id(p)] for p in trainer.synchronised],
            "allreduce_bytes_per_step": sum(p.numel() * p.element_size() for p in trainer.synchronised)}


def fit(accelerator: Accelerator, lm: nn.Module, start: OwnItems, tokens: Tokens, plan: TrainPlan, pad_id: int,
        checkpoints: Path) -> Fitted:
    """Train this process's rows of the item table (catalog row i = tokens' item i), which stay here, and the
    shared MLP from `start`, so that `lm` reproduces each item's text behind its prefix."""
    shards = start.shards
    per_epoch = steps_per_epoch(shards, tokens, plan)
    total = min(per_epoch * plan.epochs, plan.max_steps or per_epoch * plan.epochs)
    trainer = make_trainer(accelerator, lm, start, tokens, plan, pad_id, total)
    parts = resume.Parts([trainer.own.table, trainer.mlp], [trainer.optimizer], [trainer.scheduler], per_process=True)
    position = Position()
    restored = resume.restore(accelerator, checkpoints, "step", parts)
    if restored is not None:
        checkpoint, state = restored
        position = Position(**state)
        position.resumed_from = position.step
        say(accelerator)("resumed", f"resumed SAID training from {checkpoint.name} (step {position.step} of {total})",
                         step=position.step)
    with progress(accelerator, "SAID alignment", total, "steps") as bar:
        bar.resume_at(position.step)
        while position.step < total:
            per_shard = batches_of(shards, tokens, plan, position.epoch)
            while position.batch < per_epoch * plan.grad_accum and position.step < total:
                group = step_batches(per_shard, position.batch // plan.grad_accum, plan.grad_accum)
                item_lr, lr = (g["lr"] for g in trainer.optimizer.param_groups)  # the rates this step uses
                started = time.perf_counter()
                step = train_step(trainer, group, f"SAID step {position.step + 1}")
                seconds = max(time.perf_counter() - started, 1e-9)
                position.step, position.batch = position.step + 1, position.batch + plan.grad_accum
                position.losses.append(step.loss)
                position.history.append({"step": position.step, "epoch": position.epoch + 1, "loss": step.loss,
                                         "lr": lr, "item_lr": item_lr, "items": step.items,
                                         "items_per_s": step.items / seconds, "tokens_per_s": step.tokens / seconds})
                bar.advance(1, loss=f"{step.loss:.3f}")
                # The last step is saved too: a crash while exporting then resumes straight to the export.
                if plan.checkpoint_every and (position.step % plan.checkpoint_every == 0 or position.step >= total):
                    resume.save(accelerator, checkpoints, "step", position.step, asdict(position), parts)
            if position.step < total:  # the epoch is done; a run ending on its last batch stays in it
                position.epoch, position.batch = position.epoch + 1, 0
    return Fitted(position, synchronised_facts(trainer), trainer.own)
