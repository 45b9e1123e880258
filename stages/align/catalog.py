"""What a refresh of stage one must do: the catalog as alignment sees it, and the rows of the next run.

Item embeddings depend on the catalog (item ids and the text each is aligned with) and stage one's
settings, never on interactions. A run records its catalog's fingerprint; the next run over the same
catalog reuses it, and a run over a changed catalog embeds only new items and items whose text changed,
keeps every other row of its base run bit for bit and drops items no longer in the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import events
from pipeline.contracts.dataset import read_items
from pipeline.contracts.embeddings import Embeddings
from pipeline.run_ids import fingerprint
from stages.align.tokens import render, text_sha256


@dataclass(frozen=True)
class Catalog:
    """A dataset run's items as alignment sees them (row i = dataset item i)."""

    ids: list[str]
    texts: list[str]
    sha: list[str]  # sha256 of each rendered text
    attribute: list[str | None] | None  # the evidence attribute's value per item, when configured

    @property
    def fingerprint(self) -> str:
        """Changes exactly when an item is added, removed or re-texted."""
        return fingerprint(self.ids, self.sha)


def read_catalog(dataset_dir: Path, template: str, attribute: str | None) -> Catalog:
    """The items of a dataset run, their texts under `align.template` and the evidence attribute (skipped,
    said in one line, where the items have no such column: the default `class` is ml-100k's)."""
    table = read_items(dataset_dir)
    if attribute is not None and attribute not in table.column_names:
        choices = ", ".join(name for name in table.column_names if name not in ("item_id", "text")) or "none"
        events.emit("evidence_skipped", f"align.evidence.attribute: the items have no column {attribute!r}; the "
                    f"neighbour check is skipped (attributes here: {choices}; null silences this)", attribute=attribute)
        attribute = None
    texts = render(table, template)
    values = table.column(attribute).to_pylist() if attribute else None
    return Catalog(table.column("item_id").to_pylist(), texts, text_sha256(texts), values)


@dataclass(frozen=True)
class RowPlan:
    """The rows of the run to publish: first the rows kept from the base run, in the base's order, then the rows
    embedded now (`train`: items whose text changed, in the base's order, then new items in catalog order).

    Kept rows first lets the kept part be copied from the base run's parts as they stream past, and an
    unchanged base's index be extended by the appended rows.
    """

    ids: list[str]
    sha: list[str]
    from_base: np.ndarray  # (kept,) int64: each kept row's row in the base run, ascending
    train: list[int]  # catalog rows to embed now, in row order of the run (after the kept rows)
    base_rows: list[int | None]  # for each of `train`: its base row (text changed) or None (new item)
    removed: int  # base rows whose item is no longer in the catalog

    @property
    def kept(self) -> int:
        return len(self.from_base)

    @property
    def new(self) -> int:
        return sum(row is None for row in self.base_rows)

    @property
    def changed(self) -> int:
        return len(self.train) - self.new

    def extends_base(self, base_rows: int) -> bool:
        """The run is the base's rows, untouched and in order, plus appended ones (an index can be extended)."""
        return np.array_equal(self.from_base, np.arange(base_rows)) and self.removed == 0


def plan_rows(catalog: Catalog, base: Embeddings | None) -> RowPlan:
    """Every catalog item embedded (no base), or only what differs from `base` (its ids and text sha256)."""
    if base is None:
        rows = list(range(len(catalog.ids)))
        return RowPlan(list(catalog.ids), list(catalog.sha), np.zeros(0, np.int64), rows, [None] * len(rows), 0)
    row_of = {item: row for row, item in enumerate(catalog.ids)}
    kept: list[int] = []
    changed: list[tuple[int, int]] = []  # (catalog row, base row)
    for base_row, (item, old_sha) in enumerate(zip(base.item_ids, base.text_sha256)):
        row = row_of.get(item)
        if row is None:
            continue
        if catalog.sha[row] == old_sha:
            kept.append(base_row)
        else:
            changed.append((row, base_row))
    in_base = set(base.item_ids)
    new = [row for row, item in enumerate(catalog.ids) if item not in in_base]
    train = [row for row, _ in changed] + new
    ids = [base.item_ids[r] for r in kept] + [catalog.ids[row] for row in train]
    sha = [base.text_sha256[r] for r in kept] + [catalog.sha[row] for row in train]
    removed = len(base.item_ids) - len(kept) - len(changed)
    return RowPlan(ids, sha, np.asarray(kept, np.int64), train, [b for _, b in changed] + [None] * len(new), removed)
