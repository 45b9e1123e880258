"""Named crash points: where a test may kill the process, to prove every such moment is recoverable.

`crash_point(name)` does nothing unless the environment variable `SEQREC_CRASH_AT` names that point; then
the process dies on the spot with `os._exit(137)`, the exit code of a SIGKILL: no `finally`, no
atexit, no flushed buffers, as with a real kill -9 or a lost machine. `SEQREC_CRASH_AT=name@N` dies at
the point's N-th visit (1-based), to reach e.g. the second checkpoint.
"""

from __future__ import annotations

import os
import sys

ENV = "SEQREC_CRASH_AT"
KILLED = 137

# Every crash point in the code, in the order a run meets them; the fault-injection suite crashes at each.
POINTS = (
    "lock.acquired",  # the lock file is in place, nothing else done
    "checkpoint.before_complete",  # a checkpoint's files are written, its COMPLETE marker not yet
    "checkpoint.discard",  # an older checkpoint is renamed away, not yet deleted
    "export.halfway",  # the first of a stage's output files is written into the partial folder, the rest not yet
    "export.written",  # a stage's output files are written into the partial folder, the manifest not yet
    "publish.after_manifest",  # the manifest is written, the partial folder not yet renamed into place
    "publish.after_rename",  # the run is in place, `latest` not yet switched
    "publish.after_latest",  # `latest` switched, resume state (checkpoints) not yet removed
    "publish.replaced",  # --force: the new run swapped in, the replaced copy not yet deleted
)

_visits: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Die here (exit 137, nothing cleaned up) when `SEQREC_CRASH_AT` names this point; otherwise nothing."""
    if name not in POINTS:
        raise ValueError(f"unknown crash point {name!r}")
    armed = os.environ.get(ENV)
    if not armed:
        return
    point, _, visit = armed.partition("@")
    if point != name:
        return
    _visits[name] = _visits.get(name, 0) + 1
    if _visits[name] >= int(visit or 1):
        sys.stderr.write(f"crash point {name}: killed\n")
        sys.stderr.flush()
        os._exit(KILLED)
