"""`seqrec-pipeline status`: what is published per stage, and what `run` would do next and why.

Nothing is trained or written: the next run's decisions are the stages' own (the dataset run id from the
raw files, stage one's plan from the catalog, stage two's run id from its inputs), so what `status` says
is what `run` does. Stages whose inputs a run has yet to make are said to wait for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.config import PipelineConfig
from pipeline.errors import BadInput
from pipeline.store import LOCK, Output, read_manifest, workspace_output
from pipeline.workspace import published_runs

OUTPUTS = {"prepare": "datasets", "align": "embeddings", "train-downstream": "downstream", "recommend": "recommendations"}


def current_code(stage: str, manifest: dict[str, Any]) -> str:
    """The identity of the code that would make a run like `manifest` now."""
    if stage == "prepare":
        from pipeline import prepare

        return prepare.code()
    if stage == "align":
        from stages.align import stage as align

        return align.code(manifest.get("method", ""))
    if stage == "train-downstream":
        from stages.downstream import train

        return train.code(manifest.get("model", ""))
    from stages.downstream import recommend

    return recommend.code()


def published(stage: str, output: Output) -> dict[str, Any]:
    """An output's latest run (and whether other code made it: the next run remakes it, never reuses it),
    how many runs it holds, leftovers of killed jobs and a lock if one is held."""
    runs = published_runs(output)
    latest = output.latest()
    facts: dict[str, Any] = {"path": str(output.path), "runs": len(runs),
                             "latest": None if latest is None else latest.name}
    if latest is not None:
        manifest = read_manifest(latest)
        facts["latest_created"] = manifest.get("created")
        facts["latest_made_by_other_code"] = manifest.get("code_identity") != current_code(stage, manifest)
    if output.path.is_dir():
        facts["partial"] = sorted(p.name for p in output.path.glob(".partial-*"))
        facts["locked"] = (output.path / LOCK).exists()
    return facts


def next_prepare(config: PipelineConfig) -> tuple[str, Path | None]:
    from pipeline import prepare

    output = workspace_output(config, "datasets")
    try:
        run_id = prepare.run_id(config, prepare.source_facts(config))
    except BadInput as exc:
        return f"cannot run: {exc}", None
    if output.is_published(run_id):
        return f"raw files and data settings unchanged: reuses run {run_id}", output.run_dir(run_id)
    return f"new raw files or data settings: a new dataset run {run_id}", None


def _next_align(config: PipelineConfig, dataset_dir: Path | None) -> tuple[str, Path | None]:
    if config.downstream.embeddings is None:
        return "skipped: downstream.embeddings is null (ID-only)", None
    if dataset_dir is None:
        return "decided after prepare: the catalog is read from the new dataset run", None
    from stages.align import stage

    planned = stage.plan(config, dataset_dir)
    output = workspace_output(config, "embeddings")
    reuse = planned.mode == "reuse" or output.is_published(planned.run_id)
    return planned.reason, output.run_dir(planned.run_id) if reuse else None


def _next_train(config: PipelineConfig, dataset_dir: Path | None, embeddings_dir: Path | None) -> str:
    if dataset_dir is None or (config.downstream.embeddings == "latest" and embeddings_dir is None):
        return "trains after the stages before it publish new runs"
    from stages.downstream import runs, train

    dataset_run = read_manifest(dataset_dir)["run_id"]
    config = train.concrete_loss(config, train.catalog_size(dataset_dir))
    embeddings = runs.embeddings_for(config, embeddings_dir)
    warm = train.warm_source(config, dataset_run, embeddings)
    run_id = train.run_id(config, dataset_run, embeddings, warm)
    if workspace_output(config, "downstream").is_published(run_id):
        return f"inputs and settings unchanged: reuses run {run_id}"
    start = f", warm-started from run {warm.run_id}" if warm is not None else ""
    return f"new inputs or settings: trains run {run_id}{start}"


def status(config: PipelineConfig) -> dict[str, Any]:
    """Published runs per stage and the next run's plan, with reasons."""
    report: dict[str, Any] = {"published": {stage: published(stage, workspace_output(config, kind))
                                            for stage, kind in OUTPUTS.items()}}
    prepare_reason, dataset_dir = next_prepare(config)
    align_reason, embeddings_dir = _next_align(config, dataset_dir)
    report["next"] = {"prepare": prepare_reason, "align": align_reason,
                      "train-downstream": _next_train(config, dataset_dir, embeddings_dir)}
    return report


def lines(report: dict[str, Any]) -> list[str]:
    """The report as lines for people."""
    out = []
    for stage, facts in report["published"].items():
        latest = f"latest {facts['latest']} ({facts.get('latest_created', '?')})" if facts["latest"] else "nothing published"
        extra = "".join([", made by other code (the next run remakes it)" if facts.get("latest_made_by_other_code") else "",
                         f", {len(facts.get('partial', []))} partial" if facts.get("partial") else "",
                         ", locked" if facts.get("locked") else ""])
        out.append(f"{stage:17} {facts['runs']} runs, {latest}{extra}")
    out.append("next `run`:")
    out += [f"  {stage}: {reason}" for stage, reason in report["next"].items()]
    return out
