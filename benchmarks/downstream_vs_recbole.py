"""Our SASRec (ID-only, on frozen text embeddings, on SAID embeddings) and GRU4Rec against RecBole 1.2.1.

Everything runs on UniSRec's Scientific split, through the real CLI as subprocesses (`prepare`, `align`,
`train-downstream --force`) in a workspace of its own, with the hyperparameters of RecBole's SASRec and
GRU4Rec as UniSRec ran them (RecBole defaults, hidden size 300). RecBole runs in its own venv through
`benchmarks/peers/recbole_run.py`. A whole run is timed from start to its early-stopping point:

- ours: the wall time of the `train-downstream` subprocess (start-up, data loading, every epoch with its
  valid evaluation, the test evaluation and the export), i.e. everything, so the ratio cannot flatter us;
- RecBole: `train_s` from the runner, its `trainer.fit` alone (every epoch with its valid evaluation).

RecBole's SASRec takes minutes per epoch on a small CPU, so `--recbole-max-epochs` caps it; the results
then say it was capped and the time ratio is taken against the capped run (a lower bound on RecBole's
whole run, so the ratio is an upper bound on ours / RecBole), with the per-epoch ratio beside it.

    python -m benchmarks.downstream_vs_recbole --seeds 3 --recbole-max-epochs SASRec=3 GRU4Rec=300
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import _args, _cli, _kept, _results
from pipeline.contracts.downstream import CONFIG_FILE, read_metrics
from pipeline.contracts.embeddings import read_embeddings
from stages.downstream import train

ROOT = _cli.ROOT
CONFIG = "configs/amazon2018-scientific-unisrec.yaml"
RAW = "../shared/datasets/amazon2018-scientific-unisrec/raw"
EMBEDDINGS_KEY = "downstream.embeddings="
RECBOLE_PYTHON = ROOT / ".venv-recbole" / "bin" / "python"
KEPT_FILE = "downstream_vs_recbole.runs.json"  # a workspace's finished runs, kept across invocations
FIRST_SEED = 2020  # RecBole's default seed; seeds are FIRST_SEED, FIRST_SEED + 1, ...

# RecBole 1.2.1's defaults (properties/model/<Model>.yaml, overall.yaml) with UniSRec's hidden size 300.
TRAIN = {"loss": "ce", "lr": 0.001, "weight_decay": 0.0, "patience": 10, "max_length": 50}
# RecBole steps on 2,048 prefixes, one target each; our windows hold every target of a user's training
# sequence (34,101 targets over 8,442 users here: 4.04 each), so 512 windows make about as many targets a step.
RECBOLE_BATCH, OUR_BATCH = 2048, 512
SAID_ADAPTER = ("downstream.model.adapter=whiten",)
TEXT_ADAPTER = ("downstream.model.adapter=linear",)  # as the text runs were measured
# The same frozen text vectors with a trainable ID vector added to each adapted one (downstream.model.id_embedding).
TEXT_ID = (*TEXT_ADAPTER, "downstream.model.id_embedding=true")
SAID_ID = (*SAID_ADAPTER, "downstream.model.id_embedding=true")
# GRU4Rec steps on batches of equal target counts: with 512 windows a batch, batches of one-item histories
# (512 targets) and of 50-item ones (up to 25,600) alternate, and GRU4Rec's valid NDCG@10 fell for several
# epochs after the first (seed 2021: below popularity until patience ran out, test 0.0146).
GRU_BATCHING = ("downstream.train.batch_by=targets",)
MATCHED = {"sasrec": {"hidden_size": 300, "layers": 2, "heads": 2, "feedforward_size": 256, "dropout": 0.5},
           "gru4rec": {"hidden_size": 300, "layers": 1, "dropout": 0.3}}


def cli(workspace: Path, command: str, *overrides: str, force: bool = False) -> tuple[Path, float]:
    return _cli.pipeline(CONFIG, workspace, command, *overrides, force=force)


def said_run(workspace: Path) -> Path | None:
    """The newest published SAID embeddings run in the workspace, if any (SAID on CPU is too slow to make here)."""
    folder = workspace / "embeddings" / "amazon2018-scientific-unisrec"
    runs = [p for p in folder.glob("*/manifest.json") if not p.parent.name.startswith(".")
            and json.loads(p.read_text()).get("method") == "said"]
    return max(runs, key=lambda p: p.stat().st_mtime).parent if runs else None


def our_overrides(kind: str, embeddings: Path | None, seed: int, max_epochs: int,
                  extra: tuple[str, ...] = ()) -> list[str]:
    """The `--set` overrides of one of our runs: RecBole's hyperparameters, the variant's extras."""
    return [f"{EMBEDDINGS_KEY}{'null' if embeddings is None else embeddings}", f"downstream.model.kind={kind}",
            *(f"downstream.model.{key}={value}" for key, value in MATCHED[kind].items()),
            f"downstream.model.max_length={TRAIN['max_length']}", f"downstream.train.loss={TRAIN['loss']}",
            f"downstream.train.lr={TRAIN['lr']}", f"downstream.train.weight_decay={TRAIN['weight_decay']}",
            f"downstream.train.patience={TRAIN['patience']}", f"downstream.train.epochs={max_epochs}",
            f"downstream.train.batch_size={OUR_BATCH}", f"downstream.train.seed={seed}",
            "downstream.index.kind=flat", *extra]


def train_ours(workspace: Path, seed: int, overrides: list[str], max_epochs: int) -> dict[str, Any]:
    """One training run to early stopping, timed whole; its figures and the overrides that made it."""
    run_dir, seconds = cli(workspace, "train-downstream", *overrides, force=True)
    metrics = read_metrics(run_dir)
    epochs = len(metrics["history"])
    return {"seed": seed, "run_dir": str(run_dir), "whole_run_s": round(seconds, 1), "epochs": epochs,
            "best_epoch": metrics["best_epoch"], "stopped_early": epochs < max_epochs,
            "epochs_train_s": _results.training_seconds(metrics),
            "valid_ndcg10": metrics["model"]["valid"]["ndcg@10"],
            "test": {k: metrics["model"]["test"][k] for k in ("recall@10", "ndcg@10", "ndcg@50", "mrr")},
            "popularity_test": {k: metrics["popularity"]["test"][k] for k in ("recall@10", "ndcg@10")},
            "overrides": overrides}


def train_recbole(workspace: Path, model: str, seed: int, max_epochs: int) -> dict[str, Any]:
    """One RecBole run in its own venv, resumed from its checkpoints in the workspace; the runner's JSON line.

    It runs in a temporary folder because RecBole writes `log_tensorboard/` into its working directory.
    """
    args = [str(RECBOLE_PYTHON), str(ROOT / "benchmarks/peers/recbole_run.py"), "--data", str((ROOT / RAW).resolve()),
            "--model", model, "--seed", str(seed),
            "--hidden", str(MATCHED[model.lower()]["hidden_size"]), "--patience", str(TRAIN["patience"]),
            "--epochs", str(max_epochs), "--lr", str(TRAIN["lr"]), "--batch-size", str(RECBOLE_BATCH),
            "--state-dir", str(workspace / "recbole" / f"{model}-{seed}")]
    with tempfile.TemporaryDirectory() as scratch:
        done = subprocess.run(args, cwd=scratch, stdout=subprocess.PIPE, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "capped": not result["stopped_early"]}


def targets_per_user() -> float:
    """Training targets per user in the split RecBole reads: one per row of its train file (a prefix)."""
    rows = (ROOT / RAW / "Scientific.train.inter").read_text().splitlines()[1:]
    return len(rows) / len({row.split("\t", 1)[0] for row in rows})


def summary(runs: list[dict[str, Any]], test_key: str = "test") -> dict[str, Any]:
    """Mean and spread over seeds of what the comparison uses."""
    def mean(values: list[float]) -> float:
        return round(statistics.fmean(values), 5)

    def spread(values: list[float]) -> float:
        return round(statistics.stdev(values), 5) if len(values) > 1 else 0.0

    ndcg = [r[test_key]["ndcg@10"] for r in runs]
    return {"seeds": len(runs), "ndcg10": mean(ndcg), "ndcg10_std": spread(ndcg),
            "recall10": mean([r[test_key]["recall@10"] for r in runs]),
            "whole_run_s": round(statistics.fmean(r.get("whole_run_s", r.get("train_s", 0.0)) for r in runs), 1),
            "epochs": [r["epochs"] for r in runs], "capped": any(not r["stopped_early"] for r in runs)}


def epoch_cap(caps: list[str], model: str) -> int:
    """The epoch cap for `model` from `--recbole-max-epochs` entries "N" (every model) or "Model=N"."""
    chosen = [c.split("=", 1)[1] for c in caps if c.split("=", 1)[0] == model] or [c for c in caps if "=" not in c]
    return int(chosen[0]) if chosen else 300


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@_args.reports_errors
def main() -> None:
    parser = _args.parser(__doc__)
    parser.add_argument("--workspace", type=Path, default=ROOT / "artifacts" / "bench-downstream-vs-recbole")
    parser.add_argument("--seeds", type=int, default=3, help="our runs per variant (seeds 2020, 2021, ...)")
    parser.add_argument("--max-epochs", type=int, default=200, help="cap on our runs (early stopping ends them first)")
    parser.add_argument("--said", action="store_true", help="make SAID embeddings (slow on CPU) if none exist")
    parser.add_argument("--said-run", type=Path, help="a published SAID embeddings run to use (default: the "
                        "workspace's newest)")
    parser.add_argument("--recbole-seeds", type=int, default=1, help="RecBole runs per model (0 = skip RecBole)")
    parser.add_argument("--recbole-max-epochs", nargs="+", default=["300"], metavar="[MODEL=]N",
                        help="cap on RecBole's epochs, for every model or per model, e.g. SASRec=3 GRU4Rec=300 "
                        "(300 = its default)")
    parser.add_argument("--recbole-models", nargs="+", default=["SASRec", "GRU4Rec"], choices=["SASRec", "GRU4Rec"])
    parser.add_argument("--reuse-runs", action="store_true",
                        help="keep the runs an earlier, interrupted invocation finished (same workspace) instead of redoing them")
    parser.add_argument("--variants", nargs="+", metavar="NAME",
                        help="train only these of our variants (e.g. ours_id_sasrec); the others' kept runs still count")
    _kept.add_parallel_options(parser, FIRST_SEED)
    parser.add_argument("--figures-only", action="store_true",
                        help="train nothing: write the results from the runs kept in the workspace")
    _args.add_overrides(parser)
    args = parser.parse_args()
    workspace = args.workspace.resolve()
    # Every finished run is kept in the workspace at once, so an hour of training survives a later failure.
    done_file = workspace / KEPT_FILE
    if args.figures_only:
        kept = _kept.recorded(workspace, KEPT_FILE)
        if kept is None:
            _args.fail(f"--figures-only: {done_file} not found (no invocation has kept runs in this workspace)")
        text, said = (None if kept["embeddings"].get(k) is None else Path(kept["embeddings"][k]) for k in ("text", "said"))
        ours = matching(kept_runs(kept["ours"], args.kept_from), variants_of(text, said, args.recbole_models), args)
        _results.write("downstream_vs_recbole", *figures(ours, kept["peers"], text, said, args))
        return

    log("prepare, text embeddings")
    cli(workspace, "prepare", *args.overrides)
    text, _ = cli(workspace, "align", "align.method=text", "align.evidence.attribute=null", *args.overrides)
    said = args.said_run.resolve() if args.said_run else said_run(workspace)
    if said is None and args.said:
        said, _ = cli(workspace, "align", "align.method=said", "align.evidence.attribute=null", *args.overrides)
    variants = variants_of(text, said, args.recbole_models)
    if unknown := set(args.variants or ()) - set(variants):
        parser.error(f"--variants: no variant {', '.join(sorted(unknown))} here (these are: {', '.join(variants)})")
    kept = json.loads(done_file.read_text()) if args.reuse_runs and done_file.is_file() else {"ours": {}, "peers": {}}
    ours = matching(kept_runs(kept["ours"], args.kept_from), variants, args)
    peers: dict[str, list[dict[str, Any]]] = kept["peers"]
    used = {"text": str(text), "said": None if said is None else str(said)}

    def keep() -> None:  # runs of variants this invocation leaves out (e.g. GRU4Rec's) stay kept
        done_file.write_text(json.dumps({"ours": {**kept["ours"], **ours}, "peers": peers, "embeddings": used}, indent=2))

    for name, (kind, embeddings, extra) in variants.items():
        if args.variants and name not in args.variants:
            continue
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            if any(r["seed"] == seed for r in ours[name]):
                continue
            overrides = [*our_overrides(kind, embeddings, seed, args.max_epochs, extra), *args.overrides]
            log(f"{name} seed {seed}")
            ours[name].append(train_ours(workspace, seed, overrides, args.max_epochs))
            log(json.dumps(ours[name][-1]["test"]) + f" in {ours[name][-1]['whole_run_s']} s")
            keep()
    for model in args.recbole_models if args.recbole_seeds else []:
        for seed in range(FIRST_SEED, FIRST_SEED + args.recbole_seeds):
            if any(r["seed"] == seed for r in peers.get(f"recbole_{model.lower()}", [])):
                continue
            cap = epoch_cap(args.recbole_max_epochs, model)
            log(f"RecBole {model} seed {seed}, at most {cap} epochs")
            peers.setdefault(f"recbole_{model.lower()}", []).append(train_recbole(workspace, model, seed, cap))
            log(json.dumps(peers[f"recbole_{model.lower()}"][-1]))
            keep()

    if not ours.get("ours_id_sasrec"):  # a workspace training other variants only, to be collected elsewhere
        log("no ID-only SASRec run, the reference of every comparison: results not written (collect this "
            "workspace's runs with --kept-from)")
        return
    _results.write("downstream_vs_recbole", *figures(ours, peers, text, said, args))


Variant = tuple[str, Path | None, tuple[str, ...]]  # model kind, embeddings run (None: IDs), extra overrides


def variants_of(text: Path, said: Path | None, recbole_models: list[str]) -> dict[str, Variant]:
    """Our runs, by results key. SAID's mean-pooled soft tokens share a large common component (the texts'
    layout), so they go through the whitening adapter; the text encoder's vectors through a linear one."""
    return {"ours_id_sasrec": ("sasrec", None, ()), "ours_text_sasrec": ("sasrec", text, TEXT_ADAPTER),
            "ours_text_id_sasrec": ("sasrec", text, TEXT_ID),
            **({"ours_said_sasrec": ("sasrec", said, SAID_ADAPTER), "ours_said_id_sasrec": ("sasrec", said, SAID_ID)}
               if said else {}),
            **({"ours_id_gru4rec": ("gru4rec", None, GRU_BATCHING)} if "GRU4Rec" in recbole_models else {})}


