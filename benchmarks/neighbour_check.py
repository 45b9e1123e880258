"""The neighbour check of `align`'s evidence, side by side for several embeddings runs of one catalog.

For catalogs whose attributes exist only inside one rendered text, as in UniSRec's Scientific
("title. categories. brand."): the attribute is pulled out of the items' `text` with a regular
expression (group 1), then each run's nearest neighbours are checked against it exactly as `align`
does (`stages.align.evidence.neighbour_rate`, same queries for every run).

    python -m benchmarks.neighbour_check \
        --runs said=artifacts/bench/embeddings/amazon2018-scientific-unisrec/latest \
               text=artifacts/bench2/embeddings/amazon2018-scientific-unisrec/latest
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import faiss

from benchmarks import _args, _results
from pipeline.contracts.dataset import read_items
from pipeline.contracts.embeddings import align_to_items, l2_normalise, read_embeddings
from stages.align.evidence import neighbour_rate

# UniSRec's rendering: "<title>. <category path>. <brand>." -- the last two sentences, read from the end.
PATTERNS = {"brand": r"\.\s+([^.]+?)\.?\s*$", "category": r"\.\s+([^.]+?)\.\s+[^.]+?\.?\s*$"}


def attribute_values(texts: list[str], pattern: str) -> list[frozenset[str]]:
    """Each item's attribute value (lower-cased) as a one-element set; empty where the pattern finds none."""
    compiled = re.compile(pattern)
    found = [compiled.search(text or "") for text in texts]
    return [frozenset([m.group(1).strip().lower()]) if m and m.group(1).strip() else frozenset() for m in found]


def labelled_run(text: str) -> tuple[str, Path]:
    """argparse type: `label=folder`, the folder an existing embeddings run."""
    label, sep, folder = text.partition("=")
    if not sep or not label:
        raise argparse.ArgumentTypeError(f"{text}: expected LABEL=RUN_FOLDER")
    return label, _args.existing_dir(folder)


@_args.reports_errors
def main() -> None:
    parser = _args.parser(__doc__)
    parser.add_argument("--name", default="neighbour_check", help="results file name")
    parser.add_argument("--runs", nargs="+", required=True, type=labelled_run, help="label=embeddings run folder")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    runs = dict(args.runs)
    figures: dict[str, dict[str, object]] = {}
    table = []
    for label, folder in runs.items():
        embeddings = read_embeddings(Path(folder).resolve())
        # The store's layout: <root>/embeddings/<name>/<run> was made from <root>/datasets/<name>/<dataset run>.
        dataset = embeddings.run_dir.parents[1].parent / "datasets" / embeddings.run_dir.parent.name / \
            embeddings.manifest["dataset_run_id"]
        items = read_items(dataset, ["item_id", "text"])
        vectors, _ = align_to_items(embeddings, items.column("item_id").to_pylist(), allow_missing=False)
        index = faiss.IndexFlatIP(vectors.shape[1])  # exact, as align's own check on a catalog this size
        index.add(l2_normalise(vectors))
        figures[label] = {"run": str(embeddings.run_dir), "method": embeddings.manifest.get("method"),
                          "dim": embeddings.dim}
        for attribute, pattern in PATTERNS.items():
            values = attribute_values(items.column("text").to_pylist(), pattern)
            rate = neighbour_rate(index, vectors.__getitem__, values, args.queries, args.seed)
            figures[label][attribute] = rate
            table.append((f"{label}: nearest neighbour shares {attribute} / random pairs (lift)",
                          rate.get("skipped") or (f"{rate['nearest_neighbour_share_rate']:.1%} / "
                                                  f"{rate['random_pair_share_rate']:.1%} ({rate['lift']})")))
    _results.write(args.name, {"runs": figures, "patterns": PATTERNS, "queries": args.queries}, table)
    print(json.dumps({k: {a: v[a].get("lift") for a in PATTERNS} for k, v in figures.items()}))


if __name__ == "__main__":
    main()
