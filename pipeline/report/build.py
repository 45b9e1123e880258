"""Assemble the report: read the runs, compute the facts, draw, and write one HTML file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import PipelineConfig
from pipeline.errors import BadInput
from pipeline.report import facts, page, plots
from pipeline.report.runs import Run, Trained, read_trained
from pipeline.run_ids import fingerprint
from pipeline.store import write_text_atomic

PCA_NOTE = ("The map is a PCA of the L2-normalised vectors (what the FAISS index and cosine search compare): "
            "linear and deterministic, so distances along each axis are real distances in the embedding space, "
            "unlike t-SNE or UMAP, whose cluster sizes and gaps carry no meaning.")


def output_path(config: PipelineConfig, runs: list[Trained]) -> Path:
    """`report.dir` (default `<workspace.root>/reports/<data.name>`) / `<run id>.html` or `compare-<hash>.html`."""
    folder = Path(config.report.dir) if config.report.dir else Path(config.workspace.root) / "reports" / config.data.name
    if len(runs) == 1:
        return folder / f"{runs[0].downstream.run_id}.html"
    return folder / f"compare-{fingerprint(sorted(r.downstream.run_id for r in runs))}.html"


def write_report(config: PipelineConfig, run_dirs: list[Path], out: Path | None = None) -> Path:
    """Write the report of one downstream run (with its dataset and embeddings runs) or a comparison of several.

    Raises:
        BadInput: no runs, a run is not a downstream run, or one of its inputs is gone.
    """
    if not run_dirs:
        raise BadInput("report: name at least one downstream run (latest, a run id or a folder)")
    runs = [read_trained(folder) for folder in dict.fromkeys(p.resolve() for p in run_dirs)]
    html = single(config, runs[0]) if len(runs) == 1 else comparison(runs)
    path = out or output_path(config, runs)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, html)
    return path


def single(config: PipelineConfig, trained: Trained) -> str:
    """Dataset, stage one (when the run used embeddings), stage two, then the runs and their configs."""
    dataset = facts.dataset_facts(trained.dataset)
    sections = [runs_section([trained]), dataset_section(trained.dataset, dataset)]
    if trained.embeddings is not None:
        sections.append(alignment_section(config, trained, dataset))
    sections += [downstream_section(trained), config_section([trained])]
    name = trained.dataset.manifest.get("name") or trained.dataset.run_dir.parent.name
    return page.document(f"{name}: {trained.label}", subtitle(), sections)


def comparison(runs: list[Trained]) -> str:
    """Bars with the spread across seeds, every run's validation curve, the dataset when all runs share one."""
    names = facts.metric_names(runs[0].metrics)
    per_metric = {name: facts.spreads(runs, name) for name in names}
    rows = [[page.esc(s.label), str(len(s.values)),
             *(f"{per_metric[n][i].mean:.4f} ± {per_metric[n][i].std:.4f}" for n in names)]
            for i, s in enumerate(per_metric[names[0]])]
    labels = facts.variant_labels(runs)
    curves = [(labels[r.variant], str(r.downstream.manifest.get("seed")), facts.training_curve(r)) for r in runs]
    compared = page.section(
        "Test metrics across runs",
        page.paragraph("Runs that differ only in downstream.train.seed form one variant: its bar is the mean over "
                       "seeds, the error bar one standard deviation, each dot one seed."),
        page.image(plots.comparison_bars({n: per_metric[n] for n in names[:2] + names[-1:]}), "test metrics per variant"),
        page.table(["variant", "seeds", *map(plots.pretty, names)], rows, numeric=set(range(1, len(names) + 2))),
        page.image(plots.comparison_curves([c for c in curves if c[2].epochs]), "validation score per epoch"),
        anchor="comparison")
    sections = [runs_section(runs), compared]
    if len({r.dataset.run_id for r in runs}) == 1:
        sections.append(dataset_section(runs[0].dataset, facts.dataset_facts(runs[0].dataset)))
    sections.append(config_section(runs))
    return page.document(f"Comparison of {len(runs)} downstream runs", subtitle(), sections)