@functools.cache
def vectors_sha256(run: str) -> str | None:
    """What an embeddings run holds (item ids and vectors), whatever its run id; None if it is gone."""
    if not Path(run).is_dir():
        return None
    embeddings = read_embeddings(Path(run))
    return hashlib.sha256(json.dumps(embeddings.item_ids).encode() + embeddings.vectors.tobytes()).hexdigest()


def same_settings(run_dir: Path, wanted: list[str]) -> bool:
    """Whether a kept run was made with the settings `wanted` resolves to, by the current training code, its
    embeddings compared by content (a change in stage one's code re-publishes the same vectors under a new
    run id)."""
    made = _kept.recorded(run_dir, CONFIG_FILE)
    if made is None or not _kept.made_by(run_dir, train.code(made["model"]["kind"])):
        return False
    if not _kept.section_agrees(made, CONFIG, "downstream", wanted, skip=("embeddings",)):
        return False
    made_run, wanted_run = str(made["embeddings"]), str(_kept.resolved(CONFIG, "downstream", tuple(wanted))["embeddings"])
    made_vectors = vectors_sha256(made_run)
    return made_run == wanted_run or (made_vectors is not None and made_vectors == vectors_sha256(wanted_run))


def kept_runs(own: dict[str, list[dict[str, Any]]], others: list[Path]) -> dict[str, list[dict[str, Any]]]:
    """The workspace's kept runs, then those kept in `others`."""
    runs: dict[str, list[dict[str, Any]]] = {name: list(rs) for name, rs in own.items()}
    for workspace in others:
        kept = _kept.recorded(workspace, KEPT_FILE)
        if kept is None:
            _args.fail(f"--kept-from: {workspace / KEPT_FILE} not found (no benchmark invocation kept runs there)")
        for name, rs in kept["ours"].items():
            runs.setdefault(name, []).extend(rs)
    return runs


