"""Recformer fine-tuning in the paper's two stages, with early stopping on a validation score passed in.

Stage 1 re-encodes every item into the item table at the start of each epoch and trains the encoder
with a softmax over the whole table (cosine / temperature); stage 2 starts from stage 1's best
encoder, encodes the table once, freezes it and keeps training the encoder on the sequence side.
The table never carries gradient: in both stages only the sequence pass trains the encoder.

The evaluation is not ours: `score_fn(user_vectors, item_table) -> float` (higher is better) judges
each epoch, e.g. a full-ranking NDCG@10 over the validation targets; `cosine_scores` gives the
(users x items) scores such an evaluation ranks.

An epoch is every train target, or (`examples: one_per_user`, as Recformer's own code trains) one target
drawn per user. Resumable like pretraining: an epoch's batches are a pure function of (seed, stage, epoch),
and a checkpoint holds the encoder and optimizer, the position, the table in use and the best so far.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import send_to_device, set_seed
from safetensors.torch import save_file
from torch import nn

from pipeline.batching import shard
from pipeline.config import RecformerEncodeConfig, RecformerFinetuneConfig
from pipeline.events import Tracker, emit
from stages import resume
from stages.recformer.data import Examples
from stages.recformer.encode import item_table
from stages.recformer.inputs import SequenceFormat
from stages.recformer.model import RecformerEncoder
from stages.recformer.pretrain import adamw

ScoreFn = Callable[[torch.Tensor, torch.Tensor], float]
TENSORS_FILE = "finetune_tensors.safetensors"  # in each checkpoint: the current table, the best table and weights


def cosine_scores(user_vectors: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """(U, H) x (N, H) -> (U, N) cosine similarities, the scores items are ranked by."""
    return nn.functional.normalize(user_vectors, dim=-1) @ nn.functional.normalize(table, dim=-1).T


def user_vectors(encoder: RecformerEncoder, fmt: SequenceFormat, examples: Examples, batch_size: int) -> torch.Tensor:
    """(E, H) the sequence vector of each example's history, in example order (eval mode, no gradient)."""
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    # Shortest histories first, so each batch is padded only to histories of its own length.
    order = np.argsort(np.minimum(examples.target - examples.start, fmt.max_items), kind="stable")
    out = torch.zeros(len(examples), encoder.hidden_size, device=device)
    with torch.inference_mode(), Tracker("recformer sequence encoding", len(examples), "sequences") as tracker:
        for start in range(0, len(examples), batch_size):
            chosen = order[start:start + batch_size]
            batch = {k: v.to(device) for k, v in fmt.batch([examples.history(e, fmt.max_items) for e in chosen]).items()}
            out[torch.as_tensor(chosen, device=device)] = encoder(**batch).float()
            tracker.advance(len(chosen))
    encoder.train(was_training)
    return out


@dataclass
class FinetuneResult:
    """The best validation score, the item table that went with it, and one record per epoch."""

    best_score: float  # NaN when nothing was trained (zero-shot): there was nothing to choose between
    table: torch.Tensor  # (N, H) item vectors encoded by the best encoder
    history: list[dict[str, float]]  # stage, epoch, mean training loss, validation score


@dataclass
class Position:
    """Where fine-tuning stands, in a form a checkpoint can hold (the tensors go beside it)."""

    stage: int = 1
    epoch: int = 0  # epochs of `stage` done
    batch: int = 0  # batches of the current epoch done by this process
    step: int = 0  # optimizer steps done in all
    loss_sum: float = 0.0  # the current epoch's losses so far
    stale: int = 0  # epochs of `stage` since the best score
    best_score: float = -math.inf
    history: list[dict[str, float]] = field(default_factory=list)


class _Collate:
    def __init__(self, fmt: SequenceFormat, examples: Examples) -> None:
        self.fmt, self.examples = fmt, examples

    def __call__(self, indices: list[int]) -> dict:
        histories = [self.examples.history(e, self.fmt.max_items) for e in indices]
        return {"sequences": self.fmt.batch(histories),
                "targets": torch.from_numpy(self.examples.items[self.examples.target[indices]])}


def epoch_batches(examples: Examples, config: RecformerFinetuneConfig, stage: int, epoch: int, rank: int,
                  world: int) -> list[np.ndarray]:
    """This process's batches of example indices for one epoch, a pure function of (seed, stage, epoch), so a
    resumed run repeats them. `examples: one_per_user` first draws one example per user at random."""
    rng = np.random.default_rng([config.seed, stage, epoch])
    chosen = np.arange(len(examples))
    if config.examples == "one_per_user":
        _, users = np.unique(examples.user_ids.astype(str), return_inverse=True)
        by_user = np.lexsort((rng.random(len(examples)), users))  # each user's examples, in random order
        chosen = by_user[np.r_[True, users[by_user][1:] != users[by_user][:-1]]]
    order = rng.permutation(chosen)
    return shard([order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)], rank, world)


