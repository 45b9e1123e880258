"""Shared fixtures: the real datasets beside the checkout, and an isolated workspace per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.config import PipelineConfig, load_config

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("SEQREC_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))


def shared_dataset(name: str) -> Path:
    """The raw folder of a shared dataset; the test is skipped where the shared data is absent."""
    folder = SHARED_DATASETS / name / "raw"
    if not folder.is_dir():
        pytest.skip(f"shared dataset {folder} not present")
    return folder


@pytest.fixture
def make_config(tmp_path: Path):
    """Build a validated config whose workspace is the test's own temporary folder."""
    def build(*overrides: str) -> PipelineConfig:
        return load_config(None, [f"workspace.root={tmp_path / 'artifacts'}", *overrides])
    return build


from align_support import single_thread, tiny_bert, tiny_llama  # noqa: F401 - session fixtures for stage one
