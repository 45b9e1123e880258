"""The artifact store: run folders keyed by a hash of inputs and config, atomic publish, `latest`, locks.

Layout of one output (e.g. `artifacts/datasets/ml-100k`)::

    <output>/<run_id>/            a published run; complete once its manifest.json exists
    <output>/.partial-<run_id>/   a run being written (kept after a crash so long stages can resume)
    <output>/latest -> <run_id>   switched last, by an atomic rename of a symlink
    <output>/.lock                one job at a time per output (`lockfile`)

A crash or kill at any point leaves every published run and the `latest` pointer intact, and the next run
of the same command finishes the job: resume state (a stage's `scratch` entries, e.g. its checkpoints) is
removed only after the run it made is published, and whatever a killed publish left behind is cleared by
the next one. The named crash points (`pipeline.faults`) mark the moments the fault-injection suite tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import events, lockfile
from pipeline.atomic import exchange
from pipeline.errors import BadInput, Locked, NonFinite
from pipeline.faults import crash_point
from pipeline.integrity import (
    non_finite,
    record_files,
    sha256_file,  # noqa: F401 - re-exported: readers hash their sources with it
)

if TYPE_CHECKING:
    from pipeline.config import PipelineConfig

MANIFEST = "manifest.json"
COMPLETE = "COMPLETE"  # inside a checkpoint folder: written last, so a checkpoint without it never counts
LATEST = "latest"
LOCK = ".lock"
REPLACED = ".replaced-"  # a run swapped out by --force, deleted right after; any left is a killed publish's


def _umask() -> int:
    """The process umask: read from /proc where Linux shows it, else set and restored at once."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0)
    os.umask(mask)
    return mask


def normalise_modes(folder: Path) -> None:
    """Give `folder` and everything in it the mode the umask gives any new file or folder (0644 / 0755 under 022).

    Some writers pick their own (safetensors writes 0600), and a serving process running as another user must
    be able to read what a job published.
    """
    mask = _umask()
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def latest_checkpoint(root: Path, pattern: str) -> Path | None:
    """The newest complete checkpoint folder matching `pattern` (names sort by step) under `root`."""
    done = sorted(p for p in root.glob(pattern) if (p / COMPLETE).is_file())
    return done[-1] if done else None


def discard(folder: Path) -> None:
    """Delete a folder by renaming it away first: a kill mid-delete never leaves a half-deleted checkpoint
    (still marked COMPLETE) where a resume would look for one."""
    trash = folder.with_name(f".trash-{folder.name}-{os.getpid()}")
    try:
        os.rename(folder, trash)
    except FileNotFoundError:
        return
    crash_point("checkpoint.discard")
    shutil.rmtree(trash, ignore_errors=True)


