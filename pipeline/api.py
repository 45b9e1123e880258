"""The stages called from Python: what the command line does, with typed results and the same typed errors.

Every function takes the config as a `PipelineConfig`, a path to a YAML file laid over `pipeline.yaml`'s
defaults, or a dict of dotted overrides (`{"data.kcore_users": 0}`, as `--set`); `overrides` lays such a
dict over a file too. Errors are `pipeline.errors`' (`BadInput`, exit code 2 on the command line; `Locked`, 3).
Events are `logging` records on the loggers `seqrec.<stage>`: attach a handler (`logging.basicConfig(level=
logging.INFO)`) to see them; without one only warnings reach stderr, through `logging`'s last resort.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import events
from pipeline.config import PipelineConfig, load_config
from pipeline.store import RunResult, workspace_output

ConfigLike = PipelineConfig | str | os.PathLike[str] | Mapping[str, Any] | None


@dataclass(frozen=True)
class StageResult:
    """One published (or reused) run of a stage."""

    stage: str
    run_id: str
    run_dir: Path  # absolute
    reused: bool  # the same inputs and config were published before: nothing was done
    manifest: dict[str, Any]
    metrics: dict[str, Any] | None = None  # train-downstream: the model's valid and test figures


@dataclass(frozen=True)
class Evaluation:
    """A downstream run evaluated again: `metrics` as in its metrics.json (model, popularity, protocol)."""

    run_id: str
    run_dir: Path  # absolute
    metrics: dict[str, Any]


@dataclass(frozen=True)
class MainJob:
    """The runs `run` published or reused, stage by stage (`embeddings` is None for ID-only training)."""

    dataset: StageResult
    embeddings: StageResult | None
    downstream: StageResult
    recommendations: StageResult


def as_config(config: ConfigLike = None, overrides: Mapping[str, Any] | None = None) -> PipelineConfig:
    """A validated config from any of the accepted forms.

    Raises:
        BadInput: the file is missing or invalid, or a key is unknown, mistyped or out of range.
        TypeError: `overrides` beside a `PipelineConfig` (set its fields with `model_copy` instead).
    """
    if isinstance(config, PipelineConfig):
        if overrides:
            raise TypeError("overrides apply to a YAML file or the defaults, not to a PipelineConfig")
        return config
    if isinstance(config, Mapping):
        config, overrides = None, {**config, **(overrides or {})}
    dotted = [f"{key}={json.dumps(value)}" for key, value in (overrides or {}).items()]  # JSON is YAML
    return load_config(None if config is None else Path(config), dotted)


def _result(stage: str, made: RunResult, metrics: dict[str, Any] | None = None) -> StageResult:
    run_id = str(made.manifest["run_id"])
    return StageResult(stage, run_id, made.run_dir.absolute(), made.reused, made.manifest, metrics)


def _track(cfg: PipelineConfig, made: RunResult) -> None:
    """Log a run just made to `tracking.backend` (a reused run was logged when it was made)."""
    if not made.reused and cfg.tracking.backend != "none":
        from pipeline.tracking import track

        track(cfg, made.run_dir, made.manifest)


def prepare(config: ConfigLike = None, *, overrides: Mapping[str, Any] | None = None,
            force: bool = False) -> StageResult:
    """Raw data -> the canonical dataset (`seqrec-pipeline prepare`)."""
    from pipeline import prepare as stage

    return _result("prepare", stage.run(as_config(config, overrides), force=force))


@events.in_stage("align")
def align(config: ConfigLike = None, *, overrides: Mapping[str, Any] | None = None, force: bool = False,
          full: bool = False, dataset_dir: Path | None = None) -> StageResult | None:
    """Stage one over the latest dataset run (or `dataset_dir`); None on helper processes of `accelerate launch`."""
    from stages.align import stage
    from stages.align.report import summary

    cfg = as_config(config, overrides)
    made = stage.run(cfg, force=force, full=full, dataset_dir=dataset_dir)
    if made is None:
        return None
    events.making(str(made.manifest["run_id"]))
    events.emit("evidence", summary(made.manifest), evidence=made.manifest.get("evidence"))
    _track(cfg, made)
    return _result("align", made)


@events.in_stage("train-downstream")
def train_downstream(config: ConfigLike = None, *, overrides: Mapping[str, Any] | None = None, force: bool = False,
                     dataset_dir: Path | None = None, embeddings_dir: Path | None = None) -> StageResult | None:
    """Stage two: train, evaluate and publish a recommender; `metrics` holds its valid and test figures. None on
    helper processes of `accelerate launch` (they train their share of the batches)."""
    from pipeline.contracts.downstream import read_metrics
    from stages.downstream import train
    from stages.downstream.evaluate import summary

    cfg = as_config(config, overrides)
    made = train.run(cfg, force=force, dataset_dir=dataset_dir, embeddings_dir=embeddings_dir)
    if made is None:
        return None
    metrics = read_metrics(made.run_dir)
    events.making(str(made.manifest["run_id"]))
    events.emit("evaluated", summary(metrics, cfg.downstream.evaluate.ks[0]), test=metrics["model"]["test"],
                popularity=metrics["popularity"]["test"], best_epoch=metrics["best_epoch"])
    _track(cfg, made)
    return _result("train-downstream", made, made.manifest["metrics"])


@events.in_stage("evaluate")
def evaluate(config: ConfigLike = None, run: str = "latest", *,
             overrides: Mapping[str, Any] | None = None) -> Evaluation:
    """A downstream run (latest, a run id or a folder) evaluated with `downstream.evaluate`'s settings; writes nothing,
    so a read-only workspace will do."""
    from stages.downstream import evaluate as evaluation
    from stages.downstream import kinds, runs

    cfg = as_config(config, overrides)
    trained = kinds.load_trained(runs.resolve(workspace_output(cfg, "downstream"), run, "downstream"))
    events.making(str(trained.manifest["run_id"]))
    metrics = evaluation.evaluate_all(trained.model, trained.seqs, cfg.downstream.evaluate,
                                      trained.config.model.max_length)
    return Evaluation(str(trained.manifest["run_id"]), trained.run_dir.absolute(), metrics)


def recommend(config: ConfigLike = None, *, overrides: Mapping[str, Any] | None = None, users: list[str] | None = None,
              histories: Path | None = None, force: bool = False, run_dir: Path | None = None,
              dataset_dir: Path | None = None, embeddings_dir: Path | None = None) -> StageResult:
    """Top-K recommendations (recommendations.parquet) for `users` (default `recommend.users`, else everyone).

    The model is `recommend.run` (or `run_dir`); today's histories and items come from the model's own workspace,
    and the output goes to `workspace.root`.
    """
    from stages.downstream import recommend as stage

    cfg = as_config(config, overrides)
    if users:
        cfg = cfg.model_copy(update={"recommend": cfg.recommend.model_copy(update={"users": list(users)})})
    return _result("recommend", stage.run(cfg, force=force, run_dir=run_dir, dataset_dir=dataset_dir,
                                          embeddings_dir=embeddings_dir, histories=histories))


def run(config: ConfigLike = None, *, overrides: Mapping[str, Any] | None = None, force: bool = False,
        full: bool = False) -> MainJob | None:
    """The main job and the scheduled refresh: prepare, align, train-downstream, recommend.

    Each stage reads the run the previous one just published (never whatever `latest` is by then). None on
    helper processes of `accelerate launch`.
    """
    cfg = as_config(config, overrides)
    from accelerate.utils import broadcast_object_list

    from stages.accelerator import process_state
    from stages.downstream import kinds

    kinds.kind_of(cfg.downstream.model.kind)  # an unknown kind fails now, not after hours of alignment
    state = process_state()

    def from_main(made: StageResult | None) -> Path | None:
        """The run the main process made, on every process (helpers get None from a stage)."""
        return broadcast_object_list([None if made is None else made.run_dir])[0]

    dataset = prepare(cfg, force=force) if state.is_main_process else None  # helpers wait for it
    dataset_dir = from_main(dataset)
    aligned = None
    if cfg.downstream.embeddings is not None:  # every process aligns its share
        aligned = align(cfg, force=force, full=full, dataset_dir=dataset_dir)
    embeddings_run = from_main(aligned) if cfg.downstream.embeddings is not None else None
    embeddings_dir = embeddings_run if cfg.downstream.embeddings == "latest" else None
    trained = train_downstream(cfg, force=force, dataset_dir=dataset_dir, embeddings_dir=embeddings_dir)
    if not state.is_main_process:  # recommending is one process's work: the helpers are done
        return None
    assert dataset is not None and trained is not None
    made = recommend(cfg, force=force, run_dir=trained.run_dir, dataset_dir=dataset_dir, embeddings_dir=embeddings_dir)
    return MainJob(dataset, aligned, trained, made)


def status(config: ConfigLike = None, *, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Published runs per stage and what `run` would do next and why (`seqrec-pipeline status`); writes nothing."""
    from pipeline import status as report

    return report.status(as_config(config, overrides))