def finetune(encoder: RecformerEncoder, fmt: SequenceFormat, train: Examples, valid: Examples, score_fn: ScoreFn,
             temperature: float, config: RecformerFinetuneConfig, encode: RecformerEncodeConfig,
             accelerator: Accelerator, checkpoints: Path | None = None) -> FinetuneResult:
    """Run both stages on `encoder` (left holding the best weights); validation picks epochs, never test data.

    With `checkpoints`, the state goes there every `config.checkpoint_every` steps and after every epoch,
    and a complete checkpoint found there is resumed from (to the same result).
    """
    set_seed(config.seed)
    collate = _Collate(fmt, train)
    optimizer = adamw(encoder, config.lr, config.weight_decay)
    wrapped, optimizer = accelerator.prepare(encoder, optimizer)
    model = accelerator.unwrap_model(wrapped)
    parts = resume.Parts([wrapped], [optimizer])

    def encode_table() -> torch.Tensor:
        with accelerator.autocast():
            return item_table(model, fmt, encode.batch_size, encode.chunk_items, accelerator)

    def validate(table: torch.Tensor) -> float:
        with accelerator.autocast():
            return float(score_fn(user_vectors(model, fmt, valid, encode.batch_size), table))

    def save(position: Position, table: torch.Tensor, best_table: torch.Tensor, best_state: dict) -> None:
        if checkpoints is not None:
            tensors = {"table": table, "best_table": best_table, **{f"best.{k}": v for k, v in best_state.items()}}
            resume.save(accelerator, checkpoints, "step", position.step, asdict(position), parts,
                        lambda folder: save_file({k: v.detach().cpu().clone() for k, v in tensors.items()},
                                                 str(folder / TENSORS_FILE)))

    restored = resume.restore(accelerator, checkpoints, "step", parts) if checkpoints is not None else None
    if restored is not None:
        folder, state = restored
        position, tensors = Position(**state), resume.read_tensors(folder / TENSORS_FILE)
        table = tensors.pop("table").to(accelerator.device)
        best_table = tensors.pop("best_table").to(accelerator.device)
        best_state = {k.removeprefix("best."): v for k, v in tensors.items()}
        emit("resumed", f"resumed Recformer fine-tuning from {folder.name} (stage {position.stage}, "
             f"epoch {position.epoch + 1}, batch {position.batch})", step=position.step)
    else:
        table = encode_table()
        if config.epochs + config.frozen_items_epochs == 0:  # zero-shot: nothing to choose between
            return FinetuneResult(math.nan, table, [])
        position = Position(best_score=validate(table))
        best_table, best_state = table, _snapshot(model)
        emit("recformer_finetune", f"before fine-tuning: validation score {position.best_score:.4f}",
             score=position.best_score)
    epochs = {1: config.epochs, 2: config.frozen_items_epochs}
    while position.stage <= 2:
        if position.epoch == 0 and position.batch == 0:  # a stage starts from the best encoder and its table
            model.load_state_dict(best_state)
            table = best_table
        while position.epoch < epochs[position.stage] and position.stale < config.patience:
            batches = epoch_batches(train, config, position.stage, position.epoch, accelerator.process_index,
                                    accelerator.num_processes)
            started = time.perf_counter()
            _train_epoch(wrapped, optimizer, collate, batches, table, temperature, config, accelerator, position,
                         lambda used=table, kept=best_table, weights=best_state: save(position, used, kept, weights))
            seconds = time.perf_counter() - started  # after a resume: the rest of the epoch
            loss = position.loss_sum / max(len(batches), 1)
            if position.stage == 1:
                table = encode_table()
            score = validate(table)
            position.epoch, position.batch, position.loss_sum = position.epoch + 1, 0, 0.0
            position.history.append({"stage": position.stage, "epoch": position.epoch, "loss": loss, "score": score,
                                     "train_s": round(seconds, 3)})
            emit("recformer_epoch", f"stage {position.stage} epoch {position.epoch}: loss {loss:.4f}, "
                 f"validation {score:.4f}", **position.history[-1])
            if score > position.best_score:
                position.best_score, position.stale, best_table, best_state = score, 0, table, _snapshot(model)
            else:
                position.stale += 1
            save(position, table, best_table, best_state)
        position.stage, position.epoch, position.stale = position.stage + 1, 0, 0
    model.load_state_dict(best_state)
    return FinetuneResult(position.best_score, best_table, position.history)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().to("cpu", copy=True) for name, value in model.state_dict().items()}


def _train_epoch(wrapped: nn.Module, optimizer: torch.optim.Optimizer, collate: _Collate, batches: list[np.ndarray],
                 table: torch.Tensor, temperature: float, config: RecformerFinetuneConfig, accelerator: Accelerator,
                 position: Position, checkpoint: Callable[[], None]) -> None:
    """The rest of one epoch from `position.batch`: softmax of each sequence over the whole (fixed) item table."""
    items = nn.functional.normalize(table, dim=-1)  # (N, H), a constant for this epoch
    wrapped.train()
    with Tracker(f"stage {position.stage} epoch {position.epoch + 1}", len(batches), "steps") as tracker:
        tracker.resume_at(position.batch)
        for indices in batches[position.batch:]:
            batch = send_to_device(collate(indices.tolist()), accelerator.device)
            seq = nn.functional.normalize(wrapped(**batch["sequences"]).float(), dim=-1)  # (B, H)
            loss = nn.functional.cross_entropy(seq @ items.T / temperature, batch["targets"])
            resume.stop_if_diverged(loss.item(), f"Recformer fine-tuning step {position.step + 1}")
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(wrapped.parameters(), config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
            position.batch, position.step, position.loss_sum = position.batch + 1, position.step + 1, \
                position.loss_sum + loss.item()
            tracker.advance(1, loss=f"{loss.item():.3f}")
            if config.checkpoint_every and position.step % config.checkpoint_every == 0:
                checkpoint()
