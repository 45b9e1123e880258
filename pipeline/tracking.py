"""Send a published run to the team's tracker (`tracking.backend`: tensorboard or mlflow) through Accelerate's
tracker API: the run id is the tracker's run name, the resolved config its hyperparameters, and every record
of the run's `history.jsonl` one logged step, followed by its test metrics.

A run is sent once it is published, from its folder, not while it trains: the training loops stay free of
tracker calls, a resumed run is sent whole, and a re-run that reuses a published run sends nothing again.
With `none` (the default) nothing of Accelerate's trackers, TensorBoard or MLflow is imported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.config import PipelineConfig
from pipeline.contracts.history import read_history


def flat_config(tree: dict[str, Any], prefix: str = "") -> dict[str, int | float | str | bool]:
    """The config as one level of dotted keys; values trackers cannot store (lists, null) as JSON text."""
    flat: dict[str, int | float | str | bool] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, int | float | str | bool) else json.dumps(value)
    return flat


def scalars(record: dict[str, Any], prefix: str) -> dict[str, float]:
    """A history record's numbers (not its position: step, epoch, stage), named `<prefix>/<key>`."""
    return {f"{prefix}/{key}": float(value) for key, value in record.items()
            if isinstance(value, int | float) and not isinstance(value, bool) and key not in ("step", "epoch", "stage")}


def track(config: PipelineConfig, run_dir: Path, manifest: dict[str, Any]) -> None:
    """Log one published run (its curve, then its test metrics) to `tracking.backend`; nothing when `none`."""
    backend = config.tracking.backend
    if backend == "none":
        return
    from accelerate import Accelerator

    folder = Path(config.tracking.dir) if config.tracking.dir else Path(config.workspace.root) / "tracking"
    accelerator = Accelerator(log_with=backend, project_dir=folder)
    kind = str(manifest.get("kind", "run"))
    accelerator.init_trackers(str(manifest.get("run_id", run_dir.name)), config=flat_config(config.model_dump(mode="json")))
    step = 0
    for step, record in enumerate(read_history(run_dir), start=1):
        accelerator.log(scalars(record, kind), step=int(record.get("step", step)) if "stage" not in record else step)
    test = (manifest.get("metrics") or {}).get("test") or {}
    if test:
        accelerator.log({f"test/{name}": float(value) for name, value in test.items()}, step=step)
    accelerator.end_training()
