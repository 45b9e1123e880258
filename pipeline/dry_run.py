"""`seqrec-pipeline run --dry-run`: every stage's plan and its price, nothing trained or published.

The decisions are the stages' own (`pipeline.status`); the prices come from a short warm-up on the
configured models (`stages.price`). New raw data is prepared into a scratch folder, so the catalog and
the log the stages would read can be priced without touching the workspace.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pipeline.config import PipelineConfig
from pipeline.events import clock
from pipeline.status import next_prepare
from pipeline.store import workspace_output


def _priced(stage: str, decision: str, price: object | None) -> list[str]:
    lines = [f"{stage}: {decision}"]
    if price is not None:
        estimate = "not priced" if price.seconds is None else f"estimated {clock(price.seconds)} {price.per} here"
        lines.append(f"  work: {price.work}; {estimate}")
        if price.cheaper:
            lines.append(f"  cheaper: {price.cheaper}")
    return lines


def plan_lines(config: PipelineConfig) -> list[str]:
    """What `run` would do, stage by stage, with the work and its estimated time."""
    from pipeline import prepare
    from stages import price
    from stages.align import stage

    decision, dataset_dir = next_prepare(config)
    lines = [f"prepare: {decision}"]
    with tempfile.TemporaryDirectory(prefix="seqrec-dry-run-") as scratch:
        if dataset_dir is None:  # read the new data as prepare would, outside the workspace
            scratch_config = config.model_copy(update={"workspace": config.workspace.model_copy(
                update={"root": str(Path(scratch))})})
            dataset_dir = prepare.run(scratch_config).run_dir
        embeddings_dir = None
        if config.downstream.embeddings is None:
            lines.append("align: skipped (downstream.embeddings is null: ID-only)")
        else:
            planned = stage.plan(config, dataset_dir)
            if planned.mode == "reuse":
                embeddings_dir = workspace_output(config, "embeddings").run_dir(planned.run_id)
            lines += _priced("align", planned.reason, price.price_alignment(config, planned))
        training = price.price_training(config, dataset_dir, embeddings_dir)
        lines += _priced("train-downstream", "trains unless its inputs and settings are unchanged", training)
    lines.append("recommend: top-K for every user after training (seconds)")
    return lines
