"""The training-curves contract: `history.jsonl` in every training run folder, one JSON object per optimizer step
or epoch, in order (what the records hold: docs/artifacts.md, "Training curves").

JSON lines because every tool reads them (pandas, DuckDB, `jq`) and a record may grow keys without
breaking readers. Each training loop keeps its records with its resumable state, so a resumed run writes
the whole curve, not the part after the resume.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.store import write_text_atomic

HISTORY_FILE = "history.jsonl"


def write_history(folder: Path, records: Iterable[dict[str, Any]]) -> Path:
    """Write `records` to `folder/history.jsonl` under a temporary name, then rename it into place."""
    path = folder / HISTORY_FILE
    write_text_atomic(path, "".join(json.dumps(record, sort_keys=True) + "\n" for record in records))
    return path


def read_history(folder: Path) -> list[dict[str, Any]]:
    """The records of `folder/history.jsonl`; empty for a run made before curves were kept."""
    path = folder / HISTORY_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
