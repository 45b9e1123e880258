"""Stages in one process (`seqrec-pipeline run`) each get the mixed precision their own config names."""

from __future__ import annotations

from stages.accelerator import stage_accelerator


def test_a_later_stage_is_not_stuck_with_an_earlier_stages_mixed_precision() -> None:
    assert stage_accelerator("bf16").mixed_precision == "bf16"  # e.g. align.mixed_precision
    assert stage_accelerator().mixed_precision == "no"  # train-downstream: full precision, not bf16 inherited
    assert stage_accelerator("bf16").mixed_precision == "bf16"  # and back: no "already initialised" refusal
    assert stage_accelerator().mixed_precision == "no"  # leave the process as the other tests expect it
