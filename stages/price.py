"""Pricing work before doing it: the planned work of stage one and stage two, timed on a short warm-up.

`seqrec-pipeline run --dry-run` prints, per stage, what the next run would do (`pipeline.status`), how
much work that is (items x epochs, steps) and how long it should take on this machine, measured by a few
real training steps on the configured model and a sample of the data, never from a constant. Past
`SUGGEST_AFTER_S` a line names the cheaper path (the text method for stage one; the sampled softmax or
ID-only for stage two).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pipeline.batching import length_batches
from pipeline.config import PipelineConfig
from pipeline.errors import BadInput
from pipeline.events import clock

if TYPE_CHECKING:
    from stages.align.method import AlignPlan

WARMUP_STEPS = 3  # timed batches; one more runs first, untimed (allocations, kernel selection)
SUGGEST_AFTER_S = 1800.0  # stage one estimated past half an hour gets a one-line cheaper path
SUGGEST_EPOCH_S = 300.0  # so does a stage-two epoch past five minutes (early stopping runs tens of them)


@dataclass(frozen=True)
class Price:
    """Planned work in words, its estimated seconds (None: not priced) and a cheaper path past the limit."""

    work: str
    seconds: float | None
    cheaper: str | None = None
    per: str = "in all"  # what `seconds` covers: "in all", or "an epoch" where early stopping decides the count


def per_cell_seconds(batches: list[np.ndarray], cells: Callable[[np.ndarray], int],
                     step: Callable[[np.ndarray], None]) -> float:
    """Seconds per cell (one row x one padded position) of `step`, timed on real batches after an untimed one.

    A batch costs about its rows times its padded width, so an epoch's time is its cells times this.
    """
    step(batches[0])
    timed = batches[1:WARMUP_STEPS + 1] or batches[:1]
    started = time.perf_counter()
    for batch in timed:
        step(batch)
    return (time.perf_counter() - started) / max(sum(cells(batch) for batch in timed), 1)


def price_alignment(config: PipelineConfig, planned: AlignPlan) -> Price:
    """Stage one's plan priced on the configured model, with SAID's own length batches."""
    from stages.accelerator import stage_accelerator
    from stages.align import said
    from stages.align.item_shards import owned
    from stages.align.said_method import SaidMethod, plan_of, projector_for
    from stages.align.text_method import TextMethod
    from stages.align.tokens import collate, tokenize

    align, rows = config.align, planned.rows
    if planned.members:
        return _price_members(config, planned)
    if planned.mode == "reuse" or not rows.train:
        return Price("nothing to embed", 0.0)
    if align.method == "recformer":
        return Price(f"{len(rows.train):,} items to encode (Recformer pretraining is not priced)", None)
    texts = [planned.catalog.texts[i] for i in rows.train]
    own = align.method == "text"
    method = TextMethod() if own else SaidMethod()
    accelerator = stage_accelerator(align.mixed_precision)
    loaded, _ = method.load(accelerator, align)  # the very model `align` trains
    tokens = tokenize(texts, loaded.tokenizer, align.max_text_tokens, special_tokens=own)
    pad = loaded.tokenizer.pad_token_id
    batches = length_batches(np.arange(len(texts)), tokens.lengths, align.batch_size, align.length_pool, align.seed)
    extra = 0 if own else align.said.soft_tokens

    def cells(batch: np.ndarray) -> int:
        return len(batch) * (int(tokens.lengths[batch].max()) + extra)

    if own:
        def encode(batch: np.ndarray) -> None:
            ids, mask = collate(tokens, batch, pad)
            with torch.no_grad():
                loaded.model(input_ids=ids, attention_mask=mask)

        seconds = per_cell_seconds(batches, cells, encode) * sum(cells(b) for b in batches)
        return Price(f"{len(texts):,} items to encode in {len(batches):,} batches", seconds)
    # The product's own start and optimizer step (`said.train_step`), one process owning every item to train.
    start = projector_for(align, loaded.model, tokens, owned(len(texts), None, 0, 1), None, [None] * len(texts))
    trainer = said.make_trainer(accelerator, loaded.model, start, tokens, plan_of(align), pad, total=len(batches))

    def train_step(batch: np.ndarray) -> None:
        said.train_step(trainer, [batch], "pricing")

    steps = len(batches) * align.said.epochs
    share = min(1.0, (align.said.max_steps or steps) / steps)  # max_steps cuts training short
    seconds = per_cell_seconds(batches, cells, train_step) * sum(cells(b) for b in batches) * align.said.epochs * share
    cheaper = None
    if seconds > SUGGEST_AFTER_S:
        cheaper = (f"SAID over {len(texts):,} items is estimated at {clock(seconds)} here; "
                   "`--set align.method=text` embeds them with a frozen encoder in a fraction of that")
    return Price(f"{len(texts):,} items x {align.said.epochs} epochs = {int(steps * share):,} SAID steps",
                 seconds, cheaper)


def _price_members(config: PipelineConfig, planned: AlignPlan) -> Price:
    """A fused run: the members' work (joining them takes seconds)."""
    from stages.align.fuse_method import member_configs

    prices = [price_alignment(member, plan) for member, plan in zip(member_configs(config), planned.members)]
    seconds = [price.seconds for price in prices]
    return Price("; ".join(f"{method}: {price.work}" for method, price in zip(config.align.fuse, prices)),
                 None if None in seconds else sum(s for s in seconds if s is not None),
                 next((price.cheaper for price in prices if price.cheaper), None))


