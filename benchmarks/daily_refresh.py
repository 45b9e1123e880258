"""The scheduled refresh, measured: ml-100k replayed as three days through the real CLI.

Day 1 holds the interactions up to the 90% time quantile, day 2 up to 95%, day 3 all of them with five
existing items' titles edited. Each day runs the scheduled job (`seqrec-pipeline run -c examples/daily.yaml`
with SAID and the default LM, stage two warm-started: `downstream.train.init=previous`), then the same stage two from scratch
for comparison. On day 2, before any retraining, the day-1 model recommends from day-2 histories
(`recommend --histories`): Recall@10 on the day-2 test targets that are items new on day 2, beside
popularity counted on day 2's train split; and the same on every day-2 interaction with a new item that
has a history before it (test targets alone are few: most users' last interaction predates day 2).

    python -m benchmarks.daily_refresh [--workspace artifacts/bench-daily]

The default LM is converted from GGUF once before day 1, so day 1's time is the alignment, not the
one-time conversion every later run skips too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks import _args, _results
from benchmarks._cli import ROOT
from pipeline.config import load_config
from pipeline.contracts.dataset import read_interactions, read_items
from pipeline.contracts.downstream import read_metrics
from pipeline.contracts.embeddings import read_embeddings
from pipeline.contracts.recommendations import read_recommendations
from stages.align.lm import load_causal_lm

SOURCE = ROOT.parent / "shared" / "datasets" / "ml-100k" / "raw"
QUANTILES = {1: 0.90, 2: 0.95, 3: 1.0}
EDITED_ITEMS = 5
STAGES = ("datasets", "embeddings", "downstream", "recommendations")


def write_day(day: int, target: Path) -> Path:
    """The raw ml-100k files as they stood on `day`: interactions up to its time quantile; on day 3, the
    first EDITED_ITEMS items of day 1's catalog retitled."""
    target.mkdir(parents=True, exist_ok=True)
    inter = (SOURCE / "ml-100k.inter").read_text(encoding="latin-1").splitlines()
    stamps = np.array([float(line.split("\t")[3]) for line in inter[1:]])
    cut = np.quantile(stamps, QUANTILES[day])
    kept = [line for line, stamp in zip(inter[1:], stamps) if stamp <= cut]
    (target / "ml-100k.inter").write_text("\n".join([inter[0], *kept]) + "\n", encoding="latin-1")
    items = (SOURCE / "ml-100k.item").read_text(encoding="latin-1").splitlines()
    if day == 3:
        for n in range(1, 1 + EDITED_ITEMS):
            item, title, rest = items[n].split("\t", 2)
            items[n] = "\t".join([item, f"{title} (Restored Edition)", rest])
    (target / "ml-100k.item").write_text("\n".join(items) + "\n", encoding="latin-1")
    shutil.copy(SOURCE / "ml-100k.user", target / "ml-100k.user")
    return target


OVERRIDES: list[str] = []  # --set options given to the benchmark, passed to every command (smoke runs)
# The refresh's own settings (its item side: frozen vectors + ID vectors score new items at once), aligned with
# SAID, the costly stage one whose cost should follow the catalog's change.
REFRESH_CONFIG = ROOT / "examples" / "daily.yaml"
REFRESH_METHOD = ("align.method=said",)


def cli(workspace: Path, raw: Path, *args: str) -> tuple[list[dict], float]:
    """Run one CLI command with JSON events; the events and the command's wall time."""
    command = [sys.executable, "-m", "pipeline.cli", *args, "--log-format", "json", "--config", str(REFRESH_CONFIG),
               "--set", f"workspace.root={workspace}", "--set", f"data.path={raw}"]
    for override in (*REFRESH_METHOD, *OVERRIDES):
        command += ["--set", override]
    started = time.time()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"{' '.join(args)} failed with exit code {done.returncode}")
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    return [{"start": started, **event} for event in events], time.time() - started


def stage_walls(events: list[dict]) -> dict[str, float]:
    """Seconds per stage of one `run`: from the previous stage's publish (or the start) to this one's."""
    walls, previous = {}, events[0]["start"] if events else 0.0
    for event in events:
        if event["event"] in ("published", "reused") and "run_dir" in event:
            kind = Path(event["run_dir"]).parents[1].name
            if kind in STAGES:
                walls[kind] = round(event["time"] - previous, 2)
                previous = event["time"]
    return walls


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def items_text(dataset_dir: Path) -> dict[str, str]:
    table = read_items(dataset_dir, ["item_id", "text"])
    return dict(zip(table.column("item_id").to_pylist(), table.column("text").to_pylist()))


