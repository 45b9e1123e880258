"""What stage one asks of an alignment method (`align.method`), and the plan a method carries out.

`stage.METHODS` names the methods (SAID, a frozen text encoder, Recformer); the stage picks one once and
calls it for the model it names, the settings its run id hashes, the vectors and the files it writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from accelerate import Accelerator

from pipeline.config import AlignConfig, PipelineConfig
from pipeline.contracts import embeddings as contract
from pipeline.errors import BadInput
from stages.align.catalog import Catalog, RowPlan
from stages.align.lm import Loaded
from stages.align.tokens import Tokens, tokenize

TOKENS_CACHE = "tokens.npz"
CHECKPOINTS = "checkpoints"

# The `align` settings the stage itself reads whatever the method: the catalog's text, batching, seeding,
# precision, checkpoints, the export and the evidence. A method adds its own (`Method.settings_read`).
STAGE_READS = {"method", "template", "max_text_tokens", "batch_size", "length_pool", "seed", "mixed_precision",
               "lm_dtype", "checkpoint_every", "export", "evidence"}
MODEL_PLACES = {"lm", "encoder", "model_cache", "offline"}  # where a frozen model is found: its sha256 counts instead


@dataclass(frozen=True)
class AlignPlan:
    """What `align` will do with a dataset run, and why (`seqrec-pipeline status` prints the reason)."""

    mode: Literal["reuse", "incremental", "full"]
    reason: str
    run_id: str
    catalog: Catalog
    rows: RowPlan
    base: contract.Embeddings | None
    config_hash: str
    dataset_run_id: str
    pretrain_dirs: list[Path] = field(default_factory=list)
    model: dict[str, Any] | None = None  # SAID / text: the frozen model's identity (model_id.identify)
    members: list[AlignPlan] = field(default_factory=list)  # fuse: the member runs' plans, in align.fuse order

    @property
    def base_dir(self) -> Path | None:
        return None if self.base is None else self.base.run_dir


@dataclass
class Embedded:
    """The vectors this process embedded now (row i = plan.rows.train[offset + i]; each process holds a
    contiguous share, which it writes as its own part) and how to save the method's files."""

    vectors: np.ndarray
    facts: dict[str, Any]
    source: str | None
    truncated: int | None
    save: Callable[[Path], None]  # the method's files (projector, encoder) in the run's row order (main process)
    offset: int = 0
    # This process's share of the method's per-row files (SAID's item rows), beside its own embeddings part
    # (every process, before the main process's `save`).
    save_part: Callable[[Path], None] = lambda folder: None


class Method(Protocol):
    """One way to turn item texts into vectors."""

    def model_name(self, config: PipelineConfig) -> str:
        """The model the manifest names."""

    def pooling(self, config: PipelineConfig) -> str:
        """How one vector is made per item (the manifest records it)."""

    def model_identity(self, config: PipelineConfig) -> dict[str, Any] | None:
        """The frozen model it reads, pinned by its files' sha256 (None: the method has none)."""

    def settings_read(self, config: PipelineConfig) -> list[object]:
        """The settings it reads, as the run id hashes them (the model's sha256 is added by the stage)."""

    def pretrain_dirs(self, config: PipelineConfig) -> list[Path]:
        """Dataset runs it reads besides data.name's."""

    def full_run_inputs(self, config: PipelineConfig, dataset_run: str, pretrain_dirs: list[Path]) -> list[object]:
        """What a full run reads besides the catalog (hashed into its run id)."""

    def describe(self, config: PipelineConfig, items: int) -> str:
        """The work ahead for `items` items, for the log line ("" when there is nothing to say)."""

    def embed(self, accelerator: Accelerator, config: PipelineConfig, planned: AlignPlan, dataset_dir: Path,
              folder: Path) -> Embedded:
        """Vectors for the rows `planned.rows.train`: each process its contiguous share (`Embedded.offset`)."""

    def carry_over(self, planned: AlignPlan, folder: Path) -> None:
        """The method's files when nothing is embedded (only removals): the base run's, in the new row order."""


def check_dim(base: contract.Embeddings | None, dim: int) -> None:
    """An incremental run's vectors must have the base run's width."""
    if base is not None and base.dim != dim:
        raise BadInput(f"{base.run_dir}: the base run's vectors have dim {base.dim}, the configured model gives "
                       f"{dim} (its weights changed?); run align with --full")


def frozen_model(align: AlignConfig, own: bool) -> tuple[str, str]:
    """The frozen model's name and config key: align.lm when `own`, else align.encoder."""
    return (align.lm, "align.lm") if own else (align.encoder, "align.encoder")


def tokens_to_embed(accelerator: Accelerator, align: AlignConfig, planned: AlignPlan, loaded: Loaded, folder: Path,
                    special_tokens: bool) -> Tokens:
    """The texts of the rows to embed, tokenized once by the main process and cached in the run's folder."""
    with accelerator.main_process_first():  # the main process tokenizes and caches; the others read it
        return tokenize([planned.catalog.texts[i] for i in planned.rows.train], loaded.tokenizer,
                        align.max_text_tokens, special_tokens=special_tokens, cache=folder / TOKENS_CACHE)


def mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None
