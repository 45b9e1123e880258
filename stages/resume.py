"""Resumable training under Accelerate, shared by every training loop (SAID, Recformer, stage two).

A checkpoint is `<root>/<prefix>-<counter>/`: the weights of each model (safetensors), each optimizer's and
scheduler's state (one copy, or one per process where each process trains its own shard of the items) and
every process's random generators (`checkpoint_state`: safetensors + JSON, never a
pickle), plus the loop's own position and the list of pieces written, as `state.json`. It counts only once
its `COMPLETE` marker exists, and older ones are dropped after that, so a crash at any moment leaves one
usable checkpoint. A resume restores every piece the checkpoint lists or stops with `ResumeFailed`: carrying
on with fresh generators would publish a different result under the same run id.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, load_model, save_model

from pipeline.errors import Diverged, ResumeFailed
from pipeline.faults import crash_point
from pipeline.store import complete_checkpoint, latest_checkpoint, write_json_atomic
from stages import checkpoint_state
from stages.checkpoint_state import StateError

STATE_FILE = "state.json"
FORMAT = 2  # 1 was Accelerate's save_state (pickled RNG and scheduler state): refused, never unpickled


@dataclass(frozen=True)
class Parts:
    """The prepared objects whose state a checkpoint holds (schedulers: anything with a plain-data state_dict)."""

    models: Sequence[torch.nn.Module]
    optimizers: Sequence[torch.optim.Optimizer] = ()
    schedulers: Sequence[Any] = ()
    # False: DDP keeps the processes' copies equal, the main process writes one. True: each process holds its
    # own state (its shard of the item table and that shard's optimizer state) and writes and reads its own.
    per_process: bool = False


def _stateful(accelerator: Accelerator, parts: Parts) -> dict[str, Any]:
    """The objects whose `state_dict` a checkpoint holds, by name."""
    pieces: dict[str, Any] = {f"optimizer-{i}": o for i, o in enumerate(parts.optimizers)}
    pieces.update({f"scheduler-{i}": s for i, s in enumerate(parts.schedulers)})
    if accelerator.scaler is not None:  # fp16: the loss scale and its growth tracker
        pieces["scaler"] = accelerator.scaler
    return pieces


def save(accelerator: Accelerator, root: Path, prefix: str, counter: int, state: dict[str, Any], parts: Parts,
         extra: Callable[[Path], None] | None = None) -> Path:
    """Write checkpoint `<prefix>-<counter>` (every process takes part), mark it complete, drop older ones.

    `extra(folder)`, run on the main process before the checkpoint counts, writes what else the loop needs.
    """
    folder = root / f"{prefix}-{counter:08d}"
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint_state.write(folder, f"rng-{accelerator.process_index}", checkpoint_state.rng_state())
    if parts.per_process:
        _write_parts(folder, accelerator, parts)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if not parts.per_process:
            _write_parts(folder, accelerator, parts)
        if extra is not None:
            extra(folder)
        crash_point("checkpoint.before_complete")
        write_json_atomic(folder / STATE_FILE, {
            "format": FORMAT, "loop": state, "processes": accelerator.num_processes,
            "models": len(parts.models), "pieces": sorted(_stateful(accelerator, parts)),
            "per_process": parts.per_process})
        complete_checkpoint(folder, f"{prefix}-*")
    accelerator.wait_for_everyone()
    return folder


def _own(accelerator: Accelerator, parts: Parts, name: str) -> str:
    """A piece's file name: one per process where each holds its own state."""
    return f"{name}-p{accelerator.process_index}" if parts.per_process else name


def _write_parts(folder: Path, accelerator: Accelerator, parts: Parts) -> None:
    for i, model in enumerate(parts.models):
        save_model(accelerator.unwrap_model(model), str(folder / f"{_own(accelerator, parts, f'model-{i}')}.safetensors"))
    for name, stateful in _stateful(accelerator, parts).items():
        checkpoint_state.write(folder, _own(accelerator, parts, name), stateful.state_dict())


def stop_if_diverged(loss: float, where: str) -> None:
    """Stop training at a NaN or infinite loss, before it reaches the weights: nothing after it could be published.

    Raises:
        Diverged: `loss` is not finite (the checkpoints made so far are kept).
    """
    if not math.isfinite(loss):
        raise Diverged(f"training loss is {loss} at {where}: stopped, nothing published; the checkpoints made so "
                       "far are kept (a learning rate too high?)")


def restore(accelerator: Accelerator, root: Path, prefix: str, parts: Parts) -> tuple[Path, dict[str, Any]] | None:
    """Load the newest complete checkpoint into `parts` and this process's generators; its folder and loop
    state, or None when there is none.

    Raises:
        ResumeFailed: a piece the checkpoint lists is missing or unreadable, or it does not fit `parts`.
    """
    folder = latest_checkpoint(root, f"{prefix}-*")
    if folder is None:
        return None
    try:
        saved = _read_state(folder)
        _check_fits(saved, accelerator, parts)
        for i, model in enumerate(parts.models):
            _load_model(accelerator.unwrap_model(model), folder / f"{_own(accelerator, parts, f'model-{i}')}.safetensors")
        for name, stateful in _stateful(accelerator, parts).items():
            checkpoint_state.load_into(stateful, checkpoint_state.read(folder, _own(accelerator, parts, name)), name)
        checkpoint_state.set_rng_state(checkpoint_state.read(folder, f"rng-{accelerator.process_index}"))
    except StateError as exc:
        raise ResumeFailed(f"cannot resume from {folder}: {exc}; stopping rather than training on from partial "
                           "state (re-run with --force to start over)") from None
    return folder, saved["loop"]


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file a loop saved beside its checkpoint (`extra`).

    Raises:
        ResumeFailed: it is missing or unreadable.
    """
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - missing file, truncated header: the resume cannot go on either way
        raise ResumeFailed(f"cannot resume from {path.parent}: {path.name}: {' '.join(str(exc).split())}") from None


def _read_state(folder: Path) -> dict[str, Any]:
    try:
        saved = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StateError(f"{folder / STATE_FILE}: {type(exc).__name__}: {exc}") from None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise StateError(f"{folder / STATE_FILE}: not a checkpoint of format {FORMAT} (an older one holds "
                         "pickled state, which is never loaded)")
    return saved


def _check_fits(saved: dict[str, Any], accelerator: Accelerator, parts: Parts) -> None:
    """The checkpoint holds exactly the pieces this run has: none left unrestored, none missing."""
    wanted = sorted(_stateful(accelerator, parts))
    if saved.get("processes") != accelerator.num_processes:
        raise StateError(f"saved by {saved.get('processes')} processes, resumed by {accelerator.num_processes}")
    if saved.get("per_process", False) != parts.per_process:
        raise StateError(f"holds {'per-process' if saved.get('per_process') else 'shared'} state, this run has "
                         f"{'per-process' if parts.per_process else 'shared'} state")
    if saved.get("models") != len(parts.models) or saved.get("pieces") != wanted:
        raise StateError(f"holds {saved.get('models')} models and {saved.get('pieces')}, this run has "
                         f"{len(parts.models)} and {wanted}")


def _load_model(model: torch.nn.Module, path: Path) -> None:
    try:
        load_model(model, str(path), strict=True)
    except Exception as exc:  # noqa: BLE001 - missing file, truncated header or mismatched keys alike
        raise StateError(f"{path}: {type(exc).__name__}: {' '.join(str(exc).split())}") from None
