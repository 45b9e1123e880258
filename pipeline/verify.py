"""`seqrec-pipeline verify`: check published runs against their manifests and find what killed jobs left.

A run is sound when every file its manifest records is there with the recorded size and sha256, its Parquet
files and FAISS index read back and agree on the row count, and no file it does not record sits beside them.
An output is sound when `latest` points at a published run and nothing is left over: partial folders no live
job holds, copies a `--force` publish replaced, stale locks, temporary names, resume state inside a published
run. `--repair` removes those leftovers and nothing else: a damaged published run is reported, never touched.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import lockfile
from pipeline.artifact_files import read_faiss
from pipeline.contracts.embeddings import INDEX_FILE, LEGACY_FILE, PARTS_DIR
from pipeline.errors import BadInput
from pipeline.integrity import run_files, sha256_file
from pipeline.store import KINDS, LATEST, LOCK, MANIFEST, REPLACED, read_manifest

# Names a killed job may leave in an output folder, each one safe to delete once no live job holds the lock.
TEMPORARY = (".partial-", REPLACED, f"{LOCK}.new-", f"{LOCK}.stale-", f".{LATEST}.tmp-", ".trash-", ".gc-")


@dataclass(frozen=True)
class Finding:
    path: Path
    problem: str
    leftover: bool = False  # removable by --repair; False: damage to report, never to touch


@dataclass
class Report:
    runs: int = 0
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_run(run_dir: Path, report: Report) -> None:
    """Check one published run folder against its manifest."""
    report.runs += 1
    try:
        manifest = read_manifest(run_dir)
    except BadInput as exc:
        report.findings.append(Finding(run_dir, str(exc)))
        return
    scratch = manifest.get("scratch", [])
    for name in scratch:
        if (run_dir / name).exists():
            report.findings.append(Finding(run_dir / name, "resume state left in a published run", leftover=True))
    recorded = manifest.get("files")
    if recorded is None:
        report.notes.append(f"{run_dir}: published before file sizes and sha256 were recorded; "
                            "checked what can be checked without them")
    else:
        _check_recorded(run_dir, recorded, scratch, report)
    _check_readable(run_dir, manifest, report)


def _check_recorded(run_dir: Path, recorded: dict[str, Any], scratch: list[str], report: Report) -> None:
    for name, facts in recorded.items():
        path = run_dir / name
        if not path.is_file():
            report.findings.append(Finding(path, "recorded in the manifest but missing"))
        elif path.stat().st_size != facts["size"]:
            report.findings.append(Finding(path, f"size {path.stat().st_size}, recorded {facts['size']}"))
        elif sha256_file(path) != facts["sha256"]:
            report.findings.append(Finding(path, "sha256 differs from the one recorded at publish time"))
    for path in run_files(run_dir, [MANIFEST, *scratch]):
        if path.relative_to(run_dir).as_posix() not in recorded:
            report.findings.append(Finding(path, "not recorded in the manifest (added after the publish)"))


def _check_readable(run_dir: Path, manifest: dict[str, Any], report: Report) -> None:
    """Parquet files read back; the FAISS index reads back and holds one vector per row."""
    rows = None
    for path in sorted([*run_dir.glob("*.parquet"), *(run_dir / PARTS_DIR).glob("*.parquet")]):
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            report.findings.append(Finding(path, f"not readable as Parquet ({' '.join(str(exc).split())[:120]})"))
            continue
        if path.name == LEGACY_FILE or path.parent.name == PARTS_DIR:  # an embeddings run's rows
            rows = (rows or 0) + table.num_rows
    index_path = run_dir / INDEX_FILE
    if not index_path.exists():
        return
    try:
        index = read_faiss(index_path)
    except BadInput as exc:
        report.findings.append(Finding(index_path, str(exc).split(": ", 1)[-1]))
        return
    expected = rows if rows is not None else manifest.get("num_items")
    if expected is not None and index.ntotal != expected:
        report.findings.append(Finding(index_path, f"holds {index.ntotal} vectors for {expected} rows"))
    if rows is not None and manifest.get("dim") not in (None, index.d):
        report.findings.append(Finding(index_path, f"width {index.d}, the manifest says {manifest['dim']}"))


def check_output(output: Path, report: Report) -> None:
    """Check every run of one output folder, its `latest` pointer and what killed jobs left there."""
    live = (output / LOCK).exists() and not lockfile.is_stale(output / LOCK, 24 * 3600.0)
    if (output / LOCK).exists() and not live:
        report.findings.append(Finding(output / LOCK, f"stale lock ({lockfile.describe(output / LOCK)})", leftover=True))
    for entry in sorted(output.iterdir()):
        if entry.name in (LATEST, LOCK):
            continue
        if entry.name.startswith(TEMPORARY):
            if not live:  # a live job may still be writing it
                report.findings.append(Finding(entry, _leftover_reason(entry), leftover=True))
        elif entry.is_dir():
            check_run(entry, report)
    link = output / LATEST
    if link.is_symlink():
        if not (output / os.readlink(link) / MANIFEST).is_file():
            report.findings.append(Finding(link, f"points at {os.readlink(link)}, which is not a published run"))
    elif link.exists():
        report.findings.append(Finding(link, "a real file or folder, not the `latest` link"))


def _leftover_reason(entry: Path) -> str:
    if entry.name.startswith(".partial-") and (entry / "checkpoints").exists():
        return "partial run of a killed job (holds resume state: re-running the stage resumes from it)"
    return "left by a killed job"


def outputs_under(path: Path) -> list[Path]:
    """The output folders under a workspace root, or `path` itself when it is one."""
    if any((path / kind).is_dir() for kind in KINDS):
        return [out for kind in KINDS if (path / kind).is_dir() for out in sorted((path / kind).iterdir())
                if out.is_dir() and not out.is_symlink()]
    return [path]


def verify(path: Path) -> Report:
    """Check a workspace root, one output folder, or one run folder.

    Raises:
        BadInput: `path` is not a folder.
    """
    if not path.is_dir():
        raise BadInput(f"{path}: not found" if not path.exists() else f"{path}: a file, not a workspace or run folder")
    report = Report()
    if (path / MANIFEST).exists():
        check_run(path, report)
    else:
        for output in outputs_under(path):
            check_output(output, report)
    return report


def repair(report: Report) -> list[Path]:
    """Remove the leftovers `report` found (never a published run's recorded files); the paths removed."""
    removed = []
    for finding in report.findings:
        if not finding.leftover:
            continue
        if finding.path.is_dir() and not finding.path.is_symlink():
            shutil.rmtree(finding.path, ignore_errors=True)
        else:
            finding.path.unlink(missing_ok=True)
        removed.append(finding.path)
    return removed
