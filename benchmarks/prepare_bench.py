"""Prepare throughput and peak memory on a generated 10M-interaction RecBole atomic dataset.

Runs the real CLI (`python -m pipeline.cli prepare --force`) in a child process, repeats, and reports the
median wall time and the child's peak RSS. Targets: under 60 s and under 4 GiB on the 2-core machine.

    python -m benchmarks.prepare_bench [--rows 10000000] [--repeats 3]
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from benchmarks import _args, _results

REPO = Path(__file__).resolve().parents[1]
WORDS = np.array(["red", "blue", "steel", "micro", "pro", "ultra", "mini", "max", "kit", "set", "pack", "lamp", "cable", "drill", "glass", "tape"])


def generate(folder: Path, rows: int, users: int, items: int, seed: int = 0) -> None:
    """Zipf-popular items, uniform users, random timestamps (with ties), written as bench.inter / bench.item."""
    rng = np.random.default_rng(seed)
    item_ids = np.minimum(rng.zipf(1.2, rows), items) - 1
    table = pa.table({
        "user_id:token": rng.integers(0, users, rows).astype(str),
        "item_id:token": item_ids.astype(str),
        "rating:float": rng.integers(1, 6, rows),
        "timestamp:float": rng.integers(1_500_000_000, 1_500_000_000 + 86_400 * 365, rows),
    })
    write_atomic_file(table, folder / "bench.inter")
    titles = [" ".join(rng.choice(WORDS, 4)) for _ in range(items)]
    write_atomic_file(pa.table({"item_id:token": np.arange(items).astype(str), "title:token_seq": titles,
                                "category:token": rng.choice(WORDS, items)}), folder / "bench.item")


def write_atomic_file(table: pa.Table, path: Path) -> None:
    """RecBole's TSV with its typed header (pyarrow would quote header names, so it is written by hand)."""
    with path.open("wb") as handle:
        handle.write(("\t".join(table.column_names) + "\n").encode())
        pacsv.write_csv(table, handle, pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none"))


def run_prepare(raw: Path, root: Path) -> float:
    command = [sys.executable, "-m", "pipeline.cli", "prepare", "--force", "--log-format", "json",
               "--set", "data.name=bench", "--set", f"data.path={raw}", "--set", f"workspace.root={root}"]
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


@_args.reports_errors
def main() -> None:
    parser = _args.parser(__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=500_000)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        raw.mkdir()
        generate(raw, args.rows, args.users, args.items)
        walls = [run_prepare(raw, Path(tmp) / "artifacts") for _ in range(args.repeats)]
    peak_rss_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux
    wall = statistics.median(walls)
    figures = {"rows": args.rows, "wall_s": round(wall, 2), "rows_per_s": round(args.rows / wall),
               "peak_rss_gib": round(peak_rss_gib, 3), "repeats_wall_s": [round(w, 2) for w in walls],
               "targets": {"wall_s": 60, "peak_rss_gib": 4}}
    _results.write("prepare_bench", figures, [
        ("rows", f"{args.rows:,}"), ("wall s (median)", figures["wall_s"]),
        ("rows/s", f"{figures['rows_per_s']:,}"), ("peak RSS GiB", figures["peak_rss_gib"])])


if __name__ == "__main__":
    main()
