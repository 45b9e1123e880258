"""`align.method: said`: build the projector (fresh, or on top of a published run), train it, embed items."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import save_file
from torch import nn

from pipeline.artifact_files import read_tensors
from pipeline.config import AlignConfig, PipelineConfig
from pipeline.contracts.history import write_history
from pipeline.errors import BadInput
from stages.accelerator import process_state
from stages.align import model_id, said_items
from stages.align.catalog import RowPlan
from stages.align.dist import say
from stages.align.evidence import prefix_losses
from stages.align.export import own_part
from stages.align.item_shards import Shards, owned, random_rows, shard_count
from stages.align.lm import Loaded, load_causal_lm, use_attention
from stages.align.method import CHECKPOINTS, STAGE_READS, AlignPlan, Embedded, check_dim, mean, tokens_to_embed
from stages.align.projector import SAIDProjector, pool, token_rms
from stages.align.said import OwnItems, Position, TrainPlan, enable_checkpointing, fit
from stages.align.said_items import LEGACY_TENSOR, PROJECTOR_FILE
from stages.align.tokens import Tokens

EMBED_CHUNK = 4096  # items pooled at a time after training: bounds the soft tokens held
TEXT_SAMPLE = 4096  # fresh items item_init: text fits its map on (the same sample on every process)
TEXT_CHUNK = 16384  # items whose text means are held at a time while item_init: text places them


@dataclass
class Trained:
    vectors: np.ndarray  # (this process's items, dim), row i = tokens' item `items.rows.start` + i
    items: OwnItems  # the rows of the item table this process trained
    position: Position
    evidence: dict[str, object]
    synchronised: dict[str, object]  # said.synchronised_facts


def output_dim(config: AlignConfig, hidden: int) -> int:
    return hidden * (config.said.soft_tokens if config.said.pooling == "concat" else 1)


def build_projector(config: AlignConfig, lm: nn.Module) -> SAIDProjector:
    """The projector's MLP and buffers, with soft tokens at the scale of `lm`'s input embeddings."""
    embedding = lm.get_input_embeddings()
    return SAIDProjector(item_dim=config.said.item_dim, width=config.said.projector_width,
                         soft_tokens=config.said.soft_tokens, hidden=lm.config.hidden_size,
                         token_rms=token_rms(embedding, embedding.num_embeddings))


def text_means(lm: nn.Module, tokens: Tokens, rows: np.ndarray, chunk: int = 16384) -> torch.Tensor:
    """(len(rows), hidden) the mean input-token embedding of items `rows`, as the LM's first layer receives them."""
    embedding = lm.get_input_embeddings()
    device = next(embedding.parameters()).device
    lengths = tokens.lengths[rows]
    before = np.cumsum(lengths) - lengths  # where each item's tokens start among the picked ones
    positions = np.repeat(tokens.offsets[rows] - before, lengths) + np.arange(lengths.sum())
    owner = torch.from_numpy(np.repeat(np.arange(len(rows)), lengths))
    sums = torch.zeros(len(rows), lm.config.hidden_size)
    with torch.no_grad():
        for start in range(0, len(positions), chunk):
            ids = torch.as_tensor(tokens.ids[positions[start:start + chunk]], device=device)
            sums.index_add_(0, owner[start:start + chunk], embedding(ids).float().cpu())
    return sums / torch.from_numpy(lengths).clamp(min=1).unsqueeze(1).float()


def start_from_text(projector: SAIDProjector, table: torch.Tensor, rows: range, lm: nn.Module, tokens: Tokens,
                    fresh: np.ndarray, seed: int) -> None:
    """Start this process's fresh items (those of `fresh` in `rows`, the catalog rows of `table`) from their texts.

    Unless a published run already set the text map, it is fitted first on up to TEXT_SAMPLE of all fresh items
    drawn from `seed`: every process draws the same sample and fits the same map, and no process computes the
    text means of more items than that sample and its own.
    """
    if not projector.places_by_text:
        sample = np.random.default_rng(seed).choice(fresh, min(TEXT_SAMPLE, len(fresh)), replace=False)
        projector.fit_text_basis(text_means(lm, tokens, sample))
    mine = fresh[(fresh >= rows.start) & (fresh < rows.stop)]
    for start in range(0, len(mine), TEXT_CHUNK):
        chunk = mine[start:start + TEXT_CHUNK]
        table[torch.from_numpy(chunk - rows.start)] = projector.text_start(text_means(lm, tokens, chunk))


