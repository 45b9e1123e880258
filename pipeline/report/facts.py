"""What the report shows, computed from the runs: no plotting and no HTML here."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.contracts.dataset import items_path, read_interactions, read_items
from pipeline.contracts.embeddings import read_embeddings
from pipeline.report.runs import Run, Trained

OTHER = "other"


@dataclass(frozen=True)
class DatasetFacts:
    counts: dict[str, int]
    split_rows: dict[str, int]
    history_lengths: np.ndarray  # interactions per user
    item_counts: np.ndarray  # interactions per item, most popular first
    texts: dict[str, str]  # item id -> rendered text
    popular: list[str]  # item ids, most interacted first


def dataset_facts(run: Run) -> DatasetFacts:
    """Counts from the manifest; the two distributions and the item texts from the dataset's Parquet files."""
    interactions = read_interactions(run.run_dir, ["user_id", "item_id"])
    users = pc.value_counts(interactions.column("user_id").combine_chunks()).field("counts").to_numpy()
    items = pc.value_counts(interactions.column("item_id").combine_chunks())
    order = np.argsort(-items.field("counts").to_numpy(), kind="stable")
    catalog = read_items(run.run_dir, ["item_id", "text"]).to_pydict()
    return DatasetFacts(counts=run.manifest.get("counts", {}), split_rows=run.manifest.get("split_rows", {}),
                        history_lengths=users, item_counts=items.field("counts").to_numpy()[order],
                        texts=dict(zip(catalog["item_id"], catalog["text"])),
                        popular=[str(items.field("values")[int(i)]) for i in order])


@dataclass(frozen=True)
class EmbeddingMap:
    """Items projected on the first two principal components of their L2-normalised vectors."""

    coords: np.ndarray  # (n, 2)
    labels: list[str]  # each item's attribute value shown (one of `legend`)
    legend: list[str]  # the most frequent values, most frequent first, then OTHER when some items fall outside
    explained: tuple[float, float]  # share of variance along each axis
    attribute: str | None


def first_value(raw: str | None, separator: str | None) -> str | None:
    """The first of an attribute's values ("Action Comedy" -> "Action" with separator " ")."""
    if not raw or not raw.strip():
        return None
    return (raw.split(separator) if separator else [raw])[0].strip() or None


def embedding_map(vectors: np.ndarray, values: list[str | None], attribute: str | None, top: int,
                  max_items: int, seed: int) -> EmbeddingMap:
    """PCA (via SVD of the centred, L2-normalised vectors: what cosine search sees) of at most `max_items` items.

    Items without a value are labelled OTHER with those outside the `top` most frequent values.
    """
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(vectors), size=min(max_items, len(vectors)), replace=False))
    unit = vectors[rows] / np.maximum(np.linalg.norm(vectors[rows], axis=1, keepdims=True), 1e-12)
    centred = unit - unit.mean(axis=0)
    _, singular, basis = np.linalg.svd(centred, full_matrices=False)
    variance = singular ** 2 / max(float((singular ** 2).sum()), 1e-12)
    coords = centred @ basis[:2].T if len(singular) >= 2 else np.c_[centred @ basis[:1].T, np.zeros(len(rows))]
    shown = [values[i] for i in rows]
    kept = [value for value, _ in Counter(v for v in shown if v is not None).most_common(top)]
    labels = [v if v in kept else OTHER for v in shown]
    legend = kept + ([OTHER] if OTHER in labels and OTHER not in kept else [])
    return EmbeddingMap(coords, labels, legend, (float(variance[0]), float(variance[1]) if len(variance) > 1 else 0.0),
                        attribute)


@dataclass(frozen=True)
class Neighbours:
    """An item and its nearest items by cosine similarity, with their texts."""

    group: str  # "random" or "popular"
    item_id: str
    text: str
    nearest: list[tuple[str, str, float]]  # (item id, text, cosine)


def nearest_items(item_ids: list[str], vectors: np.ndarray, texts: dict[str, str], queries: list[tuple[str, str]],
                  k: int) -> list[Neighbours]:
    """Exact cosine neighbours (self excluded) of each (group, item id) query: a handful of rows, so exact is cheap."""
    row = {item: i for i, item in enumerate(item_ids)}
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    found = []
    for group, item in queries:
        scores = unit @ unit[row[item]]
        scores[row[item]] = -np.inf
        best = np.argsort(-scores, kind="stable")[:k]
        found.append(Neighbours(group, item, texts.get(item, ""),
                                [(item_ids[j], texts.get(item_ids[j], ""), float(scores[j])) for j in best]))
    return found


