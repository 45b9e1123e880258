from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.contracts.embeddings import align_to_items, read_embeddings
from pipeline.errors import BadInput
from tests.support import write_embeddings_run


@pytest.fixture
def dataset_dir(small_dataset: Path) -> Path:
    return (small_dataset / "latest").resolve()


def _items(dataset_dir: Path) -> list[str]:
    return pq.read_table(dataset_dir / "items.parquet").column("item_id").to_pylist()


def test_reads_rows_in_file_order_and_aligns_to_dataset_items(tmp_path: Path, dataset_dir: Path) -> None:
    items = _items(dataset_dir)
    run = write_embeddings_run(tmp_path, dataset_dir, 8, item_ids=list(reversed(items)))
    embeddings = read_embeddings(run)
    assert (embeddings.dim, len(embeddings.item_ids)) == (8, len(items))
    vectors, has = align_to_items(embeddings, items, allow_missing=False)
    assert has.all()
    row = embeddings.item_ids.index(items[0])
    np.testing.assert_array_equal(vectors[0], embeddings.vectors[row])


def test_missing_items_fail_unless_a_fallback_is_allowed(tmp_path: Path, dataset_dir: Path) -> None:
    items = _items(dataset_dir)
    embeddings = read_embeddings(write_embeddings_run(tmp_path, dataset_dir, 8, item_ids=items[3:]))
    with pytest.raises(BadInput, match=r"3 dataset items have no embedding .*downstream.missing_items=id_vector"):
        align_to_items(embeddings, items, allow_missing=False)
    vectors, has = align_to_items(embeddings, items, allow_missing=True)
    assert has.tolist() == [False] * 3 + [True] * (len(items) - 3)
    assert not vectors[:3].any()


def test_an_index_that_disagrees_with_the_rows_is_refused(tmp_path: Path, dataset_dir: Path) -> None:
    run = write_embeddings_run(tmp_path, dataset_dir, 8)
    index = faiss.IndexFlatIP(8)
    index.add(np.zeros((3, 8), dtype=np.float32))
    faiss.write_index(index, str(run / "index.faiss"))
    with pytest.raises(BadInput, match="index holds 3 vectors of width 8"):
        read_embeddings(run)


def test_a_corrupt_parquet_file_names_itself(tmp_path: Path, dataset_dir: Path) -> None:
    run = write_embeddings_run(tmp_path, dataset_dir, 8)
    (run / "embeddings" / "part-00000.parquet").write_bytes(b"not parquet")
    with pytest.raises(BadInput, match=r"embeddings/part-00000.parquet: not a readable Parquet file"):
        read_embeddings(run)
