"""A full disk at every write: the stage fails with one line, leaves no litter and the same command finishes
the job once there is room again (same run id, same files, `verify` clean).

The workspace lives on a small tmpfs, filled up to leave less and less room, so that each run runs out of
space at a different write (the lock, the Parquet files, the weights, the manifest, the `latest` link).
Mounting needs root: elsewhere the test is skipped (the lock's own full-disk case in test_store runs anywhere).
Slow tier: each trial runs the stage three times.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.fault_support import cli, record, result_of
from tests.support import TINY_MODEL, shared_dataset

ROOM_KB = (0, 8, 64, 256, 1024)  # free space left on the disk when the stage starts


@pytest.fixture(scope="module")
def disk(tmp_path_factory) -> Path:
    mount = tmp_path_factory.mktemp("tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True,
                          check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


@pytest.fixture(scope="module")
def reference(disk: Path) -> dict[str, dict]:
    """Each stage's uninterrupted run, made on the tmpfs while it has room, then removed."""
    results = {}
    for stage, kind in (("prepare", "datasets"), ("train-downstream", "downstream")):
        done = cli(disk / "artifacts", SETTINGS, stage)
        assert done.returncode == 0, done.stderr
        results[stage] = result_of(disk / "artifacts" / kind / "disk" / "latest")
    subprocess.run(["rm", "-rf", str(disk / "artifacts" / "downstream")], check=True)
    return results


SETTINGS = ["data.name=disk", f"data.path={shared_dataset('ml-100k')}", "data.kcore_items=20", "data.max_history=20",
            "downstream.embeddings=null", *TINY_MODEL]
KIND = {"prepare": "datasets", "train-downstream": "downstream"}


def fill(disk: Path, room_kb: int) -> Path:
    """A file taking all the space but `room_kb` KiB."""
    stats = os.statvfs(disk)
    filler = disk / "filler"
    size = max(stats.f_bavail * stats.f_frsize - room_kb * 1024, 0)
    with filler.open("wb") as handle:
        handle.truncate(0)
        for _ in range(size // (1 << 20)):
            handle.write(b"\0" * (1 << 20))
        handle.write(b"\0" * (size % (1 << 20)))
    return filler


def full_disk_trial(disk: Path, reference: dict[str, dict], stage: str, room_kb: int) -> None:
    root, output = disk / "artifacts", disk / "artifacts" / KIND[stage] / "disk"
    subprocess.run(["rm", "-rf", str(output)], check=True)
    filler = fill(disk, room_kb)
    try:
        starved = cli(root, SETTINGS, stage)
    finally:
        filler.unlink()
    ran_out = starved.returncode != 0
    if ran_out:
        lines = starved.stderr.strip().splitlines()
        assert starved.returncode == 1 and "No space left on device" in lines[-1], starved.stderr
        litter = [p.name for p in output.glob(".*")] if output.exists() else []
        assert [n for n in litter if not n.startswith(".partial-")] == [], litter  # no lock, no temporary names
    again = cli(root, SETTINGS, stage)
    assert again.returncode == 0, again.stderr
    recovered = result_of(output / "latest")
    clean = cli(root, SETTINGS, "verify", str(root)).returncode == 0
    record("full_disk", stage=stage, room_kb=room_kb, ran_out=ran_out, recovered_identical=recovered == reference[stage]
           and clean)
    assert recovered == reference[stage] and clean


@pytest.mark.slow
@pytest.mark.parametrize("room_kb", ROOM_KB)
@pytest.mark.parametrize("stage", ["prepare", "train-downstream"])
def test_a_full_disk_at_every_write(disk: Path, reference: dict, stage: str, room_kb: int) -> None:
    full_disk_trial(disk, reference, stage, room_kb)
