"""`seqrec-pipeline gc`: delete old runs, never one still in use.

Per output (`<root>/<kind>/<name>`) the newest `keep` published runs and the one `latest` points to are
kept, and so is every run a kept run depends on (a model's dataset and embeddings runs, the model behind
kept recommendations), across outputs, transitively. An output whose lock another job holds is left
alone. A run is renamed out of sight in one step before it is deleted, so a crash never leaves a
half-deleted run that looks published. Partial folders of killed jobs are kept: the next run resumes them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline import events
from pipeline.errors import Locked
from pipeline.store import KINDS, Output
from pipeline.workspace import Published, published_runs

# Manifest keys naming a run the run needs to be read (its inputs). Provenance alone (the base an
# incremental run was built on, a warm start's source) does not keep a run: each run is self-contained.
DEPENDENCY_KEYS = ("dataset_run_id", "embeddings_run_id", "downstream_run_id")


@dataclass(frozen=True)
class Collection:
    """What `gc` keeps and deletes, per run."""

    kept: list[Published]
    deleted: list[Published]
    skipped_locked: list[Path]


def outputs(root: Path) -> list[Output]:
    return [Output(folder) for kind in KINDS if (root / kind).is_dir()
            for folder in sorted((root / kind).iterdir()) if folder.is_dir() and not folder.is_symlink()]


def plan(root: Path, keep: int) -> Collection:
    """Decide without deleting anything (the dry run)."""
    runs = {output: published_runs(output) for output in outputs(root)}
    wanted: set[str] = set()
    for output, found in runs.items():
        latest = output.latest()
        wanted.update(run.run_id for run in found[:keep])
        wanted.update(run.run_id for run in found if latest is not None and run.run_dir.name == latest.name)
    every = {run.run_id: run for found in runs.values() for run in found}
    frontier = list(wanted)
    while frontier:  # dependencies of kept runs are kept, transitively
        run = every.get(frontier.pop())
        for key in DEPENDENCY_KEYS:
            needed = None if run is None else run.manifest.get(key)
            if needed and needed not in wanted:
                wanted.add(str(needed))
                frontier.append(str(needed))
    kept = [run for found in runs.values() for run in found if run.run_id in wanted]
    deleted = [run for found in runs.values() for run in found if run.run_id not in wanted]
    return Collection(kept, deleted, [])


def collect(root: Path, keep: int, delete: bool, lock_wait_s: float, stale_lock_s: float) -> Collection:
    """Plan, then (with `delete`) remove the runs no longer kept, output by output under its lock."""
    planned = plan(root, keep)
    if not delete:
        return planned
    done, locked = [], []
    for output in outputs(root):
        doomed = [run for run in planned.deleted if run.run_dir.parent == output.path]
        if not doomed:
            continue
        try:
            with output.lock(lock_wait_s, stale_lock_s):
                latest = output.latest()  # re-read under the lock: a job may have pointed it elsewhere since
                for run in doomed:
                    if latest is None or run.run_dir.name != latest.name:
                        _remove(output, run)
                        done.append(run)
        except Locked:
            locked.append(output.path)
            events.emit("gc_skipped", f"{output.path} is locked by a running job: left alone", path=str(output.path))
    return Collection(planned.kept, done, locked)


def _remove(output: Output, run: Published) -> None:
    trash = output.path / f".gc-{run.run_dir.name}-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.rename(run.run_dir, trash)
        shutil.rmtree(trash)