def new_or_changed(before: dict[str, str], after: dict[str, str]) -> int:
    return sum(1 for item, text in after.items() if before.get(item) != text)


def unchanged_rows_identical(before: Path, after: Path, changed: set[str]) -> bool:
    old, new = read_embeddings(before), read_embeddings(after)
    row = {item: n for n, item in enumerate(old.item_ids)}
    kept = [(row[item], n) for n, item in enumerate(new.item_ids) if item in row and item not in changed]
    return bool(kept) and all(np.array_equal(old.vectors[a], new.vectors[b]) for a, b in kept)


def test_ndcg(run_dir: Path) -> float:
    return read_metrics(run_dir)["model"]["test"]["ndcg@10"]


def cold_start_cases(dataset_dir: Path, new_items: set[str]) -> dict[str, list[tuple[str, list[str], str]]]:
    """(case id, history, target) for day 2's test targets that are new items, and for every interaction with a
    new item that has a history before it (a larger sample of the same question)."""
    inter = read_interactions(dataset_dir).sort_by([("user_id", "ascending"), ("position", "ascending")])
    by_user: dict[str, list[dict]] = {}
    for row in inter.to_pylist():
        by_user.setdefault(row["user_id"], []).append(row)
    tests, every = [], []
    for user, rows in by_user.items():
        items = [row["item_id"] for row in rows]
        for n, row in enumerate(rows):
            if n and row["item_id"] in new_items:
                every.append((f"{user}@{n}", items[:n], row["item_id"]))
                if row["split"] == "test":
                    tests.append((user, items[:n], row["item_id"]))
    return {"test": tests, "every": every}


def recall_at_10(workspace: Path, raw: Path, day1_run: str, cases: list[tuple[str, list[str], str]],
                 counts: dict[str, int], catalog: list[str], path: Path) -> tuple[float, float]:
    """Recall@10 of the day-1 model (`recommend --histories`, no retraining) and of train popularity."""
    pq.write_table(pa.table({"user_id": [case for case, history, _ in cases for _ in history],
                             "item_id": [item for _, history, _ in cases for item in history]}), path)
    events, _ = cli(workspace, raw, "recommend", "--histories", str(path), "--set", f"recommend.run={day1_run}",
                    "--set", "recommend.k=10", "--set", "recommend.filter_history=false")
    out = Path(next(e["run_dir"] for e in events if e["event"] in ("published", "reused")))
    lists = {row["user_id"]: row["item_ids"] for row in read_recommendations(out).to_pylist()}
    scores = np.array([counts.get(item, 0) for item in catalog])
    model = sum(target in lists.get(case, []) for case, _, target in cases)
    # ties count against the target, as in evaluation
    popularity = sum(int((scores >= counts.get(target, 0)).sum()) - 1 < 10 for _, _, target in cases)
    return round(model / max(len(cases), 1), 4), round(popularity / max(len(cases), 1), 4)


def cold_start(workspace: Path, raw: Path, day1_run: str, dataset_dir: Path, new_items: set[str]) -> dict[str, float | int]:
    """Day 1's model on day 2's histories (no retraining), on targets that are items new on day 2."""
    cases = cold_start_cases(dataset_dir, new_items)
    train = read_interactions(dataset_dir, ["item_id", "split"]).to_pylist()
    counts: dict[str, int] = {}
    for row in train:
        if row["split"] == "train":
            counts[row["item_id"]] = counts.get(row["item_id"], 0) + 1
    catalog = list(items_text(dataset_dir))
    test_model, test_popularity = recall_at_10(workspace, raw, day1_run, cases["test"], counts, catalog,
                                               workspace / "day2_test_histories.parquet")
    every_model, every_popularity = recall_at_10(workspace, raw, day1_run, cases["every"], counts, catalog,
                                                 workspace / "day2_every_histories.parquet")
    return {"new_item_targets": len(cases["test"]), "new_item_recall10_model": test_model,
            "new_item_recall10_popularity": test_popularity,
            "new_item_interactions": len(cases["every"]), "new_item_interactions_recall10_model": every_model,
            "new_item_interactions_recall10_popularity": every_popularity}


