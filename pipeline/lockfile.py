"""One job per output: a lock file that is whole from the moment it exists.

The holder's facts are written to a private temporary file and hard-linked into place: `link` fails when
the lock exists (the same exclusivity as `O_CREAT | O_EXCL`), and nobody ever sees a lock half-written. So a
lock that cannot be read (empty, cut short by a full disk, garbage) never belonged to a live job, and is
taken over like one whose process is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline import events
from pipeline.faults import crash_point


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def try_lock(lock_path: Path) -> bool:
    """Take the lock if it is free; False when someone holds it.

    Raises:
        OSError: the holder's facts could not be written (a full disk): nothing is left behind.
    """
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": datetime.now(UTC).isoformat()}
    tmp = lock_path.with_name(f"{lock_path.name}.new-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(holder), encoding="utf-8")
        os.link(tmp, lock_path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    crash_point("lock.acquired")
    return True


def holder(lock_path: Path) -> dict[str, Any] | None:
    """The lock holder's facts; {} when the lock is gone, None when it cannot be read."""
    try:
        facts = json.loads(lock_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return None
    return facts if isinstance(facts, dict) and isinstance(facts.get("pid"), int) else None


def is_stale(lock_path: Path, stale_s: float) -> bool:
    """Whether the lock is unreadable, older than `stale_s`, or held by a process of this host that is gone."""
    facts = holder(lock_path)
    if facts is None:
        return True
    try:
        age = time.time() - lock_path.stat().st_mtime
    except FileNotFoundError:
        return True
    return age > stale_s or (facts.get("host") == socket.gethostname() and not _pid_alive(facts["pid"]))


def break_if_stale(lock_path: Path, stale_s: float) -> bool:
    """Remove a stale lock; True when the caller should try to take the lock again."""
    if not is_stale(lock_path, stale_s):
        return False
    facts = holder(lock_path)
    aside = lock_path.with_name(f"{lock_path.name}.stale-{os.getpid()}")
    # Renaming is atomic: of several jobs that find the same stale lock, exactly one removes it.
    with contextlib.suppress(FileNotFoundError):
        os.rename(lock_path, aside)
        aside.unlink()
        events.emit("stale_lock", f"took over a stale lock on {lock_path.parent} "
                    f"({'unreadable' if facts is None else f'held by {facts}'})")
    return True


def describe(lock_path: Path) -> str:
    facts = holder(lock_path)
    if facts is None:
        return "an unreadable lock file"
    return f"{facts.get('host')} pid {facts.get('pid')} since {facts.get('since')}"
