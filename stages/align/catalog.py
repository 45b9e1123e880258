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
    """The rows of the run to publish, each kept from the base run or embedded now.

    Rows kept from the base stay in the base's order; new items are appended in catalog order.
    """

    ids: list[str]
    sha: list[str]
    from_base: np.ndarray  # (rows,) int64: the row's row in the base run, -1 when embedded now
    train: list[int]  # catalog rows to embed now, in row order of the run
    base_rows: list[int | None]  # for each of `train`: its base row (text changed) or None (new item)
    removed: int  # base rows whose item is no longer in the catalog

    @property
    def new(self) -> int:
        return sum(row is None for row in self.base_rows)

    @property
    def changed(self) -> int:
        return len(self.train) - self.new

    def assemble(self, kept: np.ndarray | None, trained: np.ndarray) -> np.ndarray:
        """Stack per-row values: `kept[from_base[r]]` for kept rows, `trained[k]` for the k-th embedded row."""
        out = np.empty((len(self.ids), *trained.shape[1:]), dtype=trained.dtype)
        keep = self.from_base >= 0
        if keep.any():
            out[keep] = kept[self.from_base[keep]]
        out[~keep] = trained
        return out

    def extends_base(self, base_rows: int) -> bool:
        """The run is the base's rows, untouched and in order, plus appended ones (an index can be extended)."""
        return np.array_equal(self.from_base[:base_rows], np.arange(base_rows)) and self.removed == 0


def plan_rows(catalog: Catalog, base: Embeddings | None) -> RowPlan:
    """Every catalog item embedded (no base), or only what differs from `base`."""
    if base is None:
        rows = list(range(len(catalog.ids)))
        return RowPlan(list(catalog.ids), list(catalog.sha), np.full(len(rows), -1, np.int64), rows,
                       [None] * len(rows), 0)
    row_of = {item: row for row, item in enumerate(catalog.ids)}
    ids, sha, from_base, train, base_rows = [], [], [], [], []
    for base_row, (item, old_sha) in enumerate(zip(base.item_ids, base.text_sha256)):
        row = row_of.get(item)
        if row is None:
            continue
        ids.append(item)
        sha.append(catalog.sha[row])
        kept = catalog.sha[row] == old_sha
        from_base.append(base_row if kept else -1)
        if not kept:
            train.append(row)
            base_rows.append(base_row)
    in_base = set(base.item_ids)
    for row, item in enumerate(catalog.ids):
        if item not in in_base:
            ids.append(item)
            sha.append(catalog.sha[row])
            from_base.append(-1)
            train.append(row)
            base_rows.append(None)
    removed = len(base.item_ids) - sum(1 for item in base.item_ids if item in row_of)
    return RowPlan(ids, sha, np.asarray(from_base, np.int64), train, base_rows, removed)
