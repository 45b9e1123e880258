"""Training a sequence kind (SASRec, GRU4Rec, SAID-light): a sequential recommender on frozen item vectors.

Every position of each user's train sequence is a target in one pass (as SASRec trains), not every prefix
as its own sample. Early stopping on valid NDCG; the best weights are kept; a killed run resumes from its
last complete epoch checkpoint (weights, optimizer, RNG, epoch, best metric, patience counter). With
`downstream.train.ema_decay` the weights evaluated, kept and published are a moving average of the trained ones.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from pipeline import events
from pipeline.batching import length_batches, shard
from pipeline.config import DownstreamConfig, ModelConfig, TrainConfig
from pipeline.contracts import downstream as downstream_run
from pipeline.contracts.embeddings import Embeddings
from pipeline.contracts.history import write_history
from pipeline.faults import crash_point
from stages import resume
from stages.accelerator import stage_accelerator
from stages.downstream import runs, warm_start
from stages.downstream.evaluate import check_splits, evaluate_all, evaluate_model
from stages.downstream.item_index import build_index
from stages.downstream.objective import Objective
from stages.downstream.recommender import Recommender
from stages.downstream.sequences import Sequences, load_sequences, padded
from stages.downstream.warm_start import WarmStart

# (model config, items, embeddings in item order or None, which items have one) -> the recommender to train
Build = Callable[[ModelConfig, int, np.ndarray | None, np.ndarray | None], Recommender]


@dataclass
class TrainState:
    """What a resumed run needs besides weights, optimizer and RNG (which Accelerate saves)."""

    epoch: int = 0  # epochs completed
    best_metric: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best one (the patience counter)
    history: list[dict[str, Any]] = field(default_factory=list)
    best_valid: dict[str, float] | None = None  # the best epoch's valid metrics: not evaluated again at the end


def training_rows(seqs: Sequences, max_length: int) -> tuple[torch.Tensor, int]:
    """(W, L + 1) right-aligned windows that cover every train target exactly once, and how many users had none.

    A train sequence longer than L + 1 is cut from its end into windows whose targets do not overlap
    (each window's first input is the previous window's last target), so long histories are not
    truncated to their last L items.
    """
    users = np.flatnonzero(seqs.n_train >= 2)
    windows = -(-(seqs.n_train[users] - 1) // max_length)  # ceil((targets) / L) per user
    owner = np.repeat(users, windows)
    back = np.arange(windows.sum()) - np.repeat(np.cumsum(windows) - windows, windows)  # 0 = the last window
    ends = seqs.split_end("train")[owner] - back * max_length
    rows = padded(seqs, owner, ends, max_length + 1)
    return torch.from_numpy(rows), int(len(seqs.user_ids) - len(users))


def _resume(accelerator: Accelerator, folder: Path, parts: resume.Parts) -> TrainState:
    restored = resume.restore(accelerator, folder / runs.CHECKPOINTS, "epoch", parts)
    if restored is None:
        return TrainState()
    path, saved = restored
    state = TrainState(**saved)
    events.emit("resumed", f"resuming after epoch {state.epoch} from {path}", epoch=state.epoch)
    return state


def _train_epoch(objective: torch.nn.Module, optimizer: torch.optim.Optimizer, accelerator: Accelerator,
                 rows: torch.Tensor, lengths: np.ndarray, targets_per_batch: float, train: TrainConfig,
                 epoch: int, average: AveragedModel | None) -> float:
    """One pass over this process's share of windows, batched by length and shuffled by (seed, epoch),
    so a resumed run repeats it; the mean loss of every process's targets. A non-finite loss stops training.
    `average`, if any, follows the weights after every step."""
    budget = targets_per_batch if train.batch_by == "targets" else None
    batches = length_batches(np.arange(len(rows)), lengths, train.batch_size, train.length_pool, train.seed + epoch, budget)
    batches = shard(batches, accelerator.process_index, accelerator.num_processes)
    objective.train()
    total, targets = 0.0, 0
    with events.Tracker(f"epoch {epoch + 1}", sum(len(b) for b in batches), "sequences") as tracker:
        for indices in batches:
            batch = rows[torch.from_numpy(indices)].to(accelerator.device)  # (B, L + 1)
            loss = objective(batch[:, :-1], batch[:, 1:])
            value = loss.item()
            resume.stop_if_diverged(value, f"epoch {epoch + 1}")
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            if average is not None:
                average.update_parameters(accelerator.unwrap_model(objective).recommender)
            total += value * targets_per_batch  # the batch's summed loss
            targets += int(lengths[indices].sum())
            # Batches are sorted by length, so one batch's loss jumps; people see the epoch's running mean.
            tracker.advance(len(batch), json_only={"batch_loss": round(value, 4)}, loss=f"{total / targets:.4f}")
    summed = accelerator.reduce(torch.tensor([total, float(sum(lengths[b].sum() for b in batches))],
                                             dtype=torch.float64, device=accelerator.device), "sum").tolist()
    return summed[0] / max(summed[1], 1.0)


def negative_sampling(seqs: Sequences, train: TrainConfig) -> torch.Tensor | None:
    """The probability of drawing each item as a negative: None (uniform), or train counts ^ 0.75 (word2vec's
    smoothing: popular items are drawn often, rare ones still drawn), each count plus one."""
    if train.sampler == "uniform" or train.loss == "ce":
        return None
    weights = torch.from_numpy(seqs.train_counts() + 1).double() ** 0.75
    return (weights / weights.sum()).float()


def moving_average(model: Recommender, decay: float | None) -> AveragedModel | None:
    """An exponential moving average of `model`'s weights (None without a decay). Evaluating and keeping the
    average instead of the last step's weights smooths the noise of the last few hundred steps out of both the
    published model and the valid curve that early stopping reads (measured in docs/defaults.md).

    Buffers kept out of the state dict are the model's inputs, not weights (the frozen embedding table, N x D):
    they are set aside while the model is copied (under every name, when members share one), then shared by both,
    so the average costs the weights only.
    """
    if decay is None:
        return None
    weights = model.state_dict().keys()
    inputs = {name: buffer for name, buffer in model.named_buffers(remove_duplicate=False) if name not in weights}

    def put(into: nn.Module, tensors: dict[str, torch.Tensor | None]) -> None:
        for name, tensor in tensors.items():
            owner, _, key = name.rpartition(".")
            setattr(into.get_submodule(owner), key, tensor)

    put(model, dict.fromkeys(inputs))
    try:
        average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))
    finally:
        put(model, inputs)
    put(average.module, inputs)
    return average


def _fit(model: Recommender, seqs: Sequences, rows: torch.Tensor, config: DownstreamConfig,
         folder: Path, warm: bool) -> tuple[TrainState, Accelerator]:
    """The training loop: epochs until `epochs` or patience runs out; the best weights in BEST_FILE (the moving
    average's, with `ema_decay`).

    A warm-started model is scored before training as epoch 0, so training must beat where it started.
    """
    train, metric = config.train, f"ndcg@{config.evaluate.ks[0]}"
    accelerator = stage_accelerator()
    lengths = (rows[:, :-1] != 0).sum(dim=1).numpy()  # targets (= history length) of each window
    targets_per_batch = train.batch_size * float(lengths.mean())
    objective = Objective(model, train.loss, train.negatives, targets_per_batch, negative_sampling(seqs, train))
    optimizer = torch.optim.AdamW(objective.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    objective, optimizer = accelerator.prepare(objective, optimizer)
    average = moving_average(model, train.ema_decay)
    scored = model if average is None else average.module  # what is evaluated, kept and published
    parts = resume.Parts([objective] if average is None else [objective, average], [optimizer])
    state = _resume(accelerator, folder, parts)
    if warm and not state.history:
        valid = evaluate_model(model, seqs, "valid", config.evaluate, config.model.max_length)
        state.best_metric, state.best_valid = valid[metric], valid
        state.history.append({"epoch": 0, f"valid_{metric}": valid[metric]})
        if accelerator.is_main_process:
            _save_weights(model, folder / runs.BEST_FILE)
        events.emit("epoch", f"warm start: valid {metric} {valid[metric]:.4f} before training", epoch=0, valid=valid)
    while state.epoch < train.epochs and state.bad_epochs < train.patience:
        started = time.perf_counter()
        loss = _train_epoch(objective, optimizer, accelerator, rows, lengths, targets_per_batch, train, state.epoch,
                            average)
        seconds = time.perf_counter() - started
        valid = evaluate_model(scored, seqs, "valid", config.evaluate, config.model.max_length)
        state.epoch += 1
        state.history.append({"epoch": state.epoch, "loss": loss, "train_s": round(seconds, 3),
                              "lr": optimizer.param_groups[0]["lr"], **{f"valid_{k}": v for k, v in valid.items()}})
        if valid[metric] > state.best_metric:
            state.best_metric, state.best_epoch, state.bad_epochs, state.best_valid = valid[metric], state.epoch, 0, valid
            if accelerator.is_main_process:
                _save_weights(scored, folder / runs.BEST_FILE)
        else:
            state.bad_epochs += 1
        events.emit("epoch", f"epoch {state.epoch}: loss {loss:.4f}, valid {metric} {valid[metric]:.4f} "
                    f"(best {state.best_metric:.4f} at epoch {state.best_epoch}), {seconds:.1f}s",
                    epoch=state.epoch, loss=loss, valid=valid, train_s=seconds)
        resume.save(accelerator, folder / runs.CHECKPOINTS, "epoch", state.epoch, asdict(state), parts)
    return state, accelerator


def _save_weights(model: Recommender, path: Path) -> None:
    downstream_run.save_tensors(path, model.state_dict())


def train(folder: Path, config: DownstreamConfig, dataset_dir: Path, dataset_run_id: str,
          embeddings: Embeddings | None, warm: WarmStart | None, build: Build) -> dict[str, Any]:
    """Train the recommender `build` makes, evaluate it and write the run's files; returns manifest facts."""
    seqs = load_sequences(dataset_dir)
    check_splits(seqs, dataset_dir)
    vectors, has = runs.item_vectors(embeddings, seqs, config)
    rows, not_trained = training_rows(seqs, config.model.max_length)
    one_interaction = int((np.diff(seqs.offsets) == 1).sum())
    if one_interaction:
        events.emit("skipped_users", f"{one_interaction} users with one interaction skipped (nothing to predict)",
                    users=one_interaction)
    events.emit("training_plan", f"{config.model.kind} over {seqs.num_items:,} items: {len(rows):,} windows an "
                f"epoch, at most {config.train.epochs} epochs, stopping after {config.train.patience} without "
                f"a better valid score ({config.train.loss} loss; `run --dry-run` prices an epoch)",
                windows=len(rows), items=seqs.num_items)
    set_seed(config.train.seed)
    model = build(config.model, seqs.num_items, vectors, has)
    init: dict[str, Any] = {"init": "scratch"}
    if warm is not None:
        init = {"init": "previous", **warm_start.apply(model, warm, seqs.item_ids)}
        events.emit("warm_start", f"warm start from run {warm.run_id}: {init['items_matched']:,} items matched, "
                    f"{init['items_new']:,} new", **init)
    state, accelerator = _fit(model, seqs, rows, config, folder, warm is not None)
    accelerator.wait_for_everyone()
    model.load_state_dict(load_file(folder / runs.BEST_FILE))
    results = evaluate_all(model, seqs, config.evaluate, config.model.max_length, valid=state.best_valid)
    if accelerator.is_main_process:
        _export(folder, model, config, {**results, "best_epoch": state.best_epoch, "history": state.history})
        write_history(folder, [{**record, "best": record["epoch"] == state.best_epoch} for record in state.history])
    accelerator.wait_for_everyone()
    return {
        "kind": "downstream", "model": config.model.kind, "seed": config.train.seed,
        **runs.input_facts(folder, dataset_dir, dataset_run_id, embeddings),
        "embeddings_method": None if embeddings is None else embeddings.manifest.get("method"),
        "embedding_dim": None if embeddings is None else embeddings.dim,
        "items_without_embedding": 0 if has is None else int((~has).sum()),
        "num_items": seqs.num_items, "epochs": state.epoch, "best_epoch": state.best_epoch, **init,
        "processes": accelerator.num_processes,
        "users": {"total": len(seqs.user_ids), "one_interaction_skipped": one_interaction,
                  "trained_on": len(seqs.user_ids) - not_trained},
        "metrics": {"valid": results["model"]["valid"], "test": results["model"]["test"]},
    }


def _export(folder: Path, model: Recommender, config: DownstreamConfig, metrics: dict[str, Any]) -> None:
    """The published files: weights, config, metrics and the item index (resume state goes after the publish)."""

    downstream_run.write_weights(folder, model.state_dict())
    crash_point("export.halfway")
    downstream_run.write_config(folder, config.model_dump(mode="json"))
    downstream_run.write_metrics(folder, metrics)
    with torch.no_grad():
        vectors = model.items.all_items().cpu().numpy()
    downstream_run.write_index(folder, build_index(vectors, config.index))