def complete_checkpoint(folder: Path, pattern: str) -> None:
    """Mark `folder` complete, then drop its older siblings: a crash at any point leaves one complete checkpoint."""
    (folder / COMPLETE).touch()
    for old in folder.parent.glob(pattern):
        if old != folder:
            discard(old)
    for trash in folder.parent.glob(".trash-*"):  # left by a kill inside `discard`
        shutil.rmtree(trash, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary name beside `path`, then rename it into place: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
    except BaseException:  # a full disk: leave no temporary name behind
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to a temporary name beside `path`, then rename it into place."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The manifest of a published run.

    Raises:
        BadInput: the folder holds no complete run, or its manifest is not a JSON object.
    """
    path = run_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{run_dir}: not a complete run (no {MANIFEST})") from None
    except NotADirectoryError:
        raise BadInput(f"{run_dir}: a file, not a run folder") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: corrupt manifest ({exc})") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: a folder, not a manifest file") from None
    if not isinstance(manifest, dict) or "run_id" not in manifest:
        raise BadInput(f"{path}: corrupt manifest (not an object with a run_id)")
    return manifest


KINDS = ("datasets", "embeddings", "downstream", "recommendations")


def workspace_output(config: PipelineConfig, kind: str, name: str | None = None) -> Output:
    """`<workspace.root>/<kind>/<name>`: where runs of `kind` for dataset `name` (default `data.name`) live.

    Raises:
        BadInput: `workspace.root` exists and is not a folder.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    root = Path(config.workspace.root)
    if root.exists() and not root.is_dir():
        raise BadInput(f"workspace.root: {root} is a file, not a folder")
    return Output(root / kind / (name or config.data.name))


@dataclass(frozen=True)
class Output:
    """One output namespace: its published runs, the `latest` pointer and its lock."""

    path: Path

    def run_dir(self, run_id: str) -> Path:
        return self.path / run_id

    def partial_dir(self, run_id: str) -> Path:
        return self.path / f".partial-{run_id}"

    def is_published(self, run_id: str) -> bool:
        return (self.run_dir(run_id) / MANIFEST).is_file()

    def latest(self) -> Path | None:
        """The run `latest` points to, or None when nothing was published yet."""
        link = self.path / LATEST
        if not link.is_symlink():
            return None
        target = self.path / os.readlink(link)
        return target if (target / MANIFEST).is_file() else None

    def require_latest(self, missing: str) -> Path:
        """The run `latest` points to; `missing` is the message when there is none.

        Raises:
            BadInput: nothing was published here yet.
        """
        found = self.latest()
        if found is None:
            raise BadInput(f"{self.path}: {missing}")
        return found

    def check_latest(self) -> None:
        """Refuse an output whose `latest` is not a link: switching it would fail after all the work.

        Raises:
            BadInput: `latest` is a real file or folder.
        """
        link = self.path / LATEST
        if link.exists() and not link.is_symlink():
            raise BadInput(f"{link}: a real {'folder' if link.is_dir() else 'file'}, not the `latest` link the "
                           "store keeps; move it out of the output folder")

    def point_latest(self, run_id: str) -> None:
        """Switch `latest` to `run_id` in one rename of a fresh link over the old one."""
        tmp = self.path / f".{LATEST}.tmp-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        os.symlink(run_id, tmp)
        try:
            os.replace(tmp, self.path / LATEST)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise

    @contextlib.contextmanager
    def lock(self, wait_s: float = 0.0, stale_s: float = 24 * 3600.0) -> Iterator[None]:
        """Hold this output's lock; a lock that is unreadable, whose process is gone (same host) or older than
        `stale_s` is taken over.

        Raises:
            Locked: another live job still holds it after `wait_s` seconds.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        lock_path = self.path / LOCK
        deadline = time.monotonic() + wait_s
        while not lockfile.try_lock(lock_path):
            if lockfile.break_if_stale(lock_path, stale_s):
                continue
            if time.monotonic() >= deadline:
                raise Locked(f"{self.path} is locked by {lockfile.describe(lock_path)}; "
                             "wait for it or raise workspace.lock_wait_s")
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        try:
            yield
        finally:
            lock_path.unlink(missing_ok=True)


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    manifest: dict[str, Any]
    reused: bool


def _reuse(output: Output, run_id: str) -> RunResult:
    """Point `latest` at the published run, first clearing what a killed publish of it left behind."""
    final, partial = output.run_dir(run_id), output.partial_dir(run_id)
    if partial.exists():  # the replaced copy of a --force publish killed mid-swap
        shutil.rmtree(partial)
    _clear_leftovers(output, final, read_manifest(final).get("scratch", []))
    output.point_latest(run_id)
    events.emit("reused", f"{final} is up to date: same inputs and config, nothing to do "
                "(use --force to re-run)", run_dir=str(final), run_id=run_id)
    return RunResult(final, read_manifest(final), reused=True)


def reuse_run(output: Output, run_id: str, lock_wait_s: float = 0.0, stale_lock_s: float = 24 * 3600.0) -> RunResult:
    """Point `latest` at the published run `run_id` (under the output's lock) and return it."""
    with output.lock(lock_wait_s, stale_lock_s):
        output.check_latest()
        return _reuse(output, run_id)


def _swap_in(output: Output, partial: Path, final: Path, run_id: str) -> None:
    """--force: put `partial` where `final` is, so `latest` never points at nothing, then delete the old copy."""
    trash = output.path / f"{REPLACED}{run_id}-{os.getpid()}"
    if exchange(partial, final):  # `partial` now holds the old copy
        os.rename(partial, trash)
    else:  # no atomic exchange here: `latest` dangles between these two renames
        os.rename(final, trash)
        os.rename(partial, final)
    crash_point("publish.replaced")
    shutil.rmtree(trash)


def _clear_leftovers(output: Output, final: Path, scratch: list[str]) -> None:
    """What a killed publish may have left: replaced copies, and the published run's resume state."""
    for replaced in output.path.glob(f"{REPLACED}*"):
        shutil.rmtree(replaced, ignore_errors=True)
    for name in scratch:
        entry = final / name
        if entry.is_dir() and not entry.is_symlink():
            discard(entry)
        else:
            entry.unlink(missing_ok=True)


def _resumable(partial: Path, scratch: list[str]) -> bool:
    return any((partial / name).exists() for name in scratch)


def publish_run(output: Output, run_id: str, build: Callable[[Path], dict[str, Any]], *,
                force: bool = False, keep_partial: bool = False, lock_wait_s: float = 0.0,
                stale_lock_s: float = 24 * 3600.0, scratch: tuple[str, ...] = ()) -> RunResult:
    """Build a run aside and publish it, or reuse the published run with the same id.

    `build(partial_dir)` writes the run's files and returns its manifest facts; the manifest (with each file's
    size and sha256) is written last, the folder renamed into place, then `latest` switched, then the
    `scratch` entries (resume state, e.g. checkpoints) removed. With `keep_partial`, a partial folder left by
    a killed job is handed to `build` again so it can resume from its scratch entries; a build that raises
    leaves its partial folder only when it holds such state.

    Raises:
        NonFinite: the facts hold NaN or infinity (a diverged model): nothing is published.
    """
    with output.lock(lock_wait_s, stale_lock_s):
        output.check_latest()
        final, partial = output.run_dir(run_id), output.partial_dir(run_id)
        if output.is_published(run_id) and not force:
            return _reuse(output, run_id)
        if partial.exists() and (force or not keep_partial):
            shutil.rmtree(partial)
        partial.mkdir(parents=True, exist_ok=True)
        try:
            facts = build(partial)
            bad = non_finite(facts)
            if bad:
                raise NonFinite(f"{partial}: not published: non-finite {', '.join(bad[:5])} (a diverged model?)")
        except BaseException:
            if not (keep_partial and _resumable(partial, list(scratch))):  # nothing to resume: leave no litter
                shutil.rmtree(partial, ignore_errors=True)
            raise
        normalise_modes(partial)
        crash_point("export.written")
        manifest = {"run_id": run_id, "created": datetime.now(UTC).isoformat(), **facts,
                    "files": record_files(partial, [MANIFEST, *scratch]), "scratch": list(scratch)}
        write_json_atomic(partial / MANIFEST, manifest)
        crash_point("publish.after_manifest")
        if final.exists():  # only with --force (or a copy without a manifest, never published)
            _swap_in(output, partial, final, run_id)
        else:
            os.rename(partial, final)
        crash_point("publish.after_rename")
        output.point_latest(run_id)
        crash_point("publish.after_latest")
        _clear_leftovers(output, final, list(scratch))
        events.emit("published", f"published {final}", run_dir=str(final), run_id=run_id)
        return RunResult(final, manifest, reused=False)