@_args.reports_errors
def main() -> None:
    parser = _args.parser(__doc__)
    parser.add_argument("--workspace", type=Path, default=ROOT / "artifacts" / "bench-daily")
    _args.add_overrides(parser)
    parser.add_argument("--name", default="daily_refresh", help="results file name")
    args = parser.parse_args()
    OVERRIDES.extend(args.overrides)
    shutil.rmtree(args.workspace, ignore_errors=True)
    defaults = load_config(None, args.overrides)
    load_causal_lm(defaults.align.lm, "align.lm", defaults.align.model_cache, True)  # the one-time conversion
    days: dict[int, dict] = {}
    for day in (1, 2, 3):
        raw = write_day(day, args.workspace / "raw" / f"day{day}")
        events, wall = cli(args.workspace, raw, "run", "--set", "downstream.train.init=previous")
        dirs = {Path(e["run_dir"]).parents[1].name: Path(e["run_dir"]) for e in events
                if e["event"] in ("published", "reused") and "run_dir" in e}
        record = {"wall_s": round(wall, 1), "stage_wall_s": stage_walls(events),
                  "items_trained": manifest(dirs["embeddings"]).get("items_embedded", 0),
                  "embeddings_run": dirs["embeddings"].name, "dataset_dir": dirs["datasets"],
                  "warm": {"run": dirs["downstream"].name, "epochs": manifest(dirs["downstream"])["epochs"],
                           "ndcg10": test_ndcg(dirs["downstream"])}}
        if day > 1:
            before = items_text(days[day - 1]["dataset_dir"])
            after = items_text(dirs["datasets"])
            record["new_or_changed_items"] = new_or_changed(before, after)
            changed = {item for item, text in after.items() if item in before and before[item] != text}
            previous_embeddings = args.workspace / "embeddings" / "ml-100k" / days[day - 1]["embeddings_run"]
            record["unchanged_rows_identical"] = unchanged_rows_identical(previous_embeddings, dirs["embeddings"], changed)
            if day == 2:
                new_items = set(after) - set(before)
                record["cold_start"] = cold_start(args.workspace, raw, days[1]["warm"]["run"], dirs["datasets"],
                                                  new_items)
            cold_events, cold_wall = cli(args.workspace, raw, "train-downstream", "--set", "downstream.train.init=scratch")
            cold_dir = Path(next(e["run_dir"] for e in cold_events if e["event"] in ("published", "reused")))
            record["cold"] = {"run": cold_dir.name, "epochs": manifest(cold_dir)["epochs"], "ndcg10": test_ndcg(cold_dir),
                              "wall_s": round(cold_wall, 1)}
        days[day] = record
        print(json.dumps({day: {k: v for k, v in record.items() if k != "dataset_dir"}}, default=str), flush=True)
    later = (2, 3)
    figures = {
        "day1_wall_s": days[1]["wall_s"], "day2_wall_s": days[2]["wall_s"], "day3_wall_s": days[3]["wall_s"],
        "day2_over_day1_wall": round(days[2]["wall_s"] / days[1]["wall_s"], 3),
        "day2_new_or_changed_items": days[2]["new_or_changed_items"], "day2_items_trained": days[2]["items_trained"],
        "day3_new_or_changed_items": days[3]["new_or_changed_items"], "day3_items_trained": days[3]["items_trained"],
        "unchanged_rows_identical": all(days[d]["unchanged_rows_identical"] for d in later),
        "warm_over_cold_ndcg10": round(float(np.mean([days[d]["warm"]["ndcg10"] / days[d]["cold"]["ndcg10"] for d in later])), 3),
        "warm_over_cold_epochs": round(sum(days[d]["warm"]["epochs"] for d in later)
                                       / sum(days[d]["cold"]["epochs"] for d in later), 3),
        **days[2]["cold_start"],
        "days": {day: {k: v for k, v in record.items() if k not in ("dataset_dir", "cold_start")}
                 for day, record in days.items()},
    }
    table = [(key, value) for key, value in figures.items() if key != "days"]
    table += [(f"day {day} stage walls (s)", record["stage_wall_s"]) for day, record in days.items()]
    table += [(f"day {day} test NDCG@10 warm / cold (epochs)",
               f"{record['warm']['ndcg10']:.4f} ({record['warm']['epochs']}) / "
               + (f"{record['cold']['ndcg10']:.4f} ({record['cold']['epochs']})" if "cold" in record else "-"))
              for day, record in days.items()]
    _results.write(args.name, json.loads(json.dumps(figures, default=str)), table)


if __name__ == "__main__":
    main()