def price_training(config: PipelineConfig, dataset_dir: Path, embeddings_dir: Path | None) -> Price:
    """Stage two's epoch on the configured model, timed on its own first length batches."""
    from stages.downstream import fit, kinds, runs, train
    from stages.downstream.objective import Objective
    from stages.downstream.sequences import load_sequences

    config = train.concrete_loss(config, train.catalog_size(dataset_dir))
    downstream, settings = config.downstream, config.downstream.train
    kind = kinds.kind_of(downstream.model.kind)
    if not isinstance(kind, kinds.SequenceKind):
        return Price(f"{downstream.model.kind} fine-tuning (not priced)", None)
    seqs = load_sequences(dataset_dir)
    try:
        embeddings = runs.embeddings_for(config, embeddings_dir)
    except BadInput:  # not aligned yet: priced on ID vectors (the adapter costs little beside the softmax)
        embeddings = None
    vectors, has = runs.item_vectors(embeddings, seqs, downstream)
    model = kind.recommender(downstream.model, seqs.num_items, vectors, has)
    rows, _ = fit.training_rows(seqs, downstream.model.max_length)
    lengths = (rows[:, :-1] != 0).sum(dim=1).numpy()
    budget = settings.batch_size * float(lengths.mean()) if settings.batch_by == "targets" else None
    batches = length_batches(np.arange(len(rows)), lengths, settings.batch_size, settings.length_pool, settings.seed,
                             budget)
    objective = Objective(model, settings.loss, settings.negatives, settings.batch_size * float(lengths.mean()),
                          fit.negative_sampling(seqs, settings))
    optimizer = torch.optim.AdamW(objective.parameters(), lr=settings.lr)

    def cells(batch: np.ndarray) -> int:
        return len(batch) * int(lengths[batch].max())

    def step(batch: np.ndarray) -> None:
        windows = rows[torch.from_numpy(batch)]
        objective(windows[:, :-1], windows[:, 1:]).backward()
        optimizer.step()
        optimizer.zero_grad()

    epoch = per_cell_seconds(batches, cells, step) * sum(cells(b) for b in batches)
    cheaper = None
    if epoch > SUGGEST_EPOCH_S and settings.loss == "ce":
        cheaper = (f"{seqs.num_items:,} items: the full softmax dominates an epoch; `--set downstream.train.loss="
                   "sampled --set downstream.train.sampler=popularity` trains on sampled negatives")
    work = (f"{len(rows):,} windows in {len(batches):,} batches an epoch, at most {settings.epochs} epochs "
            f"(early stopping after {settings.patience} without progress)")
    return Price(work, epoch, cheaper, per="an epoch")
