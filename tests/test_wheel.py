"""The built wheel, installed outside the checkout, runs the main job from an unrelated folder; the workspace it
makes, copied elsewhere and made read-only, still evaluates and recommends.

The venv gets the wheel alone (`--no-deps`): its dependencies (torch, transformers, ...) come from the project's
environment through a `.pth` file listing that environment's site-packages, so the test needs no network and no
second torch install, while `pipeline` and `stages` are imported from the wheel only (a `.pth` path line does not
run the editable install's import hook that lives there).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.align_support import write_ml100k_slice
from tests.support import REPO, shared_dataset

pytestmark = pytest.mark.slow

JOB = """\
workspace:
  root: ws                     # read against this file's folder
data:
  path: raw
  kcore_users: 0
  kcore_items: 0
align:
  lm: {lm}
  model_cache: cache
  said: {{lr: 0.05, warmup_steps: 2, epochs: 2}}
  evidence: {{items: 8, neighbour_queries: 20}}
downstream:
  model: {{hidden_size: 16, layers: 1, heads: 2, max_length: 10}}
  train: {{epochs: 2, batch_size: 256}}
"""


def _install(tmp_path: Path) -> Path:
    """A fresh venv holding the wheel built from the checkout; returns its bin folder."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels)], check=True, cwd=tmp_path)
    [wheel] = wheels.glob("seqrec_pipeline-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)  # ensurepip: offline; the venv's pip writes scripts that run its python
    [site] = (env_dir / "lib").glob("python3.*/site-packages")
    others = [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and Path(p).is_dir()]
    (site / "project-deps.pth").write_text("\n".join(others) + "\n")
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index", "-q"]
    subprocess.run([*pip, str(wheel)], check=True, cwd=tmp_path)
    return env_dir / "bin"


def _cli(bin_dir: Path, cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SEQREC_WORKSPACE")}
    return subprocess.run([str(bin_dir / "seqrec-pipeline"), *args], check=False, cwd=cwd, env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=1200)


def _read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, stat.S_IMODE(path.stat().st_mode) & ~0o222)


def test_the_installed_wheel_runs_from_anywhere_and_its_workspace_travels(tmp_path: Path, tiny_llama: Path) -> None:
    bin_dir = _install(tmp_path)
    where = subprocess.run([str(bin_dir / "python"), "-c", "import pipeline; print(pipeline.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path)
    assert where.stdout.startswith(str(tmp_path / "venv"))  # the wheel's code, not the checkout's
    job = tmp_path / "job"
    write_ml100k_slice(shared_dataset("ml-100k"), job / "raw", items=60)
    (job / "job.yaml").write_text(JOB.format(lm=tiny_llama))
    anywhere = tmp_path / "cwd"
    anywhere.mkdir()

    version = _cli(bin_dir, anywhere, "--version")
    assert version.returncode == 0 and version.stdout.strip() == "seqrec-pipeline 0.2.0"
    shown = _cli(bin_dir, anywhere, "config", "-c", "../job/job.yaml")
    assert f'  root: "{job / "ws"}"  # ../job/job.yaml' in shown.stdout.splitlines(), shown.stderr

    old_mask = os.umask(0o022)
    try:
        ran = _cli(bin_dir, anywhere, "run", "-c", str(job / "job.yaml"))
    finally:
        os.umask(old_mask)
    assert ran.returncode == 0, ran.stderr[-3000:]
    ws = job / "ws"
    published = ran.stdout.split()
    assert [Path(p).relative_to(ws).parts[0] for p in published] == [
        "datasets", "embeddings", "downstream", "recommendations", "reports"]  # the run's HTML report last
    assert not list(anywhere.iterdir())  # nothing written in the current folder
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in ws.rglob("*") if not p.is_symlink()}
    assert {oct(mode) for p, mode in modes.items() if p.is_file()} == {"0o644"}
    assert {oct(mode) for p, mode in modes.items() if p.is_dir()} == {"0o755"}

    copy = tmp_path / "mounted" / "ws"
    shutil.copytree(ws, copy, symlinks=True)
    shutil.rmtree(ws)
    _read_only(copy)
    try:
        evaluated = _cli(bin_dir, anywhere, "evaluate", "-c", str(job / "job.yaml"),
                         env={"SEQREC_WORKSPACE": str(copy)})
        assert evaluated.returncode == 0, evaluated.stderr[-3000:]
        assert '"test"' in evaluated.stdout and str(copy) in evaluated.stdout
        out = tmp_path / "outputs"
        recommended = _cli(bin_dir, anywhere, "--workspace", str(out), "recommend", "-c", str(job / "job.yaml"),
                           "--set", f"recommend.run={copy}/downstream/ml-100k/latest", "--user", "1")
        assert recommended.returncode == 0, recommended.stderr[-3000:]
        assert Path(recommended.stdout.strip()).parent == out / "recommendations" / "ml-100k"
    finally:
        for path in [copy, *copy.rglob("*")]:
            if not path.is_symlink():
                os.chmod(path, stat.S_IMODE(path.stat().st_mode) | 0o200)
