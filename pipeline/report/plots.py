"""The report's figures, drawn with matplotlib (Agg: no display) and returned as base64 PNG for inline <img> tags.

Every figure is sized to be read at laptop width (about 900 px wide), labels its axes with their units and
uses the Okabe-Ito palette, which stays distinguishable under the common colour-vision deficiencies.
"""

from __future__ import annotations

import base64
import functools
import io
import itertools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

from pipeline.report.facts import OTHER, Curve, EmbeddingMap, Spread

# Okabe & Ito (2008), "Color Universal Design": black last, as it reads as "no category".
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
MODEL, BASELINE, GREY = OKABE_ITO[0], OKABE_ITO[1], "#BBBBBB"
WIDE, DPI = (9.0, 3.4), 100
STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.spines.top": False, "axes.spines.right": False,
         "axes.grid": True, "grid.alpha": 0.3, "axes.prop_cycle": matplotlib.cycler(color=OKABE_ITO)}

F = TypeVar("F", bound=Callable[..., str])


def styled(draw: F) -> F:
    """Draw under the report's style without changing matplotlib's global settings for the caller."""
    @functools.wraps(draw)
    def wrapper(*args: Any, **kwargs: Any) -> str:
        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def figure(figsize: tuple[float, float]) -> Figure:
    """A Figure without pyplot: no backend or global figure list, so nothing to close and no display needed."""
    return Figure(figsize=figsize)


def to_png(fig: Figure) -> str:
    """The figure as base64 PNG."""
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=DPI)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@styled
def dataset_distributions(history_lengths: np.ndarray, item_counts: np.ndarray) -> str:
    """Interactions per user (histogram) and per item by popularity rank (log-log: the long tail is a line)."""
    fig = figure(WIDE)
    left, right = fig.subplots(1, 2)
    low, top = (int(history_lengths.min()), int(history_lengths.max())) if len(history_lengths) else (1, 1)
    bins = np.unique(np.geomspace(low, top + 1, 40).astype(int)) if top > 60 else np.arange(low, top + 2)
    left.hist(history_lengths, bins=bins, color=MODEL)
    if top > 60:  # long-tailed: log-spaced bins on a log axis, ticks as plain numbers (20, 50, 100, ...)
        left.set_xscale("log")
        left.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        left.xaxis.set_major_formatter(ScalarFormatter())
        left.xaxis.set_minor_formatter(NullFormatter())
    left.set(title="History length", xlabel="interactions per user (count)",
             ylabel="users (count per bin)" if top > 60 else "users (count)")
    right.loglog(np.arange(1, len(item_counts) + 1), item_counts, color=MODEL, lw=2)
    right.set(title="Item popularity", xlabel="item rank by interactions (1 = most popular)",
              ylabel="interactions per item (count)")
    return to_png(fig)


def running_mean(values: Sequence[float], window: int) -> np.ndarray:
    """Mean of each value and the `window - 1` before it (fewer at the start)."""
    sums = np.cumsum(np.r_[0.0, np.asarray(values, float)])
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


