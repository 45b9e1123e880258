"""Progress bars and event logs, for people (rich) or for schedulers (one JSON object per line).

Everything goes to stderr so stdout stays free for command results (e.g. `inspect`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Literal, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

LogFormat = Literal["text", "json"]
T = TypeVar("T")

_state: dict[str, object] = {"format": "text"}
_console = Console(stderr=True, soft_wrap=True)
_JSON_PROGRESS_EVERY_S = 5.0


def set_format(fmt: LogFormat) -> None:
    """Choose human (`text`) or machine (`json`) output for the whole process.

    In `json` mode Hugging Face libraries' own progress bars are switched off too (read when they are
    first imported, which happens later, inside the stages), so stderr holds only JSON lines.
    """
    _state["format"] = fmt
    if fmt == "json":
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def emit(event: str, message: str = "", **fields: object) -> None:
    """Report one event: a line for people, or a JSON object with `event`, `time` and the fields."""
    if _state["format"] == "json":
        record = {"event": event, "time": round(time.time(), 3), "message": message, **fields}
        sys.stderr.write(json.dumps(record, default=str) + "\n")
        sys.stderr.flush()
    else:
        _console.print(message or event, highlight=False)


def _rate_fields(done: int, total: int | None, started: float, unit: str) -> dict[str, object]:
    elapsed = max(time.perf_counter() - started, 1e-9)
    rate = done / elapsed
    eta = (total - done) / rate if total is not None and rate > 0 else None
    return {"done": done, "total": total, "unit": unit, f"{unit}_per_s": round(rate, 2),
            "elapsed_s": round(elapsed, 2), "eta_s": None if eta is None else round(eta, 1)}


class Tracker:
    """A progress counter advanced by hand (for work measured in rows, tokens, steps)."""

    def __init__(self, description: str, total: int | None, unit: str) -> None:
        self.description, self.total, self.unit = description, total, unit
        self.done = 0
        self._started = self._last_report = time.perf_counter()
        self._progress: Progress | None = None

    def __enter__(self) -> Tracker:
        if _state["format"] == "text":
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=_console, transient=False)
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total, rate="")
        return self

    def advance(self, n: int = 1, **fields: object) -> None:
        self.done += n
        if self._progress is not None:
            elapsed = max(time.perf_counter() - self._started, 1e-9)
            extra = " ".join(f"{k}={v}" for k, v in fields.items())
            rate = f"{self.done / elapsed:,.1f} {self.unit}/s {extra}".rstrip()
            self._progress.update(self._task, advance=n, rate=rate)
        elif time.perf_counter() - self._last_report >= _JSON_PROGRESS_EVERY_S:
            self._last_report = time.perf_counter()
            emit("progress", self.description, **_rate_fields(self.done, self.total, self._started, self.unit), **fields)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
        emit("progress_done", f"{self.description}: {self.done:,} {self.unit}",
             **_rate_fields(self.done, self.total, self._started, self.unit))


def track(items: Iterable[T], description: str, total: int | None = None, unit: str = "items") -> Iterator[T]:
    """Iterate with a progress bar (rate and ETA), or periodic JSON progress events."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Tracker(description, total, unit) as tracker:
        for item in items:
            yield item
            tracker.advance()
