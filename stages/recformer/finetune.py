"""Recformer fine-tuning in the paper's two stages, with early stopping on a validation score passed in.

Stage 1 re-encodes every item into the item table at the start of each epoch and trains the encoder
with a softmax over the whole table (cosine / temperature); stage 2 starts from stage 1's best
encoder, encodes the table once, freezes it and keeps training the encoder on the sequence side.
The table never carries gradient: in both stages only the sequence pass trains the encoder.

The evaluation is not ours: `score_fn(user_vectors, item_table) -> float` (higher is better) judges
each epoch, e.g. a full-ranking NDCG@10 over the validation targets; `cosine_scores` gives the
(users x items) scores such an evaluation ranks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader

from pipeline.config import RecformerEncodeConfig, RecformerFinetuneConfig
from pipeline.events import Tracker, emit
from stages.recformer.data import Examples
from stages.recformer.encode import item_table
from stages.recformer.inputs import SequenceFormat
from stages.recformer.model import RecformerEncoder
from stages.recformer.pretrain import adamw

ScoreFn = Callable[[torch.Tensor, torch.Tensor], float]


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
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            chosen = order[start:start + batch_size]
            batch = {k: v.to(device) for k, v in fmt.batch([examples.history(e, fmt.max_items) for e in chosen]).items()}
            out[torch.as_tensor(chosen, device=device)] = encoder(**batch).float()
    encoder.train(was_training)
    return out


@dataclass
class FinetuneResult:
    """The best validation score, the item table that went with it, and one record per epoch."""

    best_score: float  # NaN when nothing was trained (zero-shot): there was nothing to choose between
    table: torch.Tensor  # (N, H) item vectors encoded by the best encoder
    history: list[dict[str, float]]  # stage, epoch, mean training loss, validation score


class _Collate:
    def __init__(self, fmt: SequenceFormat, examples: Examples) -> None:
        self.fmt, self.examples = fmt, examples

    def __call__(self, indices: list[int]) -> dict:
        histories = [self.examples.history(e, self.fmt.max_items) for e in indices]
        return {"sequences": self.fmt.batch(histories),
                "targets": torch.from_numpy(self.examples.items[self.examples.target[indices]])}


def finetune(encoder: RecformerEncoder, fmt: SequenceFormat, train: Examples, valid: Examples, score_fn: ScoreFn,
             temperature: float, config: RecformerFinetuneConfig, encode: RecformerEncodeConfig,
             accelerator: Accelerator) -> FinetuneResult:
    """Run both stages on `encoder` (left holding the best weights); validation picks epochs, never test data."""
    set_seed(config.seed)
    loader = DataLoader(list(range(len(train))), batch_size=config.batch_size, shuffle=True,
                        collate_fn=_Collate(fmt, train), generator=torch.Generator().manual_seed(config.seed))
    optimizer = adamw(encoder, config.learning_rate, config.weight_decay)
    wrapped, optimizer, loader = accelerator.prepare(encoder, optimizer, loader)
    model = accelerator.unwrap_model(wrapped)

    def encode_table() -> torch.Tensor:
        return item_table(model, fmt, encode.batch_size, encode.chunk_items, accelerator)

    def validate(table: torch.Tensor) -> float:
        return float(score_fn(user_vectors(model, fmt, valid, encode.batch_size), table))

    table = encode_table()
    if config.stage1_epochs + config.stage2_epochs == 0:  # zero-shot: nothing to choose between
        return FinetuneResult(math.nan, table, [])
    best = FinetuneResult(validate(table), table, [])
    best_state = _snapshot(model)
    emit("recformer_finetune", f"before fine-tuning: validation score {best.best_score:.4f}", score=best.best_score)
    for stage, epochs in ((1, config.stage1_epochs), (2, config.stage2_epochs)):
        model.load_state_dict(best_state)
        table, stale = best.table, 0
        for epoch in range(epochs):
            loss = _train_epoch(wrapped, optimizer, loader, table, temperature, config.max_grad_norm, accelerator,
                                f"stage {stage} epoch {epoch + 1}")
            if stage == 1:
                table = encode_table()
            score = validate(table)
            best.history.append({"stage": stage, "epoch": epoch + 1, "loss": loss, "score": score})
            emit("recformer_epoch", f"stage {stage} epoch {epoch + 1}: loss {loss:.4f}, validation {score:.4f}",
                 **best.history[-1])
            if score > best.best_score:
                best.best_score, best.table, best_state, stale = score, table, _snapshot(model), 0
            else:
                stale += 1
                if stale >= config.patience:
                    break
    model.load_state_dict(best_state)
    return best


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().to("cpu", copy=True) for name, value in model.state_dict().items()}


def _train_epoch(wrapped: nn.Module, optimizer, loader: DataLoader, table: torch.Tensor, temperature: float,
                 max_grad_norm: float, accelerator: Accelerator, description: str) -> float:
    """One pass: softmax of each sequence over the whole (fixed) item table; returns the mean loss."""
    items = nn.functional.normalize(table, dim=-1)  # (N, H), a constant for this epoch
    losses = []
    wrapped.train()
    with Tracker(description, len(loader), "steps") as tracker:
        for batch in loader:
            seq = nn.functional.normalize(wrapped(**batch["sequences"]), dim=-1)  # (B, H)
            loss = nn.functional.cross_entropy(seq @ items.T / temperature, batch["targets"])
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(wrapped.parameters(), max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            tracker.advance(1, loss=f"{losses[-1]:.3f}")
    return float(np.mean(losses)) if losses else float("nan")
