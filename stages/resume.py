"""Resumable training under Accelerate, shared by every training loop (SAID, Recformer, stage two).

A checkpoint is `<root>/<prefix>-<counter>/`: Accelerate's full state (weights, optimizer, registered
schedulers, RNG states) plus the loop's own position as `state.json`. It counts only once its `COMPLETE`
marker exists, and older ones are dropped after that, so a crash at any moment leaves one usable checkpoint.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from pipeline.store import complete_checkpoint, latest_checkpoint, write_json_atomic

STATE_FILE = "state.json"


class _TiedWeightsNotice(logging.Filter):
    """Drops Accelerate's notice that a tied weight (Recformer's MLM decoder = the word embeddings) was saved
    once: loading re-ties it, as the pretraining resume test checks, and the notice repeated at every checkpoint."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Removed shared tensor" not in record.getMessage()


logging.getLogger("accelerate.utils.other").addFilter(_TiedWeightsNotice())


def save(accelerator: Accelerator, root: Path, prefix: str, counter: int, state: dict[str, Any],
         extra: Callable[[Path], None] | None = None) -> Path:
    """Write checkpoint `<prefix>-<counter>` (every process takes part), mark it complete, drop older ones.

    `extra(folder)`, run on the main process before the checkpoint counts, writes what else the loop needs.
    """
    folder = root / f"{prefix}-{counter:08d}"
    accelerator.save_state(str(folder), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if extra is not None:
            extra(folder)
        write_json_atomic(folder / STATE_FILE, state)
        complete_checkpoint(folder, f"{prefix}-*")
    accelerator.wait_for_everyone()
    return folder


def restore(accelerator: Accelerator, root: Path, prefix: str) -> tuple[Path, dict[str, Any]] | None:
    """Load the newest complete checkpoint into the prepared objects; its folder and loop state, or None."""
    folder = latest_checkpoint(root, f"{prefix}-*")
    if folder is None:
        return None
    accelerator.load_state(str(folder))
    return folder, json.loads((folder / STATE_FILE).read_text())
