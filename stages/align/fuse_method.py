"""`align.method: fuse`: one vector per item from several methods' embeddings runs, joined end to end.

The members (`align.fuse`) are aligned first, each as its own run with its own settings (published runs are
reused, changed catalogs extended), so fusing costs a concatenation. Vectors are joined raw: per-run whitening
first would change nothing downstream, since stage two's `whiten` adapter whitens the joined vector as one and
whitening is blind to any invertible map of each part; whitening them together also removes what the runs share
(the item text both encode), so the adapter sees what each adds on the same scale (docs/methods.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from accelerate import Accelerator

from pipeline.config import PipelineConfig
from pipeline.contracts import embeddings as contract
from pipeline.store import workspace_output
from stages.align.dist import my_range
from stages.align.method import AlignPlan, Embedded

READS = {"method", "fuse", "seed", "export", "evidence"}


def join(runs: list[contract.Embeddings], item_ids: list[str]) -> np.ndarray:
    """(len(item_ids), sum of dims): each item's vectors from `runs`, end to end in the runs' order."""
    return np.concatenate([contract.align_to_items(run, item_ids, allow_missing=False)[0] for run in runs], axis=1)


def member_configs(config: PipelineConfig) -> list[PipelineConfig]:
    """The config of each member run: the same settings with `align.method` set to the member."""
    return [config.model_copy(update={"align": config.align.model_copy(update={"method": method})})
            for method in config.align.fuse]


@dataclass(frozen=True)
class FuseMethod:
    """Joins the members' runs (`stages.align.method.Method`); the plan carries them (`AlignPlan.members`) and
    the run id hashes their run ids, so a changed member makes a new fused run."""

    def model_name(self, config: PipelineConfig) -> str:
        return "+".join(config.align.fuse)

    def pooling(self, config: PipelineConfig) -> str:
        return "concat"

    def model_identity(self, config: PipelineConfig) -> None:
        return None

    def settings_read(self, config: PipelineConfig) -> list[object]:
        return [config.align.model_dump(mode="json", include=READS)]

    def pretrain_dirs(self, config: PipelineConfig) -> list[Path]:
        return []

    def full_run_inputs(self, config: PipelineConfig, dataset_run: str, pretrain_dirs: list[Path]) -> list[object]:
        return []

    def describe(self, config: PipelineConfig, items: int) -> str:
        return f"joining the runs of {', '.join(config.align.fuse)}"

    def embed(self, accelerator: Accelerator, config: PipelineConfig, planned: AlignPlan, dataset_dir: Path,
              folder: Path) -> Embedded:
        output = workspace_output(config, "embeddings")
        runs = [contract.read_embeddings(output.run_dir(member.run_id)) for member in planned.members]
        members = {method: {"run_id": run.run_id, "dim": run.dim} for method, run in zip(config.align.fuse, runs)}
        mine = my_range(accelerator, len(planned.rows.train))
        vectors = join(runs, [planned.catalog.ids[row] for row in planned.rows.train[mine.start:mine.stop]])
        return Embedded(vectors, {"evidence": {}, "members": members}, None, None, lambda _folder: None, mine.start)

    def carry_over(self, planned: AlignPlan, folder: Path) -> None:
        return None