@styled
def alignment_curve(history: list[dict[str, Any]], title: str) -> str:
    """Stage one's loss per optimizer step (raw and a running mean), epochs marked; its learning rate beside."""
    steps = [h["step"] for h in history]
    fig = figure(WIDE)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
    window = max(1, len(history) // 25)
    for n, name in enumerate(k for k in ("loss", "contrastive", "mlm") if k in history[0]):
        values = [h[name] for h in history]
        left.plot(steps, values, color=OKABE_ITO[n], alpha=0.25, lw=1, label=f"{name} per step" if window > 1 else None)
        left.plot(steps, running_mean(values, window), color=OKABE_ITO[n], lw=2,
                  label=f"{name} (mean of {window} steps)" if window > 1 else name)
    boundaries = [h["step"] for a, h in itertools.pairwise(history) if h.get("epoch") != a.get("epoch")]
    for n, boundary in enumerate(boundaries):
        left.axvline(boundary - 0.5, color=GREY, ls="--", lw=1, label="a new epoch starts" if n == 0 else None)
    left.set(title=title, xlabel="optimizer step", ylabel="loss (nats per token)")
    left.legend(loc="upper right", fontsize=9)
    right.plot(steps, [h["lr"] for h in history], color=OKABE_ITO[2], lw=2)
    right.set(title="Learning rate", xlabel="optimizer step", ylabel="learning rate")
    right.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    return to_png(fig)


@styled
def prefix_evidence(losses: dict[str, Any]) -> str:
    """The frozen LM's text loss behind the item's own prefix, no prefix and another item's: lower = better read."""
    names = {"learned_prefix": "own learned prefix", "no_prefix": "no prefix", "other_item_prefix": "another item's prefix"}
    values = [losses[key]["loss"] for key in names]
    fig = figure((9.0, 2.2))
    ax = fig.subplots()
    bars = ax.barh(list(names.values()), values, color=[MODEL, GREY, BASELINE])
    ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], padding=3)
    ax.invert_yaxis()
    ax.set(title=f"Text loss of {losses.get('items', '?')} items under each prefix",
           xlabel="mean loss per text token (nats; lower = the LM reads the text better)")
    ax.set_xlim(0, max(values) * 1.15)
    return to_png(fig)


