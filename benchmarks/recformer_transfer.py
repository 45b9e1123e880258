"""Recformer across domains: pretrain on Office, then zero-shot and fine-tuned on UniSRec's Scientific.

Everything goes through the real CLI in a workspace of its own:

1. `prepare` Office (LC-Rec, Amazon 2014) and Scientific (UniSRec, Amazon 2018, its own split);
2. `align` on Office with `align.method=recformer` (MLM + item-item contrastive pretraining);
3. `align` on Scientific with that encoder and no training (`recformer.pretrain.epochs=0`): every
   Scientific item embedded from its text alone;
4. `train-downstream` on Scientific, kind `recformer`, with both fine-tuning stages at 0 epochs: the
   zero-shot evaluation (full ranking, the standard protocol, popularity beside it);
5. with `--finetune-seeds N`: the same with the two fine-tuning stages, once per seed (a killed run resumes
   from its checkpoints when the command is run again; its `seconds` then count the last invocation only).

`--encoder` skips step 2 and uses an encoder pretrained before, e.g. the one a fine-tuning run was resumed
with after a new release changed the pretraining run's id; `--reuse-runs` reports fine-tuning runs already
published in the workspace with the same settings (compared resolved, whatever release made them);
`--kept-from` does the same in other workspaces too: seeds fine-tuned in parallel (`--first-seed 43` in a
second workspace, the same `--encoder`) are collected into one result.

Both catalogs are read through their rendered `text` attribute (Office's "title ... brand ...", Scientific's
"title. categories. brand."), so the encoder sees the same key in both domains. ID-only SASRec on the same
split comes from `benchmarks/results/downstream_vs_recbole.json` (mean of its seeds), which this does not rerun.

    python -m benchmarks.recformer_transfer --pretrain-steps 150 --finetune-seeds 0
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks import _args, _cli, _kept, _results
from pipeline.contracts.downstream import CONFIG_FILE, read_metrics
from stages.downstream import train

OFFICE = "configs/amazon2014-office-lcrec.yaml"
SCIENTIFIC = "configs/amazon2018-scientific-unisrec.yaml"
SCIENTIFIC_NAME = "amazon2018-scientific-unisrec"
FIRST_SEED = 42

# One text attribute in both domains; sequences sized for a 2-core CPU (about the 4 most recent items of
# 32 tokens each); mean pooling, as all-MiniLM-L6-v2 was trained to be read.
RECFORMER = ["recformer.attributes=[text]", "recformer.max_attribute_tokens=32", "recformer.max_items=10",
             "recformer.max_tokens=128", "recformer.pooling=mean"]
# Fine-tuning as Recformer's code trains: one target drawn per user each epoch (8,442 examples, not all 34,101
# train targets); an epoch with its validation is 15-40 min on one core here (`benchmarks/notes/recformer_recipes.md`).
# One stage-1 epoch: with three, valid NDCG@10 stood at 0.0520 / 0.0512 / 0.0524 while stage 2 still rose at its
# cap of two. Stage 2's valid NDCG@10 moves by up to 0.006 between epochs while it climbs: with patience 2, two of
# three seeds stopped two epochs after their peak (valid 0.0609, 0.0607), so patience 4. The cap stays 8: the
# third seed peaked at its seventh epoch (0.0644), and 16 would make a seed about 6 h with bf16 matmuls.
FINETUNE = ["recformer.finetune.examples=one_per_user", "recformer.finetune.epochs=1",
            "recformer.finetune.frozen_items_epochs=8", "recformer.finetune.patience=4"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def made_now(run_dir: Path, started: float) -> bool:
    """Whether this invocation built the run (a reused run's wall time measures only the up-to-date check)."""
    return (run_dir / "manifest.json").stat().st_mtime >= started


def test_ndcg(run_dir: Path) -> tuple[float, float, dict[str, Any]]:
    """The model's and popularity's test NDCG@10 of a downstream run, and its full metrics."""
    metrics = read_metrics(run_dir)
    return metrics["model"]["test"]["ndcg@10"], metrics["popularity"]["test"]["ndcg@10"], metrics


def kept_finetuning(workspaces: list[Path], overrides: list[str]) -> Path | None:
    """A fine-tuning run already published in one of the workspaces with the settings `overrides` resolve to, by
    the current code, whatever workspace holds it (one fine-tuning run takes hours here)."""
    manifests = (m for w in workspaces for m in sorted((w / "downstream" / SCIENTIFIC_NAME).glob("*/manifest.json")))
    for manifest in manifests:
        run = manifest.parent
        recformer, downstream = _kept.recorded(run, "recformer.json"), _kept.recorded(run, CONFIG_FILE)
        if _kept.recorded(run, manifest.name).get("zero_shot", True) or recformer is None or downstream is None:
            continue
        if not _kept.made_by(run, train.code("recformer")):
            continue
        if (_kept.section_agrees(recformer, SCIENTIFIC, "recformer", overrides)
                and _kept.section_agrees(downstream, SCIENTIFIC, "downstream", overrides)):
            return run
    return None


def id_sasrec_reference() -> dict[str, Any] | None:
    """ID-only SASRec on the same split, from the stage-two benchmark's results (None if not measured yet)."""
    path = _results.results_dir() / "downstream_vs_recbole.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    summary = record["summary"]["ours_id_sasrec"]
    return {"ndcg10": summary["ndcg10"], "seeds": summary["seeds"], "source": f"{path.name} ({record['date']})"}


@_args.reports_errors
def main() -> None:
    parser = _args.parser(__doc__)
    parser.add_argument("--workspace", type=Path, default=_cli.ROOT / "artifacts" / "bench-recformer")
    parser.add_argument("--pretrain-steps", type=int, default=150, help="optimizer steps of Office pretraining")
    parser.add_argument("--pretrain-lr", type=float, default=1e-4)
    parser.add_argument("--finetune-seeds", type=int, default=0, help="fine-tuned runs on Scientific (0 = none)")
    parser.add_argument("--start-from", type=_args.existing_dir,
                        help="the encoder Office pretraining starts from (default: recformer.model, all-MiniLM-L6-v2)")
    parser.add_argument("--encoder", type=_args.existing_dir, default=None,
                        help="an Office-pretrained encoder folder to use instead of pretraining (e.g. the one a "
                        "fine-tuning run resumed from after a release changed the pretraining run's id)")
    parser.add_argument("--reuse-runs", action="store_true",
                        help="report fine-tuning runs already published in the workspace with the same settings "
                        "instead of training them again (--kept-from does so in its workspaces too, as in the "
                        "stage-two benchmark)")
    _kept.add_parallel_options(parser, FIRST_SEED)
    parser.add_argument("--mixed-precision", default="bf16", choices=["no", "bf16"],
                        help="autocast for pretraining and fine-tuning (bf16 uses the CPU's bf16 matmuls where it "
                        "has them; the stages run in float32 where it has none)")
    _args.add_overrides(parser)
    args = parser.parse_args()
    extra = args.overrides
    workspace = args.workspace.resolve()
    started = time.time()

    log("prepare Office and Scientific")
    _cli.pipeline(OFFICE, workspace, "prepare", *extra)
    _cli.pipeline(SCIENTIFIC, workspace, "prepare", *extra)
    if args.encoder:
        encoder = args.encoder.resolve()
        office, pretrain_s = encoder.parent, 0.0
        log(f"Office pretraining reused from {office}")
    else:
        log(f"pretrain on Office, {args.pretrain_steps} steps")
        office, pretrain_s = _cli.pipeline(
            OFFICE, workspace, "align", "align.method=recformer", *RECFORMER,
            f"recformer.pretrain.max_steps={args.pretrain_steps}", f"recformer.pretrain.lr={args.pretrain_lr}",
            f"align.mixed_precision={args.mixed_precision}", "align.evidence.attribute=brand",
            "align.evidence.separator=null", *([f"recformer.model={args.start_from}"] if args.start_from else []), *extra)
        encoder = office / "encoder"
        log(f"Office pretrained and exported in {pretrain_s:.0f} s")
    log("embed Scientific with the Office encoder")
    scientific, _ = _cli.pipeline(SCIENTIFIC, workspace, "align", "align.method=recformer", *RECFORMER,
                                  f"recformer.model={encoder}", "recformer.pretrain.epochs=0",
                                  "align.evidence.attribute=null", *extra)
    log("zero-shot evaluation on Scientific")
    zero_shot_run, zero_shot_s = _cli.pipeline(
        SCIENTIFIC, workspace, "train-downstream", *RECFORMER, "downstream.model.kind=recformer",
        f"recformer.model={encoder}", "recformer.finetune.epochs=0", "recformer.finetune.frozen_items_epochs=0",
        *extra)
    zero_shot, popularity, _ = test_ndcg(zero_shot_run)
    log(f"zero-shot test NDCG@10 {zero_shot:.4f} (popularity {popularity:.4f}) in {zero_shot_s:.0f} s")

    finetuned = []
    kept_in = [workspace, *(w.resolve() for w in args.kept_from)]
    for seed in range(args.first_seed, args.first_seed + args.finetune_seeds):
        overrides = [*RECFORMER, "downstream.model.kind=recformer", f"recformer.model={encoder}", *FINETUNE,
                     f"recformer.finetune.mixed_precision={args.mixed_precision}", f"recformer.finetune.seed={seed}",
                     *extra]
        run_dir, seconds = kept_finetuning(kept_in, overrides) if args.reuse_runs or args.kept_from else None, None
        if run_dir is None:
            log(f"fine-tune on Scientific, seed {seed}")
            run_dir, seconds = _cli.pipeline(SCIENTIFIC, workspace, "train-downstream", *overrides)
        else:
            log(f"fine-tuned seed {seed} kept from an earlier invocation: {run_dir}")
        ndcg, _, metrics = test_ndcg(run_dir)
        finetuned.append({"seed": seed, "ndcg10": ndcg, "run": str(run_dir), "best_epoch": metrics["best_epoch"],
                          "seconds": round(seconds, 1) if seconds and made_now(run_dir, started) else "kept run"})
        log(f"fine-tuned test NDCG@10 {ndcg:.4f}")

    office_manifest = json.loads((office / "manifest.json").read_text())
    reference = id_sasrec_reference()
    record = {
        "zero_shot_ndcg10": zero_shot, "popularity_ndcg10": popularity,
        "finetuned_ndcg10": statistics.fmean(r["ndcg10"] for r in finetuned) if finetuned else None,
        "id_sasrec_ndcg10": reference and reference["ndcg10"], "seeds": len(finetuned),
        "zero_shot_beats_popularity": zero_shot > popularity,
        "finetuned_beats_id_sasrec": (statistics.fmean(r["ndcg10"] for r in finetuned) > reference["ndcg10"])
        if finetuned and reference else None,
        "finetuned_runs": finetuned, "id_sasrec_reference": reference,
        "pretraining": {"dataset": "amazon2014-office-lcrec",
                        "seconds": round(pretrain_s, 1) if made_now(office, started) else "reused run",
                        "learning_rate": None if args.encoder else args.pretrain_lr,
                        "mixed_precision": office_manifest["mixed_precision"],
                        **office_manifest.get("training", {}), "evidence": office_manifest.get("evidence")},
        "recformer_settings": RECFORMER, "finetune_settings": FINETUNE, "runs": {"office": str(office), "scientific_embeddings": str(scientific),
                                                  "zero_shot": str(zero_shot_run)},
        "zero_shot_eval_s": round(zero_shot_s, 1) if made_now(zero_shot_run, started) else "reused run",
    }
    table = [("zero-shot test NDCG@10 (Office-pretrained, no Scientific training)", f"{zero_shot:.4f}"),
             ("popularity test NDCG@10", f"{popularity:.4f}"),
             ("fine-tuned test NDCG@10", "not run" if not finetuned else
              f"{record['finetuned_ndcg10']:.4f} (mean of {len(finetuned)} seeds)"),
             ("ID-only SASRec test NDCG@10", "not measured" if not reference else
              f"{reference['ndcg10']:.4f} (mean of {reference['seeds']} seeds, {reference['source']})"),
             ("pretraining", f"{record['pretraining']['steps']} steps on Office" + (f" in {pretrain_s:.0f} s" if made_now(
                 office, started) else " (run reused; its time is in the first invocation's results)"))]
    _results.write("recformer_transfer", record, table)


if __name__ == "__main__":
    main()
