"""Progress bars and event logs, for people (rich) or for schedulers (one JSON object per line).

Everything goes to stderr so stdout stays free for command results (e.g. `inspect`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Literal, Self, TypeVar

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
_TEXT_PROGRESS_EVERY_S = 30.0  # a log file read by people: fewer, plainer lines


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
        _console.print(message or event, highlight=False, markup=False)  # messages quote paths and data: never markup


def _rate_fields(done: int, total: int | None, started: float, unit: str, resumed: int = 0) -> dict[str, object]:
    elapsed = max(time.perf_counter() - started, 1e-9)
    rate = (done - resumed) / elapsed  # work restored from a checkpoint was not done in this time
    eta = (total - done) / rate if total is not None and rate > 0 else None
    return {"done": done, "total": total, "unit": unit, f"{unit}_per_s": round(rate, 2),
            "elapsed_s": round(elapsed, 2), "eta_s": None if eta is None else round(eta, 1)}


class Tracker:
    """A progress counter advanced by hand (for work measured in rows, tokens, steps).

    On a terminal it is a live bar; in a log file (text mode, not a terminal) a plain line every
    `_TEXT_PROGRESS_EVERY_S`; in json mode a `progress` event every `_JSON_PROGRESS_EVERY_S`.
    """

    def __init__(self, description: str, total: int | None, unit: str) -> None:
        self.description, self.total, self.unit = description, total, unit
        self.done = self._resumed = 0
        self._started = self._last_report = time.perf_counter()
        self._progress: Progress | None = None

    def __enter__(self) -> Self:
        if _state["format"] == "text" and _console.is_terminal:
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=_console, transient=False)
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total, rate="")
        return self

    def resume_at(self, done: int) -> None:
        """Start from work a checkpoint restored: counted as done, left out of the rate and ETA."""
        self.done = self._resumed = done
        self._started = time.perf_counter()
        if self._progress is not None:
            self._progress.reset(self._task, completed=done)  # also clears the bar's speed samples

    def advance(self, n: int = 1, json_only: dict[str, object] | None = None, **fields: object) -> None:
        """Count `n` more; `fields` are shown with the progress, `json_only` only in JSON events (raw values
        too jumpy to read, e.g. a length-sorted batch's own loss)."""
        self.done += n
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        if self._progress is not None:
            elapsed = max(time.perf_counter() - self._started, 1e-9)
            rate = f"{(self.done - self._resumed) / elapsed:,.1f} {self.unit}/s {extra}".rstrip()
            self._progress.update(self._task, advance=n, rate=rate)
            return
        every = _JSON_PROGRESS_EVERY_S if _state["format"] == "json" else _TEXT_PROGRESS_EVERY_S
        if time.perf_counter() - self._last_report < every:
            return
        self._last_report = time.perf_counter()
        stats = _rate_fields(self.done, self.total, self._started, self.unit, self._resumed)
        if _state["format"] == "json":
            emit("progress", self.description, **stats, **fields, **(json_only or {}))
            return
        eta = "" if stats["eta_s"] is None else f", ETA {clock(float(stats['eta_s']))}"
        of = "" if self.total is None else f"/{self.total:,}"
        emit("progress", f"{self.description}: {self.done:,}{of} {self.unit}, "
             f"{stats[f'{self.unit}_per_s']:,} {self.unit}/s{eta} {extra}".rstrip())

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        """Close with the count reached; work cut short by an error or a kill says it stopped there."""
        if self._progress is not None:
            self._progress.stop()
        stats = _rate_fields(self.done, self.total, self._started, self.unit, self._resumed)
        if exc_type is None:
            emit("progress_done", f"{self.description}: {self.done:,} {self.unit}", **stats)
            return
        of = "" if self.total is None else f" of {self.total:,}"
        emit("progress_stopped", f"{self.description}: stopped after {self.done:,}{of} {self.unit}", **stats)


def clock(seconds: float) -> str:
    """12 s, 3m05s, 1h02m: an ETA a person reads at a glance."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def track(items: Iterable[T], description: str, total: int | None = None, unit: str = "items") -> Iterator[T]:
    """Iterate with a progress bar (rate and ETA), or periodic JSON progress events."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Tracker(description, total, unit) as tracker:
        for item in items:
            yield item
            tracker.advance()
