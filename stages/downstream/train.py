"""`seqrec-pipeline train-downstream`: train a recommender of the configured kind on frozen item embeddings.

The kind (`kinds.KINDS`) is chosen once: it says what the run id hashes and trains the run (a sequence kind
through `fit`, Recformer by fine-tuning its encoder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import events
from pipeline.config import PipelineConfig
from pipeline.contracts.dataset import item_count
from pipeline.contracts.embeddings import Embeddings
from pipeline.run_ids import code_identity, stage_run_id
from pipeline.store import RunResult, read_manifest, workspace_output
from stages.accelerator import publish_on_every_process
from stages.downstream import kinds, runs
from stages.downstream.warm_start import WarmStart


def catalog_size(dataset_dir: Path) -> int:
    """The dataset's item count, from the Parquet footer (nothing else is read)."""
    return item_count(dataset_dir)


def concrete_loss(config: PipelineConfig, num_items: int) -> PipelineConfig:
    """`loss: auto` made concrete: the full softmax while the catalog is small enough for it to be cheap,
    else a sampled softmax over popularity-drawn negatives with the logQ correction (said in one line).

    Run ids hash the concrete loss, so `auto` on a small catalog is the same run as `ce`.
    """
    train = config.downstream.train
    if train.loss != "auto":
        return config
    if num_items <= train.full_softmax_max_items:
        concrete = train.model_copy(update={"loss": "ce"})
    else:
        concrete = train.model_copy(update={"loss": "sampled", "sampler": "popularity"})
        events.emit("sampled_softmax", f"{num_items:,} items > downstream.train.full_softmax_max_items "
                    f"({train.full_softmax_max_items:,}): sampled softmax over {train.negatives} popularity-drawn "
                    "negatives per batch (set downstream.train.loss=ce to keep the full softmax)")
    downstream = config.downstream.model_copy(update={"train": concrete})
    return config.model_copy(update={"downstream": downstream})


def warm_source(config: PipelineConfig, dataset_run_id: str, embeddings: Embeddings | None) -> WarmStart | None:
    """The run a `downstream.train.init: previous` run starts from, where its kind warm-starts and one is found."""
    if config.downstream.train.init != "previous":
        return None
    return kinds.kind_of(config.downstream.model.kind).warm_source(config, dataset_run_id, embeddings)


def run_id(config: PipelineConfig, dataset_run_id: str, embeddings: Embeddings | None,
           warm: WarmStart | None = None) -> str:
    """A downstream run's id: the settings its kind reads, its dataset and embeddings runs, what else the kind
    reads (Recformer: its config section and the starting checkpoint's weights) and the run it warm-starts from."""
    name = config.downstream.model.kind
    kind = kinds.kind_of(name)
    start = [] if warm is None else [f"init {warm.run_id}"]
    return stage_run_id("train-downstream", kind.settings_read(config), dataset_run_id,
                        None if embeddings is None else embeddings.run_id, *kind.other_inputs(config), *start,
                        code=code(name))


def code(kind: str) -> str:
    """The identity of the code that makes `kind`'s runs: stage two without the other kinds' own modules."""
    return code_identity(("stages.downstream.train",),
                         tuple(module for name, module in kinds.OWN_CODE.items() if name != kind))


@events.in_stage("train-downstream")
def run(config: PipelineConfig, force: bool = False, dataset_dir: Path | None = None,
        embeddings_dir: Path | None = None) -> RunResult | None:
    """Train, evaluate and publish under `<root>/downstream/<data.name>/<run_id>`; a no-op when published.

    `dataset_dir` and `embeddings_dir` name the input runs (a scheduled job passes the ones it just
    published, so a concurrent job cannot swap them); by default the latest and `downstream.embeddings`.
    Under `accelerate launch` every process trains its share of the batches (DDP); None on helper processes.
    """
    dataset_dir = dataset_dir or runs.dataset_dir(config)
    dataset_run_id = read_manifest(dataset_dir)["run_id"]
    config = concrete_loss(config, catalog_size(dataset_dir))
    embeddings = runs.embeddings_for(config, embeddings_dir)
    name = config.downstream.model.kind
    kind = kinds.kind_of(name)
    warm = warm_source(config, dataset_run_id, embeddings)

    def build_run(folder: Path) -> dict[str, Any]:
        if warm is None and config.downstream.train.init == "previous":
            events.emit("warm_start", "downstream.train.init=previous: no earlier compatible run; a fresh start")
        facts = kind.train(folder, config, dataset_dir, dataset_run_id, embeddings, warm)
        return {**facts, "code_identity": code(name)}

    made = run_id(config, dataset_run_id, embeddings, warm)
    events.making(made)
    return publish_on_every_process(workspace_output(config, "downstream"), made, build_run, force=force,
                                    keep_partial=True, lock_wait_s=config.workspace.lock_wait_s,
                                    stale_lock_s=config.workspace.stale_lock_s, scratch=runs.SCRATCH)