def projector_for(config: AlignConfig, lm: nn.Module, tokens: Tokens, shards: Shards, base_dir: Path | None,
                  base_rows: list[int | None]) -> OwnItems:
    """The projector and this process's rows of the item table (those of `shards`), fresh or continuing a published
    run; the items it starts afresh follow `said.item_init`.

    The MLP's random start comes from `align.seed` alone, not from whatever drew random numbers before (loading
    the LM does when it first converts a GGUF file), and each shard's rows from (`align.seed`, shard), so one run
    id always means one set of vectors, whatever the number of processes.
    """
    set_seed(config.seed)
    projector = build_projector(config, lm)
    table = random_rows(shards, config.said.item_dim, config.seed)
    fresh = np.arange(len(tokens.lengths))
    if base_dir is not None:
        continue_from(projector, table, shards.rows, base_dir, base_rows)
        fresh = np.array([i for i, row in enumerate(base_rows) if row is None], np.int64)
    if config.said.item_init == "text" and len(fresh):
        start_from_text(projector, table, shards.rows, lm, tokens, fresh, config.seed)
    return OwnItems(projector, nn.Embedding.from_pretrained(table, freeze=False), shards)


def published_state(run_dir: Path) -> dict[str, torch.Tensor]:
    """A published run's projector tensors other than its item table (never read, even where a run published
    before item parts holds it in the same file)."""
    return read_tensors(run_dir / PROJECTOR_FILE, exclude=frozenset({LEGACY_TENSOR}))


def continue_from(projector: SAIDProjector, table: torch.Tensor, rows: range, base_dir: Path,
                  base_rows: list[int | None]) -> None:
    """Take a published run's MLP (frozen, so its rows stay valid) and warm-start this process's items (`table`,
    catalog rows `rows`) it already had, reading only their rows of its item table.

    `base_rows[i]` is item i's row in the published run, or None for a new item.

    Raises:
        BadInput: the published projector has other shapes (soft tokens, widths, LM).
    """
    state = published_state(base_dir)
    mine = projector.state_dict()
    optional = {"text_mean", "text_basis"}  # absent from runs made before item_init existed: left at zero
    mismatched = [k for k, mine_k in mine.items() if (state[k].shape != mine_k.shape if k in state else k not in optional)]
    if mismatched:
        raise BadInput(f"{base_dir / PROJECTOR_FILE}: projector shapes differ from align.said "
                       f"({', '.join(mismatched)}); run align with --full")
    warm = np.array([i for i in rows if base_rows[i] is not None], np.int64)
    with torch.no_grad():
        for name, tensor in state.items():
            mine[name].copy_(tensor)
    if len(warm):
        base = np.array([base_rows[i] for i in warm], np.int64)
        table[torch.from_numpy(warm - rows.start)] = said_items.read_rows(base_dir, base)
    projector.mlp.requires_grad_(False)


def save_projector(folder: Path, projector: SAIDProjector | None, base_dir: Path | None, rows: RowPlan) -> None:
    """The main process's share of the projector's files: PROJECTOR_FILE (`projector`'s MLP and buffers, or the
    base run's where nothing was trained) and the item table's kept part, copied from the base run's table.
    Each process writes the rows it trained itself (`said_items.write_part`)."""
    if projector is not None:
        state = projector.state_dict()
    else:
        assert base_dir is not None  # a run with nothing trained always has a base
        state = published_state(base_dir)
    save_file({name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}, str(folder / PROJECTOR_FILE))
    if base_dir is not None:
        said_items.copy_kept(folder, base_dir, rows.from_base)


def plan_of(config: AlignConfig) -> TrainPlan:
    s = config.said
    return TrainPlan(lr=s.lr, item_lr=s.item_lr, weight_decay=s.weight_decay, schedule=s.schedule,
                     warmup_steps=s.warmup_steps, epochs=s.epochs, max_steps=s.max_steps, grad_accum=s.grad_accum,
                     batch_size=config.batch_size, length_pool=config.length_pool, seed=config.seed,
                     checkpoint_every=config.checkpoint_every)