@styled
def embedding_map(mapped: EmbeddingMap) -> str:
    """The PCA map, one colour (and marker after the eighth) per attribute value, the rest in grey beneath."""
    fig = figure((9.0, 5.6))
    ax = fig.subplots()
    labels = np.asarray(mapped.labels)
    size = 14 if len(labels) < 3000 else 5
    for n, value in enumerate(mapped.legend):
        where = labels == value
        if value == OTHER:
            ax.scatter(*mapped.coords[where].T, s=size, color=GREY, label=f"{OTHER} ({where.sum()})", zorder=1)
        else:
            ax.scatter(*mapped.coords[where].T, s=size * 1.4, color=OKABE_ITO[n % 8], marker="os^"[n // 8 % 3],
                       label=f"{value} ({where.sum()})", zorder=2, alpha=0.85, linewidths=0)
    first, second = mapped.explained
    ax.set(title=f"Item embeddings, first two principal components ({len(labels):,} items)",
           xlabel=f"PC 1 ({first:.1%} of variance)", ylabel=f"PC 2 ({second:.1%} of variance)")
    if mapped.attribute:
        ax.legend(title=f"{mapped.attribute} (first value)", loc="center left", bbox_to_anchor=(1.01, 0.5),
                  fontsize=9, markerscale=1.5, frameon=False)
    return to_png(fig)


@styled
def downstream_curve(curve: Curve, title: str) -> str:
    """Training loss and the validation score per epoch; the epoch whose weights were kept is marked."""
    fig = figure(WIDE)
    left, right = fig.subplots(1, 2)
    trained = [(e, v) for e, v in zip(curve.epochs, curve.loss) if v is not None]
    if trained:
        left.plot(*zip(*trained), color=MODEL, lw=2, marker="o", ms=3)
    left.set(title=f"{title}: training loss", xlabel="epoch", ylabel="loss (nats per target)")
    right.plot(curve.epochs, curve.valid, color=OKABE_ITO[2], lw=2, marker="o", ms=3)
    right.set(title=f"{title}: {curve.valid_name}", xlabel="epoch", ylabel=curve.valid_name)
    if curve.chosen is not None:
        chosen = curve.epochs[curve.chosen]
        for ax in (left, right):
            ax.axvline(chosen, color=BASELINE, ls="--", lw=1.5, label=f"chosen epoch {chosen}")
        right.plot([chosen], [curve.valid[curve.chosen]], marker="*", ms=14, color=BASELINE, zorder=3)
        right.legend(loc="lower right", fontsize=9)
    return to_png(fig)


@styled
def metric_bars(names: list[str], model: dict[str, float], popularity: dict[str, float], label: str) -> str:
    """Test metrics of the model beside the popularity baseline, values written on the bars."""
    fig = figure(WIDE)
    ax = fig.subplots()
    x, width = np.arange(len(names)), 0.38
    for offset, values, name, colour in ((-width / 2, model, label, MODEL), (width / 2, popularity, "popularity", BASELINE)):
        bars = ax.bar(x + offset, [values[n] for n in names], width, label=name, color=colour)
        ax.bar_label(bars, labels=[f"{values[n]:.3f}" for n in names], fontsize=8, padding=2)
    ax.set_xticks(x, [pretty(n) for n in names])
    ax.set(title="Test metrics (every item ranked)", ylabel="score (0 to 1; higher is better)")
    ax.legend(loc="upper left", fontsize=9)
    return to_png(fig)


def variant_colours(labels: list[str]) -> dict[str, str]:
    """One colour per variant, in order of first appearance; popularity keeps the baseline's orange."""
    variants = [label for label in dict.fromkeys(labels) if not label.startswith("popularity")]
    palette = [OKABE_ITO[i] for i in (0, 2, 3, 4, 5, 7)]
    return {**{label: palette[i % len(palette)] for i, label in enumerate(variants)},
            **{label: BASELINE for label in labels if label.startswith("popularity")}}


@styled
def comparison_bars(per_metric: dict[str, list[Spread]]) -> str:
    """One panel per metric: the mean over seeds as a bar, one standard deviation as the error bar, each seed a dot."""
    names = list(per_metric)
    fig = figure((9.0, 3.8))
    axes = fig.subplots(1, len(names), squeeze=False)
    for ax, name in zip(axes[0], names):
        spreads = per_metric[name]
        colours = variant_colours([s.label for s in spreads])
        x = np.arange(len(spreads))
        ax.bar(x, [s.mean for s in spreads], yerr=[s.std for s in spreads], capsize=4, alpha=0.85,
               color=[colours[s.label] for s in spreads])
        for i, spread in enumerate(spreads):
            ax.scatter(np.full(len(spread.values), i), spread.values, s=12, color="black", zorder=3)
        ax.set_xticks(x, [f"{s.label}\n(n={len(s.values)})" for s in spreads], rotation=30, ha="right", fontsize=8)
        ax.set(title=f"test {pretty(name)}", ylabel="score (higher is better)")
    return to_png(fig)


@styled
def comparison_curves(curves: list[tuple[str, str, Curve]]) -> str:
    """Every run's validation score per epoch on one axis: colour = variant (as in the bars), line style = seed,
    its kept epoch starred."""
    fig = figure(WIDE)
    ax = fig.subplots()
    colours = variant_colours([variant for variant, _, _ in curves])
    seen: dict[str, int] = {}
    for variant, seed, curve in curves:
        style = ["-", "--", ":", "-."][seen.get(variant, 0) % 4]
        seen[variant] = seen.get(variant, 0) + 1
        ax.plot(curve.epochs, curve.valid, color=colours[variant], ls=style, lw=1.8, label=f"{variant} · seed {seed}")
        if curve.chosen is not None:
            ax.plot([curve.epochs[curve.chosen]], [curve.valid[curve.chosen]], marker="*", ms=11, color=colours[variant])
    name = curves[0][2].valid_name
    ax.set(title=f"{name} per epoch (star: the kept epoch)", xlabel="epoch", ylabel=name)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return to_png(fig)


def pretty(metric: str) -> str:
    """recall@10 -> Recall@10, ndcg@10 -> NDCG@10, mrr -> MRR."""
    name, _, k = metric.partition("@")
    name = {"recall": "Recall", "ndcg": "NDCG", "mrr": "MRR"}.get(name, name)
    return f"{name}@{k}" if k else name
