"""Shared fixtures: the real datasets beside the checkout, an isolated workspace per test, and the test tiers.

Tiers (markers, registered in pyproject.toml): the default tier; `slow` and `network` (needs the internet),
both deselected unless asked for (`pytest -m slow`, `pytest -m network`); `gpu`, selected by default and
skipped where no CUDA device is present. Helpers other than fixtures live in `tests/support.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import PipelineConfig, load_config
from tests.align_support import tiny_bert, tiny_llama  # noqa: F401 - session fixtures for stage one
from tests.support import SMALL, TINY_MODEL, shared_dataset


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The `gpu` tier skips, saying why, where torch sees no CUDA device."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu:
        return
    import torch

    if not torch.cuda.is_available():
        for item in gpu:
            item.add_marker(pytest.mark.skip(reason="gpu tier: no CUDA device"))


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one torch thread avoids threads spinning against each other."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def make_config(tmp_path: Path):
    """Build a validated config whose workspace is the test's own temporary folder."""
    def build(*overrides: str) -> PipelineConfig:
        return load_config(None, [f"workspace.root={tmp_path / 'artifacts'}", *overrides])
    return build


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """The output folder (`datasets/small`) of a small real dataset, prepared once per session."""
    from pipeline import prepare

    root = tmp_path_factory.mktemp("shared") / "artifacts"
    config = load_config(None, [f"workspace.root={root}", f"data.path={shared_dataset('ml-100k')}",
                                f"data.name={SMALL}", "data.kcore_items=20", "data.max_history=20"])
    return prepare.run(config).run_dir.parent


@pytest.fixture
def workspace(tmp_path: Path, small_dataset: Path):
    """A per-test workspace that sees the session's small dataset; returns a config builder for it."""
    root = tmp_path / "artifacts"
    (root / "datasets").mkdir(parents=True)
    (root / "datasets" / SMALL).symlink_to(small_dataset)

    def build(*overrides: str) -> PipelineConfig:
        return load_config(None, [f"workspace.root={root}", f"data.name={SMALL}", *TINY_MODEL, *overrides])
    return build