def train_and_embed(accelerator: Accelerator, config: AlignConfig, lm: nn.Module, tokens: Tokens, start: OwnItems,
                    pad_id: int, checkpoints: Path) -> Trained:
    """Train the projector, then embed the items of this process's shards (its part of the run) from the rows of
    the item table it trained, which never leave it."""
    lm.to(accelerator.device)
    if config.said.gradient_checkpointing:
        enable_checkpointing(lm)
    fitted = fit(accelerator, lm, start, tokens, plan_of(config), pad_id, checkpoints)
    own = fitted.items
    with torch.no_grad():
        chunks = [pool(own.soft_tokens(np.arange(first, min(first + EMBED_CHUNK, own.rows.stop))),
                       config.said.pooling).float().cpu().numpy()
                  for first in range(own.rows.start, own.rows.stop, EMBED_CHUNK)]
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, output_dim(config, lm.config.hidden_size)), np.float32)
    total = len(tokens.lengths)
    evidence: dict[str, object] = {}
    if config.evidence.items and total > 1:
        say(accelerator)("evidence", f"scoring item text with learned / no / other prefix on "
                         f"{min(config.evidence.items, total)} items")
        evidence = prefix_losses(accelerator, lm, own.soft_tokens, own.rows, tokens, config.evidence.items,
                                 config.batch_size, pad_id, config.seed)
    return Trained(vectors, own, fitted.position, evidence, fitted.synchronised)


@dataclass(frozen=True)
class SaidMethod:
    """SAID as stage one's method table asks for it (`stages.align.method.Method`)."""

    def model_name(self, config: PipelineConfig) -> str:
        return config.align.lm

    def pooling(self, config: PipelineConfig) -> str:
        return config.align.said.pooling

    def model_identity(self, config: PipelineConfig) -> dict[str, object]:
        align = config.align
        return model_id.identify(align.lm, "align.lm", align.model_cache, align.offline)

    def settings_read(self, config: PipelineConfig) -> list[object]:
        """The settings, with the number of item shards the run trains in (null: one per process, so a run
        launched over more processes is another run)."""
        shards = shard_count(config.align.said.shards, process_state().num_processes)
        return [config.align.model_dump(mode="json", include=STAGE_READS | {"attention", "said"}), {"shards": shards}]

    def pretrain_dirs(self, config: PipelineConfig) -> list[Path]:
        return []

    def full_run_inputs(self, config: PipelineConfig, dataset_run: str, pretrain_dirs: list[Path]) -> list[object]:
        return []

    def describe(self, config: PipelineConfig, items: int) -> str:
        said = config.align.said
        shards = shard_count(said.shards, process_state().num_processes)
        steps = -(-items // (config.align.batch_size * shards * said.grad_accum)) * said.epochs
        return f"{said.epochs} epochs = about {min(steps, said.max_steps or steps):,} steps"

    def load(self, accelerator: Accelerator, align: AlignConfig) -> tuple[Loaded, int]:
        """The frozen causal LM and the dimension of the vectors SAID will give."""
        with accelerator.main_process_first():  # one process converts a GGUF model; the others read the result
            loaded = load_causal_lm(align.lm, "align.lm", align.model_cache, align.offline, align.lm_dtype)
            use_attention(loaded.model, align.attention, accelerator.device)
        return loaded, output_dim(align, loaded.model.config.hidden_size)

    def embed(self, accelerator: Accelerator, config: PipelineConfig, planned: AlignPlan, dataset_dir: Path,
              folder: Path) -> Embedded:
        align, rows = config.align, planned.rows
        loaded, dim = self.load(accelerator, align)
        check_dim(planned.base, dim)
        tokens = tokens_to_embed(accelerator, align, planned, loaded, folder, special_tokens=False)
        pad_id = loaded.tokenizer.pad_token_id
        shards = owned(len(tokens.lengths), align.said.shards, accelerator.process_index, accelerator.num_processes)
        start = projector_for(align, loaded.model, tokens, shards, planned.base_dir, rows.base_rows)
        trained = train_and_embed(accelerator, align, loaded.model, tokens, start, pad_id, folder / CHECKPOINTS)
        losses = trained.position.losses
        training = {"steps": trained.position.step, "resumed_from_step": trained.position.resumed_from,
                    "first_loss": mean(losses[:5]), "last_loss": mean(losses[-5:]), "shards": shards.count,
                    "synchronised": trained.synchronised}

        def save(out: Path) -> None:
            save_projector(out, trained.items.projector, planned.base_dir, rows)
            write_history(out, trained.position.history)

        def save_part(out: Path) -> None:
            if len(trained.items.rows):  # as the embeddings part: only a process with rows writes one
                said_items.write_part(out, own_part(accelerator), trained.items.table.weight)

        return Embedded(trained.vectors, {"training": training, "evidence": {"prefix_loss": trained.evidence}},
                        loaded.source, tokens.truncated, save, trained.items.rows.start, save_part)

    def carry_over(self, planned: AlignPlan, folder: Path) -> None:
        save_projector(folder, None, planned.base_dir, planned.rows)
