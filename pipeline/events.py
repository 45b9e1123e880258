"""Events through Python `logging`, and progress bars; the command line prints them for people (rich) or for
schedulers (one JSON object per line).

Each event is a record on the logger `seqrec.<stage>` (`seqrec` outside a stage), so an orchestrator's own
handlers see them; its level is ERROR for errors, WARNING for what a person should look at, else INFO. The
command line's output is one handler on `seqrec` (`set_format`), writing to stderr so stdout stays free for
command results (e.g. `inspect`).
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
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
F = TypeVar("F", bound=Callable[..., object])
LOGGER = "seqrec"
WARNINGS = frozenset({"stale_lock", "skipped_users", "exact_search", "evidence_skipped", "gc_skipped", "bf16_emulated"})
# The stage whose events these are, and the run it is making once known: carried by every event.
_context: contextvars.ContextVar[tuple[str | None, str | None]] = contextvars.ContextVar(
    "seqrec_stage", default=(None, None))

_state: dict[str, object] = {"format": "text"}
_console = Console(stderr=True, soft_wrap=True)
_JSON_PROGRESS_EVERY_S = 5.0
_TEXT_PROGRESS_EVERY_S = 30.0  # a log file read by people: fewer, plainer lines


class CliHandler(logging.Handler):
    """The command line's output of events: a line for people, or a JSON object with `event`, `time`, `level`,
    `stage`, `run_id`, `message` and the event's fields."""

    def __init__(self, fmt: LogFormat) -> None:
        super().__init__(logging.INFO)
        self.fmt = fmt

    def emit(self, record: logging.LogRecord) -> None:
        if self.fmt == "json":
            line = {"event": getattr(record, "event", record.name), "time": round(record.created, 3),
                    "level": record.levelname.lower(), "stage": getattr(record, "stage", None),
                    "run_id": getattr(record, "run_id", None), "message": record.getMessage(),
                    **getattr(record, "fields", {})}
            sys.stderr.write(json.dumps(line, default=str) + "\n")
            sys.stderr.flush()
        else:
            _console.print(record.getMessage(), highlight=False, markup=False)  # paths and data: never markup


def set_format(fmt: LogFormat) -> None:
    """Print events as the command line does, human (`text`) or machine (`json`), for the whole process.

    In `json` mode Hugging Face libraries' own progress bars are switched off too (read when they are
    first imported, which happens later, inside the stages), so stderr holds only JSON lines. Under
    `accelerate launch` only the first process (RANK 0) prints every event; the others print warnings and
    errors, so a stage all processes run is told once.
    """
    _state["format"] = fmt
    if fmt == "json":
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logger = logging.getLogger(LOGGER)
    for handler in [h for h in logger.handlers if isinstance(h, CliHandler)]:
        logger.removeHandler(handler)
    handler = CliHandler(fmt)
    if os.environ.get("RANK", "0") != "0":
        handler.setLevel(logging.WARNING)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def in_stage(stage: str) -> Callable[[F], F]:
    """Decorate a stage's entry: its events go to the logger `seqrec.<stage>` and carry `stage`."""
    def decorate(function: F) -> F:
        @functools.wraps(function)
        def run(*args: object, **kwargs: object) -> object:
            token = _context.set((stage, None))
            try:
                return function(*args, **kwargs)
            finally:
                _context.reset(token)
        return run  # type: ignore[return-value]
    return decorate


def making(run_id: str) -> None:
    """The current stage is making (or reusing) run `run_id`: its events from here on carry it."""
    _context.set((_context.get()[0], run_id))


def emit(event: str, message: str = "", **fields: object) -> None:
    """Report one event as a log record of the current stage (`message`, or the event's name)."""
    stage, run_id = _context.get()
    level = logging.ERROR if event == "error" else logging.WARNING if event in WARNINGS else logging.INFO
    logger = logging.getLogger(LOGGER if stage is None else f"{LOGGER}.{stage}")
    logger.log(level, message or event, extra={"event": event, "stage": stage, "fields": fields,
                                               "run_id": fields.get("run_id", run_id)})


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
