"""Accelerate helpers shared by the alignment methods: each process's share of the item rows, memory, logging."""

from __future__ import annotations

import contextlib
import resource
from collections.abc import Callable, Iterator

import torch
from accelerate import Accelerator

from pipeline import events
from stages.align.item_shards import owned


def my_range(accelerator: Accelerator, total: int) -> range:
    """This process's contiguous share of rows 0..total-1: one shard per process, cut as SAID's item shards are."""
    return owned(total, None, accelerator.process_index, accelerator.num_processes).rows


def own_peak_rss_gib() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)


def peak_rss_gib(accelerator: Accelerator) -> list[float]:
    """Every process's peak resident memory so far, in process order (every process calls)."""
    mine = torch.tensor([own_peak_rss_gib()], dtype=torch.float64, device=accelerator.device)
    return [round(value, 3) for value in accelerator.gather(mine).tolist()]


def say(accelerator: Accelerator) -> Callable[..., None]:
    """`events.emit` on the main process, a no-op elsewhere (one line per event, not one per process)."""
    return events.emit if accelerator.is_main_process else (lambda *args, **kwargs: None)


class _Silent:
    def resume_at(self, done: int) -> None:
        pass

    def advance(self, n: int = 1, **fields: object) -> None:
        pass


@contextlib.contextmanager
def progress(accelerator: Accelerator, description: str, total: int, unit: str) -> Iterator[object]:
    """A progress tracker on the main process; a silent one elsewhere."""
    if not accelerator.is_main_process:
        yield _Silent()
        return
    with events.Tracker(description, total, unit) as tracker:
        yield tracker
