"""Each stage gets the mixed precision its own config names, and bf16 only where the CPU runs it natively."""

from __future__ import annotations

import pytest

from pipeline import events
from stages import accelerator
from stages.accelerator import stage_accelerator


def test_a_later_stage_is_not_stuck_with_an_earlier_stages_mixed_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accelerator, "cpu_has_fast_bf16", lambda: True)
    assert stage_accelerator("bf16").mixed_precision == "bf16"  # e.g. align.mixed_precision
    assert stage_accelerator().mixed_precision == "no"  # train-downstream: full precision, not bf16 inherited
    assert stage_accelerator("bf16").mixed_precision == "bf16"  # and back: no "already initialised" refusal
    assert stage_accelerator().mixed_precision == "no"  # leave the process as the other tests expect it


def test_bf16_on_a_cpu_that_would_emulate_it_runs_in_float32_and_says_so(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(accelerator, "cpu_has_fast_bf16", lambda: False)
    events.set_format("text")
    assert stage_accelerator("bf16").mixed_precision == "no"
    assert "runs in float32" in capsys.readouterr().err
