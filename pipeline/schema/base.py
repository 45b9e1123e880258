"""The base of every config section, and the types several sections share."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

MixedPrecision = Literal["no", "fp16", "bf16"]  # Accelerate's autocast modes
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"  # a dataset name: a folder name, no path separators


class Section(BaseModel):
    # allow_inf_nan=False: an `.inf` or `.nan` setting (e.g. a learning rate) would train a model of NaNs
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