@dataclass(frozen=True)
class EmbeddingFacts:
    run: Run
    map: EmbeddingMap
    neighbours: list[Neighbours]


def embedding_facts(run: Run, dataset: DatasetFacts, attributes: dict[str, str | None], separator: str | None,
                    attribute: str | None, examples: int, top: int, max_items: int, seed: int) -> EmbeddingFacts:
    """The map and the neighbour examples (`examples` random items and the `examples` most popular ones)."""
    embeddings = read_embeddings(run.run_dir)
    ids = embeddings.item_ids
    values = [first_value(attributes.get(item), separator) for item in ids]
    mapped = embedding_map(embeddings.vectors, values, attribute, top, max_items, seed)
    present = set(ids)
    rng = np.random.default_rng(seed)
    randoms = [ids[i] for i in rng.choice(len(ids), size=min(examples, len(ids)), replace=False)]
    popular = [item for item in dataset.popular if item in present and item not in randoms][:examples]
    queries = [("random", item) for item in randoms] + [("popular", item) for item in popular]
    return EmbeddingFacts(run, mapped, nearest_items(ids, embeddings.vectors, dataset.texts, queries, 5))


def item_attribute(run: Run, attribute: str | None) -> dict[str, str | None]:
    """Each item's raw `attribute` value from the dataset's items.parquet (empty when it has no such column)."""
    if attribute is None:
        return {}
    schema = pq.read_schema(items_path(run.run_dir))
    if attribute not in schema.names:
        return {}
    table = read_items(run.run_dir, ["item_id", attribute]).to_pydict()
    return dict(zip(table["item_id"], table[attribute]))


@dataclass(frozen=True)
class Curve:
    """Stage two's epochs: x, training loss, the validation score, and which epoch was kept."""

    epochs: list[int]
    loss: list[float | None]
    valid: list[float | None]
    valid_name: str
    chosen: int | None  # index into `epochs`; None when training never beat where it started


def training_curve(trained: Trained) -> Curve:
    """From history.jsonl (or metrics.json's history for runs made before it); Recformer's two stages in a row."""
    k = trained.metrics.get("protocol", {}).get("ks", [10])[0]
    key, name = f"valid_ndcg@{k}", f"valid NDCG@{k}"
    records = trained.downstream.history
    if records and key not in records[-1]:
        key = "score"  # Recformer's fine-tuning names its validation NDCG@K `score`
    best = trained.downstream.manifest.get("best_epoch")
    chosen = next((i for i, r in enumerate(records) if r.get("best")), None)
    if chosen is None:
        chosen = next((i for i, r in enumerate(records) if r.get("epoch") == best and "stage" not in r), None)
    recformer = bool(records) and "stage" in records[0]
    epochs = list(range(1, len(records) + 1)) if recformer else [int(r["epoch"]) for r in records]
    return Curve(epochs, [r.get("loss") for r in records], [r.get(key) for r in records], name, chosen)


@dataclass(frozen=True)
class Spread:
    """One metric of one variant across its seeds."""

    label: str
    values: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else 0.0


def metric_names(metrics: dict[str, Any]) -> list[str]:
    """Recall@K and NDCG@K for each K, then MRR, in the order the evaluation wrote them."""
    test = metrics["model"]["test"]
    ks = metrics.get("protocol", {}).get("ks", [])
    names = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg")] + ["mrr"]
    return [n for n in names if n in test]


def variant_labels(runs: list[Trained]) -> dict[str, str]:
    """Each variant's label ("sasrec on said"), made unique by a short hash where two variants would share one."""
    first = {run.variant: run.label for run in runs}
    shared = Counter(first.values())
    return {variant: label if shared[label] == 1 else f"{label} #{variant[:6]}" for variant, label in first.items()}


def spreads(runs: list[Trained], metric: str) -> list[Spread]:
    """Test `metric` per variant (runs differing only in seed share one), plus popularity per dataset run."""
    labels = variant_labels(runs)
    values: dict[str, list[float]] = {}
    for run in runs:
        values.setdefault(run.variant, []).append(run.metrics["model"]["test"][metric])
    out = [Spread(labels[variant], found) for variant, found in values.items()]
    datasets = {r.dataset.run_id: r for r in runs}
    for dataset_id, run in datasets.items():
        suffix = "" if len(datasets) == 1 else f" ({dataset_id[:6]})"
        out.append(Spread(f"popularity{suffix}", [run.metrics["popularity"]["test"][metric]]))
    return out
