"""The artifact store: run folders keyed by a hash of inputs and config, atomic publish, `latest`, locks.

Layout of one output (e.g. `artifacts/datasets/ml-100k`)::

    <output>/<run_id>/            a published run; complete once its manifest.json exists
    <output>/.partial-<run_id>/   a run being written (kept after a crash so long stages can resume)
    <output>/latest -> <run_id>   switched last, by an atomic rename of a symlink
    <output>/.lock                one job at a time per output

A crash or kill at any point leaves every published run and the `latest` pointer intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import events
from pipeline.errors import BadInput, Locked

if TYPE_CHECKING:
    from pipeline.config import PipelineConfig

MANIFEST = "manifest.json"
COMPLETE = "COMPLETE"  # inside a checkpoint folder: written last, so a checkpoint without it never counts
LATEST = "latest"
LOCK = ".lock"


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in blocks (source files and models can be large)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


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


def complete_checkpoint(folder: Path, pattern: str) -> None:
    """Mark `folder` complete, then drop its older siblings: a crash at any point leaves one complete checkpoint."""
    (folder / COMPLETE).touch()
    for old in folder.parent.glob(pattern):
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary name beside `path`, then rename it into place: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to a temporary name beside `path`, then rename it into place."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The manifest of a published run.

    Raises:
        BadInput: the folder holds no complete run.
    """
    path = run_dir / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{run_dir}: not a complete run (no {MANIFEST})") from None
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path}: corrupt manifest ({exc})") from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


KINDS = ("datasets", "embeddings", "downstream", "recommendations")


def workspace_output(config: PipelineConfig, kind: str, name: str | None = None) -> Output:
    """`<workspace.root>/<kind>/<name>`: where runs of `kind` for dataset `name` (default `data.name`) live."""
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    return Output(Path(config.workspace.root) / kind / (name or config.data.name))


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

    def point_latest(self, run_id: str) -> None:
        tmp = self.path / f".{LATEST}.tmp-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        os.symlink(run_id, tmp)
        os.replace(tmp, self.path / LATEST)

    @contextlib.contextmanager
    def lock(self, wait_s: float = 0.0, stale_s: float = 24 * 3600.0) -> Iterator[None]:
        """Hold this output's lock; a lock whose process is gone (same host) or older than `stale_s` is taken over.

        Raises:
            Locked: another live job still holds it after `wait_s` seconds.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        lock_path = self.path / LOCK
        deadline = time.monotonic() + wait_s
        while not self._try_lock(lock_path):
            if self._break_if_stale(lock_path, stale_s):
                continue
            if time.monotonic() >= deadline:
                holder = self._holder(lock_path)
                raise Locked(f"{self.path} is locked by {holder.get('host')} pid {holder.get('pid')} "
                             f"since {holder.get('since')}; wait for it or raise workspace.lock_wait_s")
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        try:
            yield
        finally:
            lock_path.unlink(missing_ok=True)

    @staticmethod
    def _try_lock(lock_path: Path) -> bool:
        try:
            fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": datetime.now(UTC).isoformat()}
        with os.fdopen(fd, "w") as handle:
            json.dump(holder, handle)
        return True

    @staticmethod
    def _holder(lock_path: Path) -> dict[str, Any]:
        try:
            return json.loads(lock_path.read_text())
        except (OSError, ValueError):
            return {}

    def _break_if_stale(self, lock_path: Path, stale_s: float) -> bool:
        holder = self._holder(lock_path)
        try:
            age = time.time() - lock_path.stat().st_mtime
        except FileNotFoundError:
            return True
        dead = holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", -1)))
        if not (dead or age > stale_s):
            return False
        # Renaming is atomic: of several jobs that find the same stale lock, exactly one removes it.
        with contextlib.suppress(FileNotFoundError):
            os.rename(lock_path, self.path / f".lock.stale-{os.getpid()}")
            (self.path / f".lock.stale-{os.getpid()}").unlink()
            events.emit("stale_lock", f"took over a stale lock on {self.path} (held by {holder})")
        return True


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    manifest: dict[str, Any]
    reused: bool


def _reuse(output: Output, run_id: str) -> RunResult:
    final = output.run_dir(run_id)
    output.point_latest(run_id)
    events.emit("reused", f"{final} is up to date: same inputs and config, nothing to do "
                "(use --force to re-run)", run_dir=str(final), run_id=run_id)
    return RunResult(final, read_manifest(final), reused=True)


def reuse_run(output: Output, run_id: str, lock_wait_s: float = 0.0, stale_lock_s: float = 24 * 3600.0) -> RunResult:
    """Point `latest` at the published run `run_id` (under the output's lock) and return it."""
    with output.lock(lock_wait_s, stale_lock_s):
        return _reuse(output, run_id)


def publish_run(output: Output, run_id: str, build: Callable[[Path], dict[str, Any]], *,
                force: bool = False, keep_partial: bool = False, lock_wait_s: float = 0.0,
                stale_lock_s: float = 24 * 3600.0) -> RunResult:
    """Build a run aside and publish it, or reuse the published run with the same id.

    `build(partial_dir)` writes the run's files and returns its manifest facts; the manifest is written
    last, the folder renamed into place, then `latest` switched. With `keep_partial`, a partial folder
    left by a killed job is handed to `build` again so it can resume from its checkpoints; without it, the
    partial folder of a build that raises (bad input) is removed; with it, only an empty one (nothing to resume).
    """
    with output.lock(lock_wait_s, stale_lock_s):
        final = output.run_dir(run_id)
        if output.is_published(run_id) and not force:
            return _reuse(output, run_id)
        partial = output.partial_dir(run_id)
        if partial.exists() and (force or not keep_partial):
            shutil.rmtree(partial)
        partial.mkdir(parents=True, exist_ok=True)
        try:
            facts = build(partial)
        except BaseException:
            if not keep_partial or not any(partial.iterdir()):  # nothing in it can be reused: leave no litter
                shutil.rmtree(partial, ignore_errors=True)
            raise
        normalise_modes(partial)
        manifest = {"run_id": run_id, "created": datetime.now(UTC).isoformat(), **facts}
        write_json_atomic(partial / MANIFEST, manifest)
        if final.exists():  # only with --force: the old copy is moved aside first, deleted after
            trash = output.path / f".replaced-{run_id}-{os.getpid()}"
            os.rename(final, trash)
            os.rename(partial, final)
            shutil.rmtree(trash)
        else:
            os.rename(partial, final)
        output.point_latest(run_id)
        events.emit("published", f"published {final}", run_dir=str(final), run_id=run_id)
        return RunResult(final, manifest, reused=False)
