"""Stage one across processes on a large catalog: SAID partitioned by item, sharded export, streamed index.

`--items` generated items with short titles (one interaction each, so `prepare` keeps them all) are aligned
by `--processes` CPU processes under `accelerate launch` (gloo), through the real CLI: a tiny Llama (2 layers,
width `--hidden`) with SmolLM2's real tokenizer, `--steps` optimizer steps of SAID (the per-step throughput
needs no more), then every item embedded by the process that owns it, each process's Parquet part written,
and the FAISS index filled by streaming the parts. From the run's manifest: the peak RSS of each process,
the bytes all-reduced per step (the MLP's gradients; the item table, never synchronised, is what DDP over
the whole projector would all-reduce), items/s over all processes, and the export + index time.

    python -m benchmarks.align_scale [--items 1000000 --processes 2 --steps 100]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks import _args, _results
from benchmarks._cli import ROOT
from benchmarks._models import tiny_llama
from pipeline.contracts.history import read_history

WORDS = np.array(["red", "blue", "steel", "micro", "pro", "ultra", "mini", "max", "kit", "set", "pack", "lamp",
                  "cable", "drill", "glass", "tape", "oak", "solar", "quiet", "smart"])
RAW_ITEMS, RAW_INTERACTIONS = "catalog.parquet", "events.parquet"


def generate(folder: Path, items: int, seed: int = 0) -> None:
    """`items` items titled with 3-5 random words, and one interaction with each (users of 50 items)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    words = WORDS[rng.integers(0, len(WORDS), (items, 5))]
    counts = rng.integers(3, 6, items)
    titles = [" ".join(row[:n]) for row, n in zip(words.tolist(), counts)]
    ids = pa.array([f"i{n}" for n in range(items)])
    pq.write_table(pa.table({"item_id": ids, "title": titles}), folder / RAW_ITEMS)
    pq.write_table(pa.table({"user_id": [f"u{n // 50}" for n in range(items)], "item_id": ids,
                             "timestamp": np.arange(items, dtype=np.int64)}), folder / RAW_INTERACTIONS)


def settings(workspace: Path, raw: Path, lm: Path, steps: int) -> list[str]:
    return [f"workspace.root={workspace}", f"data.path={raw}", "data.name=scale", "data.format=table",
            f"data.items_file={RAW_ITEMS}", f"data.interactions_file={RAW_INTERACTIONS}", "data.kcore_users=0",
            "data.kcore_items=0", "data.split=leave_one_out", "align.method=said", f"align.lm={lm}",
            "align.max_text_tokens=16", f"align.said.max_steps={steps}", "align.checkpoint_every=0",
            "align.evidence.items=0", "align.evidence.attribute=null"]


def cli(command: list[str], what: str) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False,
                          env={**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"})
    if done.returncode:
        sys.stderr.write(done.stderr[-3000:])
        _args.fail(f"{what} failed", done.returncode)
    return done


@_args.reports_errors
def main() -> None:
    parser = _args.parser(__doc__)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100, help="SAID optimizer steps (items/s is per step)")
    parser.add_argument("--hidden", type=int, default=64, help="width of the tiny LM (the vectors' dimension)")
    parser.add_argument("--lm", type=_args.existing_dir, help="a causal LM folder instead of the tiny Llama")
    parser.add_argument("--name", default="align_scale", help="results file name")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="align-scale-") as scratch:
        work = Path(scratch)
        lm = args.lm or tiny_llama(work / "lm", hidden=args.hidden)
        generate(work / "raw", args.items)
        sets = [arg for key in settings(work / "ws", work / "raw", lm, args.steps) for arg in ("--set", key)]
        cli([sys.executable, "-m", "pipeline.cli", "prepare", *sets], "prepare")
        started = time.perf_counter()
        done = cli([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                    str(args.processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                    "-m", "pipeline.cli", "align", *sets], "align")
        wall = time.perf_counter() - started
        run = Path(done.stdout.strip().splitlines()[-1])
        manifest = json.loads((run / "manifest.json").read_text())
        history = read_history(run)
        parts = sorted(p.name for p in (run / "embeddings").iterdir())
        item_dim = json.loads((run / "config.json").read_text())["align"]["said"]["item_dim"]
        shutil.rmtree(work / "ws")
    training = manifest["training"]
    figures = {
        "items": manifest["rows"], "processes": manifest["processes"], "steps": training["steps"],
        "shards": training["shards"], "dim": manifest["dim"], "index": manifest["index"]["type"], "parts": parts,
        "peak_rss_gib_per_process": max(manifest["peak_rss_gib"]), "peak_rss_gib": manifest["peak_rss_gib"],
        "allreduce_bytes_per_step": training["synchronised"]["allreduce_bytes_per_step"],
        "synchronised_parameters": training["synchronised"]["parameters"],
        "item_table_bytes": manifest["rows"] * item_dim * 4,
        "items_per_s": round(statistics.median(h["items_per_s"] for h in history[1:] or history), 1),
        "export_index_s": manifest["export_seconds"], "align_wall_s": round(wall, 1),
        "targets": {"peak_rss_gib_per_process": 4},
    }
    _results.write(args.name, figures, [(key, value) for key, value in figures.items() if key != "targets"])


if __name__ == "__main__":
    main()
