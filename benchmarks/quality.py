"""Which stage-two recipe wins, on every shared dataset: item sides and model settings, several seeds each.

Each recipe is an item side (IDs alone, or an embeddings run of one method, with or without an ID vector) and
model settings; `default` is whatever `pipeline.yaml` ships. Every run goes through the real CLI
(`prepare`, `align`, `train-downstream`) and is reported at convergence (test metrics at the best valid epoch,
early stopping as configured) and at a small budget (valid NDCG@10 after 3 epochs, read from the run's
history). Runs are published by run id, so a second invocation reuses every finished run; `--jobs` trains
that many runs at once, each in a workspace of its own over the shared dataset runs.

    python -m benchmarks.quality --workspace artifacts/quality --seeds 3 --jobs 2

`--embeddings DATASET.METHOD=RUN_FOLDER` uses an embeddings run made elsewhere instead of aligning here (SAID
over Scientific takes about an hour on this machine's one core). `--keep RESULTS_JSON...` carries the recipes an
earlier invocation measured and this one does not run into the results written, each marked with its commit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import _args, _cli, _results
from pipeline.contracts.downstream import read_metrics
from stages.downstream.evaluate import evaluate_scores
from stages.downstream.kinds import load_trained
from stages.downstream.sequences import padded

FIRST_SEED = 2020
BUDGET_EPOCH = 3  # the small budget: valid NDCG@10 after this many epochs
# ml-100k as the main job reads it: pipeline.yaml's data settings over the shared copy of the default data.
DATASETS = {"scientific": ("configs/amazon2018-scientific-unisrec.yaml", ()),
            "office": ("configs/amazon2014-office-lcrec.yaml", ()),
            "ml100k": ("pipeline.yaml", ("data.path=../shared/datasets/ml-100k/raw",))}
ONE = "downstream.model.members=1"  # one model, whatever the default says
FROZEN_WITH_ID = ("downstream.model.adapter=whiten", "downstream.model.id_embedding=true")


@dataclass(frozen=True)
class Recipe:
    """An item side (`method`: an align method, "default" for pipeline.yaml's, None for IDs alone) and the
    overrides that make the rest of the recipe."""

    method: str | None
    overrides: tuple[str, ...] = ()


RECIPES = {
    "id": Recipe(None, (ONE,)),  # ID-only SASRec, the baseline
    "default": Recipe("default"),
    "text_id": Recipe("text", (*FROZEN_WITH_ID, ONE)),  # frozen text vectors, whitened, plus an ID vector
    # the same, published as the moving average of its weights
    "text_id_ema": Recipe("text", (*FROZEN_WITH_ID, ONE, "downstream.train.ema_decay=0.995")),
    # the same, three members trained side by side as one model (a seed ensemble's gain, at its cost)
    "text_id_ema_m3": Recipe("text", (*FROZEN_WITH_ID, "downstream.model.members=3",
                                      "downstream.train.ema_decay=0.995")),
    "said_id": Recipe("said", (*FROZEN_WITH_ID, ONE)),
    "fuse_id": Recipe("fuse", (*FROZEN_WITH_ID, ONE)),  # SAID and text vectors joined
}
# What each dataset runs unless --recipes says otherwise; Scientific's best is compared with VQ-Rec's figures.
PLAN = {"scientific": ("default", "id", "text_id", "text_id_ema", "text_id_ema_m3", "fuse_id"), "office": ("default", "id"),
        "ml100k": ("default", "id")}
VQREC = {"ndcg10": 0.0645, "recall10": 0.1238, "ndcg50": 0.0901, "recall50": 0.2409}  # its README, checkpoint 0315


@dataclass(frozen=True)
class Task:
    dataset: str
    recipe: str
    seed: int


def log(message: str) -> None:
    print(f"[quality] {message}", flush=True)


def embeddings_runs(workspace: Path, dataset: str, methods: set[str], given: dict[tuple[str, str], Path],
                    settings: list[str]) -> dict[str, Path]:
    """An embeddings run folder per method: given ones as they are, the others aligned here."""
    runs: dict[str, Path] = {}
    for method in sorted(methods):
        if (dataset, method) in given:
            runs[method] = given[dataset, method]
            continue
        config, data = DATASETS[dataset]
        choice = () if method == "default" else (f"align.method={method}",)
        runs[method], seconds = _cli.pipeline(config, workspace, "align", *data, *choice, *settings)
        log(f"{dataset}: {method} embeddings {runs[method]} ({seconds:.0f} s)")
    return runs


def train(workspace: Path, task: Task, embeddings: Path | None, settings: list[str]) -> dict[str, Any]:
    """One run to early stopping in its own workspace (jobs never wait on each other's locks); its figures."""
    own = workspace / "train" / task.dataset / f"{task.recipe}-{task.seed}"
    own.mkdir(parents=True, exist_ok=True)
    if not (own / "datasets").exists():
        (own / "datasets").symlink_to((workspace / "datasets").resolve())
    recipe = RECIPES[task.recipe]
    config, data = DATASETS[task.dataset]
    run_dir, seconds = _cli.pipeline(config, own, "train-downstream", *data, f"downstream.embeddings={embeddings or 'null'}",
                                     *recipe.overrides, f"downstream.train.seed={task.seed}", *settings)
    metrics = read_metrics(run_dir)
    budget = [e for e in metrics["history"] if e["epoch"] == BUDGET_EPOCH]
    test = metrics["model"]["test"]
    log(f"{task}: test NDCG@10 {test['ndcg@10']:.4f} ({seconds:.0f} s)")
    return {"dataset": task.dataset, "recipe": task.recipe, "seed": task.seed, "run_dir": str(run_dir),
            "epochs_train_s": _results.training_seconds(metrics), "epochs": len(metrics["history"]), "best_epoch": metrics["best_epoch"],
            "valid_ndcg10_epoch3": budget[0]["valid_ndcg@10"] if budget else None,
            "test": {key: test[key] for key in ("ndcg@10", "recall@10", "ndcg@50", "recall@50")},
            "popularity_ndcg10": metrics["popularity"]["test"]["ndcg@10"]}


def seed_ensemble(run_dirs: list[str]) -> dict[str, float]:
    """Test metrics of ranking by the sum of the runs' scores (one recipe, its seeds): what averaging the seeds'
    models would give. A sum of dot products is one dot product of the concatenated user and item vectors."""
    trained = [load_trained(Path(folder)) for folder in run_dirs]
    seqs, config = trained[0].seqs, trained[0].config

    def encode(users: np.ndarray, ends: np.ndarray) -> torch.Tensor:
        return torch.cat([t.model.user_vectors(torch.from_numpy(padded(seqs, users, ends, t.config.model.max_length)))
                          for t in trained], dim=1)

    with torch.no_grad():
        items = torch.cat([t.model.items.all_items() for t in trained], dim=1)
        test = evaluate_scores(encode, items, seqs, "test", config.evaluate)
    return {key: round(test[key], 5) for key in ("ndcg@10", "recall@10", "ndcg@50", "recall@50")}


def mean(values: list[float]) -> float:
    return round(statistics.fmean(values), 5)


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per recipe: means (and NDCG@10's spread) over its seeds."""
    def of(key: str) -> float:
        return mean([run["test"][key] for run in runs])

    budget = [run["valid_ndcg10_epoch3"] for run in runs if run["valid_ndcg10_epoch3"] is not None]
    ndcg = [run["test"]["ndcg@10"] for run in runs]
    return {"seeds": sorted(run["seed"] for run in runs), "ndcg10_mean": of("ndcg@10"),
            "seed_ensemble": seed_ensemble([run["run_dir"] for run in runs]) if len(runs) > 1 else None,
            "ndcg10_std": round(statistics.stdev(ndcg), 5) if len(ndcg) > 1 else 0.0,
            "recall10_mean": of("recall@10"), "ndcg50_mean": of("ndcg@50"), "recall50_mean": of("recall@50"),
            "valid_ndcg10_epoch3": mean(budget) if budget else None,
            "epochs": [run["epochs"] for run in runs],
            "epochs_train_s_mean": mean([run["epochs_train_s"] for run in runs])}


def summaries(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per dataset, per recipe: its seeds' summary."""
    recipes: dict[str, dict[str, Any]] = {}
    for run in runs:
        recipes.setdefault(run["dataset"], {}).setdefault(run["recipe"], []).append(run)
    return {dataset: {name: summarise(found) for name, found in by_recipe.items()}
            for dataset, by_recipe in recipes.items()}


def kept_from(earlier: list[dict[str, Any]], table: dict[str, dict[str, Any]],
              runs: list[dict[str, Any]]) -> None:
    """Add to `table` and `runs` each recipe of the `earlier` results files (later files first) that this
    invocation did not run, marked with the commit, date and command that measured it: stage one for some
    recipes (SAID over Scientific) takes hours, and one invocation need not redo what an earlier one measured."""
    for record in earlier:
        for dataset, found in record["by_dataset"].items():
            for name, summary in found.items():
                if name in table.get(dataset, {}):
                    continue
                measured = summary.get("measured") or {key: record[key] for key in ("git_commit", "date", "command")}
                table.setdefault(dataset, {})[name] = {**summary, "measured": measured}
                runs += [run for run in record["runs"] if (run["dataset"], run["recipe"]) == (dataset, name)]


def figures(table: dict[str, dict[str, Any]], seeds: int) -> dict[str, Any]:
    """The published keys: per dataset its recipes, Scientific's best recipe, the default against ID-only."""
    out: dict[str, Any] = {"recipes": {name: {"method": r.method, "overrides": list(r.overrides)}
                                       for name, r in RECIPES.items()}, "by_dataset": table, "vq_rec": VQREC}
    for dataset, found in table.items():
        entry: dict[str, Any] = {"seeds": seeds}
        for side, name in (("default", "default"), ("id_sasrec", "id")):
            if name in found:
                entry[f"{side}_ndcg10_mean"] = found[name]["ndcg10_mean"]
                entry[f"{side}_valid_ndcg10_epoch3"] = found[name]["valid_ndcg10_epoch3"]
        complete = {name: s for name, s in found.items() if len(s["seeds"]) == seeds}
        if complete:
            best = max(complete, key=lambda name: complete[name]["ndcg10_mean"])
            entry.update({"best_variant": best, **{k: complete[best][k] for k in (
                "ndcg10_mean", "ndcg10_std", "recall10_mean", "ndcg50_mean", "recall50_mean", "seed_ensemble")}})
        out[dataset] = entry
    sci = table.get("scientific", {})
    if "fuse_id" in sci and "text_id" in sci:
        out["said_text_id_vs_text_id"] = round(sci["fuse_id"]["ndcg10_mean"] / sci["text_id"]["ndcg10_mean"], 4)
    return out


def rows(out: dict[str, Any]) -> list[tuple[str, Any]]:
    table = []
    for dataset, found in out["by_dataset"].items():
        for name, s in sorted(found.items(), key=lambda item: -item[1]["ndcg10_mean"]):
            budget = "-" if s["valid_ndcg10_epoch3"] is None else f"{s['valid_ndcg10_epoch3']:.4f}"
            figure = (f"NDCG@10 {s['ndcg10_mean']:.4f} ± {s['ndcg10_std']:.4f}, Recall@10 {s['recall10_mean']:.4f}, "
                      f"NDCG@50 {s['ndcg50_mean']:.4f}, Recall@50 {s['recall50_mean']:.4f}; "
                      f"valid NDCG@10 after {BUDGET_EPOCH} epochs {budget}; training {s['epochs_train_s_mean']:.0f} s a seed")
            if s["seed_ensemble"]:
                figure += "; its seeds' scores summed: " + ", ".join(f"{k} {v:.4f}" for k, v in s["seed_ensemble"].items())
            if "measured" in s:
                figure += f"; measured at commit {(s['measured']['git_commit'] or '?')[:7]}, {s['measured']['date'][:10]}"
            table.append((f"{dataset} {name} (seeds {s['seeds']}; epochs {s['epochs']})", figure))
    if "said_text_id_vs_text_id" in out:
        table.append(("SAID + text + ID / text + ID, NDCG@10 on Scientific", out["said_text_id_vs_text_id"]))
    table.append(("VQ-Rec on Scientific (its README)", ", ".join(f"{k} {v}" for k, v in VQREC.items())))
    return table


def given_run(text: str) -> tuple[tuple[str, str], Path]:
    """argparse type: DATASET.METHOD=RUN_FOLDER."""
    key, _, folder = text.partition("=")
    dataset, _, method = key.partition(".")
    if dataset not in DATASETS or not method:
        raise argparse.ArgumentTypeError(f"{text}: expected DATASET.METHOD=RUN_FOLDER, DATASET one of {sorted(DATASETS)}")
    return (dataset, method), _args.existing_dir(folder)


def parse_args() -> argparse.Namespace:
    parser = _args.parser(__doc__)
    parser.add_argument("--workspace", type=Path, default=Path("artifacts/quality"))
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=sorted(DATASETS))
    parser.add_argument("--recipes", nargs="+", choices=sorted(RECIPES),
                        help="run these on every dataset (default: each dataset's PLAN)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1, help="training runs at once (one torch thread each)")
    parser.add_argument("--embeddings", nargs="*", type=given_run, default=[], metavar="DATASET.METHOD=RUN_FOLDER",
                        help="use these embeddings runs instead of aligning")
    parser.add_argument("--keep", nargs="*", type=_args.existing_file, default=[], metavar="RESULTS_JSON",
                        help="earlier quality.json files: their recipes this invocation does not run are kept, "
                             "each marked with the commit that measured it (a later file wins)")
    _args.add_overrides(parser)
    return parser.parse_args()


def run_all(tasks: list[Task], jobs: int, one: Callable[[Task], dict[str, Any]]) -> list[dict[str, Any]]:
    if jobs > 1:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, tasks))


@_args.reports_errors
def main() -> None:
    args = parse_args()
    workspace = args.workspace.resolve()
    given = dict(args.embeddings)
    tasks, inputs = [], {}
    for dataset in args.datasets:
        config, data = DATASETS[dataset]
        _cli.pipeline(config, workspace, "prepare", *data, *args.overrides)
        recipes = args.recipes or PLAN[dataset]
        methods = {RECIPES[name].method for name in recipes} - {None}
        inputs[dataset] = embeddings_runs(workspace, dataset, methods, given, args.overrides)  # type: ignore[arg-type]
        tasks += [Task(dataset, name, FIRST_SEED + k) for name in recipes for k in range(args.seeds)]

    def one(task: Task) -> dict[str, Any]:
        method = RECIPES[task.recipe].method
        return train(workspace, task, None if method is None else inputs[task.dataset][method], args.overrides)

    runs = run_all(tasks, args.jobs, one)
    table = summaries(runs)
    earlier = [json.loads(path.read_text()) for path in reversed(args.keep)]
    kept_from(earlier, table, runs)
    out = figures(table, args.seeds)
    out["kept_from_earlier"] = sum("measured" in s for found in table.values() for s in found.values())
    out["embeddings"] = {dataset: {m: str(p) for m, p in found.items()} for dataset, found in inputs.items()}
    for record in earlier:
        for dataset, found in record["embeddings"].items():
            for method, folder in found.items():
                out["embeddings"].setdefault(dataset, {}).setdefault(method, folder)
    out["runs"] = runs
    _results.write("quality", out, rows(out))


if __name__ == "__main__":
    main()