def subtitle() -> str:
    return f"seqrec-pipeline report, written {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"


def runs_section(runs: list[Trained]) -> str:
    """Every run the page draws on, linked to its folder."""
    seen: dict[str, tuple[str, Run]] = {}
    for trained in runs:
        for kind, run in (("dataset", trained.dataset), ("embeddings", trained.embeddings),
                          ("downstream", trained.downstream)):
            if run is not None:
                seen.setdefault(run.run_id, (kind, run))
    rows = [[kind, page.link(run.run_dir, run.run_id), page.esc(str(run.manifest.get("created", ""))[:16].replace("T", " ")),
             page.esc(describe(kind, run))] for kind, run in seen.values()]
    return page.section("Runs", page.table(["stage", "run id (folder)", "created (UTC)", "what"], rows), anchor="runs")


def describe(kind: str, run: Run) -> str:
    m = run.manifest

    def count(value: object) -> str:
        return f"{value:,}" if isinstance(value, int) else "?"

    if kind == "dataset":
        return f"{m.get('name', run.run_dir.parent.name)}: {count(m.get('counts', {}).get('interactions'))} interactions"
    if kind == "embeddings":
        return f"{m.get('method')} with {m.get('model')}, {count(m.get('rows'))} items x {m.get('dim')}"
    return (f"{run.model} on {run.item_side}, seed {m.get('seed')}, "
            f"{m.get('epochs')} epochs (best {m.get('best_epoch')})")


def dataset_section(run: Run, found: facts.DatasetFacts) -> str:
    splits = sorted(found.split_rows.items(), key=lambda kv: ("train", "valid", "test").index(kv[0])
                    if kv[0] in ("train", "valid", "test") else 3)
    counts = {**found.counts, **{f"{split} rows": n for split, n in splits}}
    rows = [[page.esc(name), f"{value:,}"] for name, value in counts.items()]
    lengths = found.history_lengths
    note = (f"Interactions per user: median {int(sorted(lengths)[len(lengths) // 2])}, max {int(lengths.max())}. "
            f"The 10% most popular items hold {found.item_counts[:max(1, len(found.item_counts) // 10)].sum() / max(found.item_counts.sum(), 1):.0%}"
            " of interactions.") if len(lengths) else ""
    return page.section("Dataset", page.table(["count", "value"], rows, numeric={1}), page.paragraph(note),
                        page.image(plots.dataset_distributions(lengths, found.item_counts),
                                   "history length and item popularity distributions"), anchor="dataset")


def alignment_section(config: PipelineConfig, trained: Trained, dataset: facts.DatasetFacts) -> str:
    """Stage one: its loss curve, the prefix-loss evidence, the map and nearest-neighbour examples."""
    run = trained.embeddings
    assert run is not None
    parts = [page.paragraph(f"{run.manifest.get('method')} embeddings from {run.manifest.get('model')}: "
                            f"{run.manifest.get('rows', 0):,} items, dimension {run.manifest.get('dim')}.")]
    if run.history:
        title = "SAID alignment loss" if "tokens_per_s" in run.history[0] else "Recformer pretraining loss"
        parts.append(page.image(plots.alignment_curve(run.history, title), title))
        parts.append(page.paragraph(throughput(run.history), "note"))
    evidence = run.manifest.get("evidence") or {}
    losses = evidence.get("prefix_loss") or {}
    if "learned_prefix" in losses:
        own, none, other = (losses[k]["loss"] for k in ("learned_prefix", "no_prefix", "other_item_prefix"))
        parts += [page.image(plots.prefix_evidence(losses), "text loss under each prefix"), page.paragraph(
            f"Behind its own learned prefix the frozen LM reads an item's text {none - own:.3f} nats per token better "
            f"than behind no prefix and {other - own:.3f} better than behind another item's: the gap to another "
            "item's prefix is what the vectors know about their own item.")]
    neighbours = evidence.get("neighbours") or {}
    if "nearest_neighbour_share_rate" in neighbours:
        parts.append(page.paragraph(
            f"An item's nearest neighbour shares a {neighbours['attribute']} value with it "
            f"{neighbours['nearest_neighbour_share_rate']:.1%} of the time, random pairs "
            f"{neighbours['random_pair_share_rate']:.1%} ({neighbours['queries']} items asked)."))
    evidence_settings = run.config.get("align", {}).get("evidence", {})
    attribute = evidence_settings.get("attribute", config.align.evidence.attribute)
    separator = evidence_settings.get("separator", config.align.evidence.separator)
    report = config.report
    found = facts.embedding_facts(run, dataset, facts.item_attribute(trained.dataset, attribute), separator, attribute,
                                  report.examples, report.map_values, report.map_items, report.seed)
    parts += [page.image(plots.embedding_map(found.map), "PCA map of the item embeddings"),
              page.paragraph(PCA_NOTE, "note")]
    if found.neighbours:
        parts.append(neighbour_examples(found.neighbours))
    return page.section("Stage one: item embeddings", *parts, anchor="stage-one")


