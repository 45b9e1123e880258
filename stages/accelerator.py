"""One Accelerator per stage, each with the mixed precision its own config section names.

Accelerate keeps its settings in process-wide shared state: the first Accelerator fixes the mixed precision
for every later one, and a later one asking for another precision is refused. `seqrec-pipeline run` runs
align, train-downstream and recommend in one process, so each stage clears that state first (Accelerate's
own `_reset_state`, which its test suite uses the same way). The process group (PartialState) is kept, so
this is safe under `accelerate launch`.

bf16 autocast on a CPU that oneDNN has no bf16 kernels for (no AVX-512) is emulated: on a 2-core AVX2 EPYC
a 2048x384x1536 matmul ran at 1.3 GFLOP/s in bf16 against 64.6 in float32, and Recformer pretraining at
0.02 steps/s against 0.31. Such a stage runs in float32 and says so; its manifest records the precision
it ran in.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState
from accelerate.utils import parse_flag_from_env

from pipeline.config import MixedPrecision
from pipeline.events import emit
from pipeline.store import Output, RunResult, publish_run


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls natively (torch's own test of oneDNN's bf16 support)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def stage_accelerator(mixed_precision: MixedPrecision = "no") -> Accelerator:
    """A fresh Accelerator with this mixed precision, whatever an earlier stage in the process used (float32
    instead of bf16 on a CPU that would emulate it)."""
    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(mixed_precision=mixed_precision)
    if accelerator.mixed_precision == "bf16" and accelerator.device.type == "cpu" and not cpu_has_fast_bf16():
        if accelerator.is_main_process:
            emit("bf16_emulated", "mixed_precision bf16: this CPU has no bf16 matmul kernels (emulated bf16 runs "
                 "many times slower than float32), so this stage runs in float32", requested="bf16", running="no")
        return stage_accelerator("no")
    return accelerator


def process_state() -> PartialState:
    """The processes `accelerate launch` started. Accelerator reads ACCELERATE_USE_CPU; a bare PartialState()
    does not and, made first, would see one process on CPU, for every later Accelerator too."""
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def publish_on_every_process(output: Output, run_id: str, build: Callable[[Path], dict[str, Any]], *,
                             force: bool = False, **publishing: Any) -> RunResult | None:
    """`publish_run` for a stage every process of `accelerate launch` takes part in: the main process publishes
    as usual; each helper runs `build` into the same partial folder, once the main process has prepared it
    (cleared under `force`, or kept to resume from), and returns None. A published run is reused by the main
    process alone."""
    state = process_state()

    def together(folder: Path) -> dict[str, Any]:
        state.wait_for_everyone()  # the main process has prepared `folder`
        return build(folder)

    if state.num_processes == 1:
        return publish_run(output, run_id, build, force=force, **publishing)
    if not state.is_main_process:
        if not force and output.is_published(run_id):
            return None
        together(output.partial_dir(run_id))
        state.wait_for_everyone()  # until the main process has published
        return None
    result = publish_run(output, run_id, together, force=force, **publishing)
    if not result.reused:
        state.wait_for_everyone()
    return result
