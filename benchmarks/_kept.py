"""Benchmarks report runs kept from earlier invocations only when those were made with the settings asked for now.

Settings are compared resolved (defaults included), not as overrides: a changed default changes them. A new
release changes every run id, so a run is matched by what it was made with, not by its id.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path
from typing import Any

from benchmarks._cli import ROOT
from pipeline.config import load_config
from pipeline.schema.renamed import upgrade_saved


def agrees(made: dict[str, Any], wanted: dict[str, Any], default: dict[str, Any]) -> bool:
    """Whether resolved settings `made` are `wanted`; a key added after the run was made counts as its
    `default` (a new key's default keeps the old behaviour)."""
    if set(made) - set(wanted):
        return False
    for key, value in wanted.items():
        if key not in made:
            if value != default.get(key):
                return False
        elif isinstance(value, dict):
            if not isinstance(made[key], dict) or not agrees(made[key], value, default.get(key, {})):
                return False
        elif made[key] != value:
            return False
    return True


@functools.cache
def resolved(config: str, section: str, overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """One config section as `config` and `overrides` resolve it, in the JSON form runs record (cached: every
    kept run is checked against the same few settings; callers must not change the result)."""
    return getattr(load_config(ROOT / config, list(overrides)), section).model_dump(mode="json")


def section_agrees(made: dict[str, Any], config: str, section: str, overrides: list[str],
                   skip: tuple[str, ...] = ()) -> bool:
    """Whether a run's recorded `section` is what `config` + `overrides` resolve to (keys in `skip` aside)."""
    wanted, default = resolved(config, section, tuple(overrides)), resolved(config, section)
    made = upgrade_saved(section, made)  # recorded before keys were renamed
    return agrees({k: v for k, v in made.items() if k not in skip}, {k: v for k, v in wanted.items() if k not in skip},
                  default)


def recorded(run_dir: Path, name: str) -> dict[str, Any] | None:
    """A JSON file a run folder holds (its settings), or None when there is none."""
    path = run_dir / name
    return json.loads(path.read_text()) if path.is_file() else None


def add_parallel_options(parser: argparse.ArgumentParser, first_seed: int) -> None:
    """`--first-seed` and `--kept-from`: one workspace trains one run at a time (one lock per output), so a
    benchmark's seeds train at once in several workspaces, and one invocation collects them."""
    parser.add_argument("--first-seed", type=int, default=first_seed,
                        help="the first seed trained here (to train other seeds in another workspace at the same time)")
    parser.add_argument("--kept-from", nargs="+", type=Path, default=[], metavar="WORKSPACE",
                        help="also count the runs kept in these workspaces; they must match the settings like any "
                        "kept run")