def matching(kept: dict[str, list[dict[str, Any]]], variants: dict[str, Variant],
             args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """The kept runs made with the settings this invocation would use (others would mix settings), the first
    of each seed."""
    chosen: dict[str, list[dict[str, Any]]] = {}
    for name, (kind, embeddings, extra) in variants.items():
        by_seed: dict[int, dict[str, Any]] = {}
        for run in kept.get(name, []):
            if run["seed"] not in by_seed and same_settings(
                    Path(run["run_dir"]),
                    [*our_overrides(kind, embeddings, run["seed"], args.max_epochs, extra), *args.overrides]):
                by_seed[run["seed"]] = run
        chosen[name] = list(by_seed.values())
    return chosen


def figures(ours: dict, peers: dict, text: Path, said: Path | None,
            args: argparse.Namespace) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """The results record and its Markdown table."""
    summaries = {**{name: summary(runs) for name, runs in ours.items() if runs},
                 **{name: summary(runs) for name, runs in peers.items()}}
    popularity = ours["ours_id_sasrec"][0]["popularity_test"]
    targets_per_batch = OUR_BATCH * targets_per_user()  # reads RecBole's train file once
    ndcg10 = {name: s["ndcg10"] for name, s in summaries.items()} | {"popularity": popularity["ndcg@10"]}
    recall10 = {name: s["recall10"] for name, s in summaries.items()} | {"popularity": popularity["recall@10"]}
    record: dict[str, Any] = {"ndcg10": ndcg10, "recall10": recall10, "summary": summaries,
                              "runs": {**ours, **peers}, "hyperparameters": {
                                  **TRAIN, **{f"{kind}_model": m for kind, m in MATCHED.items()},
                                  "ours_batch_size": f"{OUR_BATCH} windows of up to 51 items, every position a target (about "
                                  f"{targets_per_batch:.0f} targets), batched by history length",
                                  "recbole_batch_size": f"{RECBOLE_BATCH} prefixes, one target each",
                                  "ours_loss_weighting": "every target the same (a batch's summed loss over the epoch's "
                                  "mean targets per batch)",
                                  "ours_code_identities": {kind: train.code(kind) for kind in MATCHED},
                                  "ours_norm": "pre-norm blocks, LayerNorm on the input", "recbole_norm": "post-norm",
                                  "patience_rule": f"ours stops after {TRAIN['patience']} epochs without a better valid "
                                  f"NDCG@10, RecBole after {TRAIN['patience'] + 1} (it stops once its count exceeds "
                                  "stopping_step)",
                                  "ours_gru4rec_batches": "cut by target count (downstream.train.batch_by=targets): "
                                  f"about {targets_per_batch:.0f} targets each",
                                  "ours_text_adapter": "linear (frozen 384-d all-MiniLM-L6-v2 vectors -> 300)",
                                  "ours_text_id": "the text variant plus a trainable 300-d ID vector per item",
                                  "ours_said_adapter": "whiten (PCA whitening of the frozen 576-d SAID vectors, "
                                  "then linear -> 300)",
                                  "ours_said_id": "the SAID variant plus a trainable 300-d ID vector per item"},
                              "embeddings": {"text": str(text), "said": None if said is None else str(said)},
                              "recbole_max_epochs": {model: epoch_cap(args.recbole_max_epochs, model)
                                                     for model in args.recbole_models}}
    record["targets"] = {}
    table = [((f"NDCG@10 / Recall@10 {name} (mean of {s['seeds']}; epochs {s['epochs']}"
               f"{', CAPPED' if s['capped'] else ''})"), f"{s['ndcg10']:.4f} ± {s['ndcg10_std']:.4f} / {s['recall10']:.4f}")
             for name, s in summaries.items()]
    table.append(("NDCG@10 / Recall@10 popularity", f"{popularity['ndcg@10']:.4f} / {popularity['recall@10']:.4f}"))
    for embeddings in ("text", "text_id", "said", "said_id"):
        if f"ours_{embeddings}_sasrec" in ndcg10:
            gain = ndcg10[f"ours_{embeddings}_sasrec"] / ndcg10["ours_id_sasrec"] - 1
            record["targets"][f"{embeddings}_vs_id_ndcg10_gain"] = round(gain, 4)
            record["targets"][f"{embeddings}_beats_id_by_10pct"] = gain >= 0.10
            table.append((f"{embeddings} vs ID-only SASRec NDCG@10 gain (target >= 10%)", f"{gain:+.1%}"))
    for model in ("sasrec", "gru4rec"):
        if f"recbole_{model}" in summaries and f"ours_id_{model}" in summaries:
            record.update(time_ratio(model, ours[f"ours_id_{model}"], peers[f"recbole_{model}"]))
            ok = ndcg10[f"ours_id_{model}"] >= ndcg10[f"recbole_{model}"]
            capped = summaries[f"recbole_{model}"]["capped"]
            record["targets"][f"id_{model}_at_least_recbole"] = ok
            record["targets"][f"recbole_{model}_reference_capped"] = capped
            table += [(f"ID-only {model} >= RecBole {model} (NDCG@10)",
                       f"{ok}{' (RecBole capped: not converged)' if capped else ''}"),
                      (f"{model} train time ratio ours / RecBole", (f"{record[f'{model}_train_time_ratio_vs_recbole']:.3f}"
                       f" ({record[f'{model}_train_time_ratio_basis']})")),
                      (f"{model} s/epoch ours (whole run / epochs) / RecBole",
                       f"{record[f'{model}_s_per_epoch']['ours']} / {record[f'{model}_s_per_epoch']['recbole']}")]
    return record, table


def time_ratio(model: str, ours: list[dict[str, Any]], recbole: list[dict[str, Any]]) -> dict[str, Any]:
    """Ours / RecBole over whole runs; against a capped RecBole run it is labelled an upper bound."""
    ours_s = statistics.fmean(r["whole_run_s"] for r in ours)
    recbole_s = statistics.fmean(r["train_s"] for r in recbole)

    def side(name: str, runs: list[dict[str, Any]]) -> str:
        if all(r["stopped_early"] for r in runs):
            return f"{name} whole runs to early stopping ({[r['epochs'] for r in runs]} epochs)"
        return f"{name} runs CAPPED at {[r['epochs'] for r in runs]} epochs, not converged"

    basis = f"{side('our', ours)} / {side('RecBole', recbole)}; compare s_per_epoch when either side is capped"
    per_epoch = {"ours": round(statistics.fmean(r["whole_run_s"] / r["epochs"] for r in ours), 2),
                 "recbole": round(statistics.fmean(r["train_s"] / r["epochs"] for r in recbole), 2)}
    return {f"{model}_train_time_ratio_vs_recbole": round(ours_s / recbole_s, 4),
            f"{model}_train_time_ratio_basis": basis, f"{model}_s_per_epoch": per_epoch,
            f"{model}_epoch_time_ratio_vs_recbole": round(per_epoch["ours"] / per_epoch["recbole"], 4)}

if __name__ == "__main__":
    main()
