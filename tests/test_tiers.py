"""The test tiers: markers registered, slow and network out of the default suite, and a missing shared dataset
a skip by default but a failure where CI asks for the data (`$SEQREC_REQUIRE_DATA`)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tests import support
from tests.support import REPO


def test_tiers_are_registered_and_only_the_default_ones_run_by_default() -> None:
    options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert sorted(marker.split(":")[0] for marker in options["markers"]) == ["gpu", "network", "slow"]
    assert options["addopts"] == "-m 'not slow and not network'"
    assert "SEQREC_REQUIRE_DATA=1" in (REPO / ".ci" / "run").read_text()


def test_a_missing_shared_dataset_skips_or_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(support, "SHARED_DATASETS", tmp_path)
    monkeypatch.delenv(support.REQUIRE_DATA_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="not present"):
        support.shared_dataset("absent")
    monkeypatch.setenv(support.REQUIRE_DATA_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="is set, so this is a failure, not a skip"):
        support.shared_dataset("absent")
    (tmp_path / "present" / "raw").mkdir(parents=True)
    assert support.shared_dataset("present") == tmp_path / "present" / "raw"