def throughput(history: list[dict[str, Any]]) -> str:
    """The median speed over the run's steps (the median ignores the slow first step and checkpoint saves)."""
    def median(key: str) -> float:
        values = sorted(h[key] for h in history if key in h)
        return values[len(values) // 2] if values else 0.0
    speed = ", ".join(f"{median(key):,.1f} {unit}/s" for key, unit in
                      (("items_per_s", "items"), ("tokens_per_s", "text tokens"), ("examples_per_s", "examples"))
                      if any(key in h for h in history))
    return f"{len(history):,} optimizer steps; median throughput {speed}."


def neighbour_examples(found: list[facts.Neighbours]) -> str:
    blocks = ["<h3>Nearest neighbours</h3>", page.paragraph(
        "Each item's five nearest items by cosine similarity of the embeddings (the item itself left out); "
        "a few items drawn at random, then the most popular ones. Cosines are of the vectors as stored: where they "
        "share one large component (SAID's soft-token means do) every cosine is close to 1 and only the order "
        "tells neighbours apart.", "note")]
    for example in found:
        items = "".join(f"<li>{page.esc(short(text))} <span class=\"muted\">(cos {cosine:.3f})</span></li>"
                        for _, text, cosine in example.nearest)
        blocks.append(f"<p><b>{page.esc(example.group)}:</b> {page.esc(short(example.text))}</p><ol class=\"nn\">{items}</ol>")
    return "".join(blocks)


def short(text: str, limit: int = 160) -> str:
    """Item text on one line (the rendered text has one attribute per line), cut at `limit` characters."""
    flat = " · ".join(part.strip() for part in text.splitlines() if part.strip())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def downstream_section(trained: Trained) -> str:
    curve = facts.training_curve(trained)
    names = facts.metric_names(trained.metrics)
    parts = []
    if curve.epochs:
        parts.append(page.image(plots.downstream_curve(curve, str(trained.downstream.manifest.get("model"))),
                                "training loss and validation score per epoch"))
    model, popularity = trained.metrics["model"]["test"], trained.metrics["popularity"]["test"]
    parts.append(page.image(plots.metric_bars(names, model, popularity, trained.label), "test metrics"))
    rows = [[plots.pretty(n), f"{model[n]:.4f}", f"{popularity[n]:.4f}"] for n in names]
    parts.append(page.table(["test metric", trained.label, "popularity"], rows, numeric={1, 2}))
    parts.append(page.paragraph(trained.metrics.get("protocol", {}).get("description", ""), "note"))
    return page.section("Stage two: the recommender", *parts, anchor="stage-two")


def config_section(runs: list[Trained]) -> str:
    """Each run's saved config, folded: the resolved settings that made it."""
    blocks = []
    seen = set()
    for trained in runs:
        for run in (trained.dataset, trained.embeddings, trained.downstream):
            if run is not None and run.run_id not in seen and run.config:
                seen.add(run.run_id)
                blocks.append(page.details(f"{run.kind} run {run.run_id}",
                                           yaml.safe_dump(run.config, sort_keys=False, allow_unicode=True)))
    return page.section("Configuration", *blocks, anchor="config")
