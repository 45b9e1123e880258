"""One Accelerator per stage, each with the mixed precision its own config section names.

Accelerate keeps its settings in process-wide shared state: the first Accelerator fixes the mixed precision
for every later one, and a later one asking for another precision is refused. `seqrec-pipeline run` runs
align, train-downstream and recommend in one process, so each stage clears that state first (Accelerate's
own `_reset_state`, which its test suite uses the same way). The process group (PartialState) is kept, so
this is safe under `accelerate launch`.
"""

from __future__ import annotations

from typing import Literal

from accelerate import Accelerator
from accelerate.state import AcceleratorState


def stage_accelerator(mixed_precision: Literal["no", "fp16", "bf16"] = "no") -> Accelerator:
    """A fresh Accelerator with exactly this mixed precision, whatever an earlier stage in the process used."""
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=mixed_precision)
