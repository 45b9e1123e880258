"""Prepare throughput and peak memory on generated RecBole atomic interactions (Zipf-popular items, uniform users).

Runs the real CLI (`python -m pipeline.cli prepare --force`) in a child process, repeats, and reports the
median wall time and the child's peak RSS. 10M rows (500,000 users, 200,000 items; the memory engine under
`data.engine: auto`): targets under 60 s and 4 GiB on the 2-core machine, written to `prepare_bench.json`.
100M rows (1M users, 1M items; DuckDB out of core under auto): targets 600 s and 4 GiB, written to
`prepare_100m.json`; each size above 10M writes its own file.

    python -m benchmarks.prepare_bench [--rows 10000000] [--repeats 3] [--engine auto]
    python -m benchmarks.prepare_bench --rows 100000000       # one repeat unless --repeats says more
"""

from __future__ import annotations

import json
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
DEFAULT_ROWS = 10_000_000
CHUNK_ROWS = 10_000_000  # generated and written a chunk at a time, so 100M rows need no more memory than 10M


def result_name(rows: int) -> str:
    """`prepare_bench` up to the default size; above it each size its own file (`prepare_100m`)."""
    return "prepare_bench" if rows <= DEFAULT_ROWS else f"prepare_{rows // 1_000_000}m"


def generate(folder: Path, rows: int, users: int, items: int, seed: int = 0) -> None:
    """Zipf-popular items, uniform users, random timestamps (with ties), written as bench.inter / bench.item."""
    rng = np.random.default_rng(seed)
    header = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    with (folder / "bench.inter").open("wb") as handle:
        handle.write(("\t".join(header) + "\n").encode())
        for start in range(0, rows, CHUNK_ROWS):
            n = min(CHUNK_ROWS, rows - start)
            item_ids = np.minimum(rng.zipf(1.2, n), items) - 1  # drawn first, as before chunking: the same 10M rows
            chunk = pa.table({
                "user_id": rng.integers(0, users, n).astype(str),
                "item_id": item_ids.astype(str),
                "rating": rng.integers(1, 6, n),
                "timestamp": rng.integers(1_500_000_000, 1_500_000_000 + 86_400 * 365, n),
            })
            write_atomic_rows(chunk, handle)
    words = rng.choice(WORDS, (items, 4))
    titles = np.char.add(np.char.add(np.char.add(np.char.add(words[:, 0], " "), words[:, 1]), " "),
                         np.char.add(np.char.add(words[:, 2], " "), words[:, 3]))
    with (folder / "bench.item").open("wb") as handle:
        handle.write(b"item_id:token\ttitle:token_seq\tcategory:token\n")
        write_atomic_rows(pa.table({"item_id": np.arange(items).astype(str), "title": titles,
                                    "category": rng.choice(WORDS, items)}), handle)


def write_atomic_rows(table: pa.Table, handle) -> None:
    """RecBole's TSV rows (the typed header is written by hand: pyarrow would quote its names)."""
    pacsv.write_csv(table, handle, pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none"))


def run_prepare(raw: Path, root: Path, engine: str, memory_limit_gib: float) -> tuple[float, str]:
    """One `prepare --force` in a child process: its wall time and the engine it ran on."""
    command = [sys.executable, "-m", "pipeline.cli", "prepare", "--force", "--log-format", "json",
               "--set", "data.name=bench", "--set", f"data.path={raw}", "--set", f"workspace.root={root}",
               "--set", f"data.engine={engine}", "--set", f"data.memory_limit_gib={memory_limit_gib}"]
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    manifest = json.loads((root / "datasets" / "bench" / "latest" / "manifest.json").read_text())
    return wall, manifest["engine"]


@_args.reports_errors
def main() -> None:
    parser = _args.parser(__doc__)
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    parser.add_argument("--users", type=int, help="default: 500,000, or rows / 100 above 50M rows")
    parser.add_argument("--items", type=int, help="default: 200,000, or rows / 100 above 20M rows")
    parser.add_argument("--repeats", type=int, help="default: 3 up to 10M rows, else 1")
    parser.add_argument("--engine", choices=("auto", "memory", "duckdb"), default="auto")
    parser.add_argument("--memory-limit-gib", type=float, default=4.0, help="data.memory_limit_gib")
    args = parser.parse_args()
    users = args.users or max(500_000, args.rows // 100)
    items = args.items or max(200_000, args.rows // 100)
    repeats = args.repeats or (3 if args.rows <= DEFAULT_ROWS else 1)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        raw.mkdir()
        started = time.perf_counter()
        generate(raw, args.rows, users, items)
        generate_s = time.perf_counter() - started
        runs = [run_prepare(raw, Path(tmp) / "artifacts", args.engine, args.memory_limit_gib) for _ in range(repeats)]
        input_gib = (raw / "bench.inter").stat().st_size / 2**30
    peak_rss_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux
    walls = [wall for wall, _ in runs]
    wall = statistics.median(walls)
    figures = {"rows": args.rows, "users": users, "items": items, "engine": runs[0][1],
               "memory_limit_gib": args.memory_limit_gib, "input_gib": round(input_gib, 2),
               "wall_s": round(wall, 2), "rows_per_s": round(args.rows / wall), "peak_rss_gib": round(peak_rss_gib, 3),
               "repeats_wall_s": [round(w, 2) for w in walls], "generate_s": round(generate_s, 1),
               "targets": {"wall_s": 60 if args.rows <= DEFAULT_ROWS else 600, "peak_rss_gib": 4}}
    _results.write(result_name(args.rows), figures, [
        ("rows", f"{args.rows:,}"), ("engine", figures["engine"]), ("wall s (median)", figures["wall_s"]),
        ("rows/s", f"{figures['rows_per_s']:,}"), ("peak RSS GiB", figures["peak_rss_gib"])])


if __name__ == "__main__":
    main()
