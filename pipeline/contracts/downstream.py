"""The downstream-run contract: what `train-downstream` publishes and `evaluate`, `recommend` and `report` read.

A downstream run folder holds:

- `model.safetensors`: the trained weights at the best epoch (the sequence kinds; the frozen embedding
  table is not copied: it is re-read from the embeddings run the manifest names).
- `config.json`: the `downstream` section the run was trained with (read back through `read_config`,
  which upgrades settings renamed or added since).
- `metrics.json`: `model` and `popularity`, each with `valid` and `test` metrics, `protocol`,
  `best_epoch` and (runs made before `history.jsonl`) the per-epoch `history`.
- `index.faiss`: an inner-product index over the trained item vectors, row i = the dataset's item i + 1.
- `history.jsonl` (`contracts.history`) and `manifest.json` (kind "downstream", `model`,
  `dataset_run_id`, `embeddings_run_id`, `embedding_dim`, ...).
- A Recformer run keeps its encoder, item table and `recformer` section too; only its kind reads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline.artifact_files import read_faiss, read_json, read_tensors
from pipeline.config import DownstreamConfig, saved_section
from pipeline.contracts.embeddings import CONFIG_FILE, INDEX_FILE
from pipeline.errors import BadInput
from pipeline.store import write_json_atomic

WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
__all__ = ["CONFIG_FILE", "INDEX_FILE", "METRICS_FILE", "WEIGHTS_FILE"]


def save_tensors(path: Path, tensors: dict[str, Any]) -> None:
    """Write `tensors` (torch) as safetensors under a temporary name, then rename it into place."""
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.tmp")
    save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, str(tmp))
    tmp.replace(path)


def write_weights(folder: Path, tensors: dict[str, Any]) -> None:
    save_tensors(folder / WEIGHTS_FILE, tensors)


def read_weights(run_dir: Path) -> dict[str, Any]:
    """The run's trained weights (CPU tensors). Raises BadInput: missing or damaged."""
    return read_tensors(Path(run_dir) / WEIGHTS_FILE)


def write_config(folder: Path, section: dict[str, Any]) -> None:
    write_json_atomic(folder / CONFIG_FILE, section)


def read_saved_config(run_dir: Path) -> Any:
    """`config.json` as saved (a JSON object for any run made by `train-downstream`). Raises BadInput."""
    return read_json(Path(run_dir) / CONFIG_FILE)


def read_config(run_dir: Path) -> DownstreamConfig:
    """The downstream settings a run was trained with (settings added since at their old behaviour).

    Raises:
        BadInput: the file is unreadable or no longer a valid `downstream` section.
    """
    path = Path(run_dir) / CONFIG_FILE
    saved = read_saved_config(run_dir)
    if not isinstance(saved, dict):
        raise BadInput(f"{path}: not a downstream config (a JSON {type(saved).__name__}, not an object)")
    try:
        return DownstreamConfig.model_validate(saved_section("downstream", saved))
    except ValidationError as exc:
        raise BadInput(f"{path}: not a valid downstream config ({exc.error_count()} problems, first: "
                       f"{'.'.join(map(str, exc.errors()[0]['loc']))}: {exc.errors()[0]['msg']})") from None


def write_metrics(folder: Path, metrics: dict[str, Any]) -> None:
    write_json_atomic(folder / METRICS_FILE, metrics)


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """`metrics.json`'s content. Raises BadInput: missing or not JSON."""
    return read_json(Path(run_dir) / METRICS_FILE)


def write_index(folder: Path, index: Any) -> None:
    """`index.faiss`: the FAISS index over the trained item vectors, in item order."""
    import faiss

    faiss.write_index(index, str(folder / INDEX_FILE))


def read_index(run_dir: Path, num_items: int, dim: int) -> Any:
    """The run's item index, checked to cover `num_items` vectors of width `dim`.

    Raises:
        BadInput: the file is missing or holds another number or width of vectors.
    """
    path = Path(run_dir) / INDEX_FILE
    if not path.exists():
        raise BadInput(f"{path}: no item index (set recommend.search=exact)")
    index = read_faiss(path)
    if index.ntotal != num_items or index.d != dim:
        raise BadInput(f"{path}: index holds {index.ntotal} vectors of dim {index.d}, the model {num_items} of dim {dim}")
    return index
