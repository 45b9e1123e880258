"""The export steps every alignment method shares: refuse non-finite vectors, write each process's part, copy
the kept rows from the base run, fill the FAISS index by streaming the parts.

The files themselves follow the embeddings contract (`pipeline.contracts.embeddings`). No step holds every
vector at once: each process writes the rows it embedded, the kept rows are copied chunk by chunk, and the
index is filled chunk by chunk (an IVF-PQ index is trained on a sample first).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch
from accelerate import Accelerator

from pipeline.artifact_files import read_faiss
from pipeline.chunked_rows import rows_in_chunks
from pipeline.contracts import embeddings as contract
from pipeline.contracts.embeddings import l2_normalise
from pipeline.errors import BadInput, PipelineError
from stages.align.catalog import RowPlan

# faiss wants about this many training points per inverted list (it warns below it).
_POINTS_PER_LIST = 39
_PQ_BITS = 8
# `index: auto` builds an exact flat index up to this many items, IVF-PQ above. A flat index holds 4 x dim
# bytes per item and scans them all per query: 1M items of 384 dims are 1.5 GiB; IVF-PQ holds pq_m bytes
# per item and scans a few lists (benchmarks/results/align_scale.json times both).
FLAT_MAX_ITEMS = 1_000_000
KEPT_PART = 0  # the rows copied from the base run; process p writes part 1 + p (`own_part`)


@dataclass(frozen=True)
class IndexSpec:
    kind: str  # auto | flat | hnsw | ivfpq
    hnsw_m: int
    ivf_lists: int
    pq_m: int

    def resolved(self, items: int) -> str:
        """The index kind built for `items` items (`auto`: flat up to FLAT_MAX_ITEMS, ivfpq above)."""
        if self.kind != "auto":
            return self.kind
        return "flat" if items <= FLAT_MAX_ITEMS else "ivfpq"


def require_finite(accelerator: Accelerator, vectors: np.ndarray, item_ids: list[str]) -> None:
    """Refuse to publish NaN or inf (a diverged run) on every process if any process has one: name how many rows
    and the first item here."""
    bad = ~np.isfinite(vectors).all(axis=1)
    count = int(accelerator.reduce(torch.tensor([int(bad.sum())], device=accelerator.device), "sum").item())
    if count:
        first = f"item {item_ids[int(np.argmax(bad))]}" if bad.any() else "on another process"
        raise PipelineError(f"{count} embeddings are NaN or inf (first: {first}); "
                            "nothing was published (lower align.said.lr or use mixed_precision: no)")


def stored(vectors: np.ndarray, normalise: str) -> np.ndarray:
    """The vectors as written to Parquet under `align.export.normalise`."""
    return l2_normalise(vectors) if normalise == "l2" else vectors.astype(np.float32)


def own_part(accelerator: Accelerator) -> int:
    """The number of the part this process writes: the rows it embedded (a method's per-row files mirror it)."""
    return KEPT_PART + 1 + accelerator.process_index


def write_embedded(accelerator: Accelerator, folder: Path, rows: RowPlan, vectors: np.ndarray, offset: int,
                   normalise: str, metadata: dict[str, str]) -> None:
    """This process's part: its vectors are the embedded rows `offset`.. of `rows.train` (every process calls)."""
    first = rows.kept + offset
    ids = rows.ids[first:first + len(vectors)]
    vectors = stored(vectors, normalise)
    require_finite(accelerator, vectors, ids)
    if len(vectors):
        contract.write_embeddings(folder, ids, vectors, rows.sha[first:first + len(vectors)], metadata,
                                  part=own_part(accelerator))


def copy_kept(folder: Path, base_dir: Path, rows: RowPlan, dim: int, metadata: dict[str, str]) -> None:
    """The base run's kept rows, stored values bit for bit, copied chunk by chunk into the kept part."""
    if not rows.kept:
        return

    def kept_chunks() -> Iterator[tuple[list[str], np.ndarray, list[str]]]:
        for (_, ids, vectors, sha, _), local in rows_in_chunks(rows.from_base, contract.iter_chunks(base_dir),
                                                               lambda chunk: len(chunk[1])):
            if len(local):
                yield [ids[i] for i in local], vectors[local], [sha[i] for i in local]

    contract.write_part(folder, KEPT_PART, dim, metadata, kept_chunks())


def new_index(spec: IndexSpec, dim: int, items: int, sample: np.ndarray | None) -> faiss.Index:
    """An empty inner-product index for `items` items, trained on the (normalised) `sample` where it needs it.

    Raises:
        BadInput: ivfpq with a `pq_m` that does not divide the dimension, or too few items to train.
    """
    kind = spec.resolved(items)
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        return faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    if dim % spec.pq_m:
        raise BadInput(f"align.export.pq_m: {spec.pq_m} does not divide the embedding dimension {dim}")
    if items < 1 << _PQ_BITS:
        raise BadInput(f"align.export.index: ivfpq needs at least {1 << _PQ_BITS} items to train, got {items}; use flat")
    assert sample is not None  # `training_rows` gives one whenever the kind is ivfpq
    lists = max(1, min(spec.ivf_lists, len(sample) // _POINTS_PER_LIST))
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, lists, spec.pq_m, _PQ_BITS, faiss.METRIC_INNER_PRODUCT)
    index.train(sample)
    return index


def training_rows(spec: IndexSpec, items: int, seed: int) -> np.ndarray | None:
    """The rows an index is trained on: a sample of the points faiss wants (all rows when fewer), or None for
    kinds that need no training."""
    if spec.resolved(items) != "ivfpq":
        return None
    wanted = min(items, max(spec.ivf_lists * _POINTS_PER_LIST * 2, 1 << _PQ_BITS))
    return np.sort(np.random.default_rng(seed).choice(items, size=wanted, replace=False))


def fill_index(spec: IndexSpec, folder: Path, base_dir: Path | None, rows: RowPlan, dim: int,
               seed: int) -> faiss.Index:
    """The run's index: the base's index extended by the appended rows where the run extends it (refilled in
    row order where rows were replaced or removed), otherwise a new one; filled chunk by chunk from the parts."""
    items = len(rows.ids)
    done = 0
    if base_dir is not None:
        index = read_faiss(base_dir / contract.INDEX_FILE)
        if rows.extends_base(int(index.ntotal)):
            done = int(index.ntotal)
        else:
            index.reset()  # already trained
    else:
        sample_rows = training_rows(spec, items, seed)
        sample = None if sample_rows is None else l2_normalise(contract.read_rows(folder, sample_rows))
        index = new_index(spec, dim, items, sample)
    offset = 0
    for _, ids, vectors, _, _ in contract.iter_chunks(folder):
        skip = min(len(ids), max(0, done - offset))
        if skip < len(ids):
            index.add(l2_normalise(vectors[skip:]))
        offset += len(ids)
    return index
