"""The artifact contracts (pipeline/contracts/): each writer's output reads back through its reader on real data,
with the schema the contract states, and the contract file names are spelled nowhere else in the code."""

from __future__ import annotations

import ast
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.config import load_config
from pipeline.contracts import dataset, downstream, embeddings, history, recommendations
from pipeline.errors import BadInput

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "stages", "benchmarks", "scripts", "examples")
CONTRACTS = ROOT / "pipeline" / "contracts"
# config.json is a contract file too (embeddings.CONFIG_FILE), but it is also the name of every Hugging Face
# model's own config, which stage one reads by that name: it is left out of the scan.
FILE_NAMES = (dataset.ITEMS_FILE, dataset.INTERACTIONS_FILE, embeddings.LEGACY_FILE, embeddings.INDEX_FILE,
              downstream.WEIGHTS_FILE, downstream.METRICS_FILE, recommendations.RECOMMENDATIONS_FILE,
              history.HISTORY_FILE)
DOC_KEYWORDS = ("description", "help")  # pydantic field and argparse option texts are documentation


@pytest.fixture
def dataset_dir(small_dataset: Path) -> Path:
    return (small_dataset / "latest").resolve()


def _fields(schema: pa.Schema) -> list[tuple[str, pa.DataType]]:
    return [(field.name, field.type) for field in schema]


def test_dataset_round_trips_with_its_schema(tmp_path: Path, dataset_dir: Path) -> None:
    items, interactions = dataset.read_items(dataset_dir), dataset.read_interactions(dataset_dir)
    assert _fields(interactions.schema) == _fields(dataset.INTERACTIONS_SCHEMA)
    assert "item_id" in items.column_names and items.column_names[-1] == dataset.TEXT_COLUMN
    assert all(field.type == pa.string() for field in items.schema)
    assert len(set(items.column("item_id").to_pylist())) == items.num_rows == dataset.item_count(dataset_dir)
    assert set(interactions.column("split").to_pylist()) <= set(dataset.SPLITS)
    dataset.write_dataset(tmp_path, items, interactions)
    assert dataset.read_items(tmp_path).equals(items) and dataset.read_interactions(tmp_path).equals(interactions)
    assert dataset.read_interactions(tmp_path, ["split", "user_id"]).column_names == ["split", "user_id"]


def test_dataset_reader_and_writer_refuse_what_breaks_the_contract(tmp_path: Path, dataset_dir: Path) -> None:
    items, interactions = dataset.read_items(dataset_dir), dataset.read_interactions(dataset_dir)
    with pytest.raises(ValueError, match="column 'position' must be int32, got int64"):
        dataset.write_dataset(tmp_path, items, interactions.set_column(
            3, "position", interactions.column("position").cast(pa.int64())))
    with pytest.raises(BadInput, match=r"items.parquet: not found \(run `seqrec-pipeline prepare` first\)"):
        dataset.read_items(tmp_path)
    (tmp_path / dataset.INTERACTIONS_FILE).write_bytes(b"not parquet")
    with pytest.raises(BadInput, match="not a readable Parquet file"):
        dataset.read_interactions(tmp_path)
    with pytest.raises(BadInput, match="no column 'genre'"):
        dataset.read_items(dataset_dir, ["item_id", "genre"])


def test_embeddings_round_trip_with_their_schema_and_index(tmp_path: Path, dataset_dir: Path) -> None:
    items = dataset.read_items(dataset_dir, ["item_id", "text"])
    ids = items.column("item_id").to_pylist()
    vectors = np.random.default_rng(0).normal(size=(len(ids), 12)).astype(np.float32)
    sha = [f"{n:064x}" for n in range(len(ids))]
    embeddings.write_embeddings(tmp_path, ids, vectors, sha, {"method": "said", "dataset_run_id": "d1"})
    index = faiss.IndexFlatIP(12)
    index.add(embeddings.l2_normalise(vectors))
    facts = embeddings.write_index(tmp_path, index)
    embeddings.write_config(tmp_path, {"align": {"method": "said"}})
    schema = pq.read_schema(embeddings.part_path(tmp_path, 0))
    assert _fields(schema) == _fields(embeddings.schema(12))
    read = embeddings.read_embeddings(tmp_path)
    assert (read.item_ids, read.text_sha256, read.dim) == (ids, sha, 12)
    np.testing.assert_array_equal(read.vectors, vectors)
    assert read.metadata == {"method": "said", "dataset_run_id": "d1", "dim": "12"}
    assert facts == {"type": "IndexFlatIP", "ntotal": len(ids), "dim": 12, "metric": "inner_product",
                     "vectors": "l2_normalised"}
    index = faiss.read_index(str(tmp_path / embeddings.INDEX_FILE))
    np.testing.assert_allclose(index.reconstruct(0), embeddings.l2_normalise(vectors[:1])[0], rtol=1e-6)


def test_a_downstream_run_round_trips(tmp_path: Path, dataset_dir: Path) -> None:
    weights = {"items.weight": torch.randn(dataset.item_count(dataset_dir) + 1, 8), "scale": torch.ones(1)}
    downstream.write_weights(tmp_path, weights)
    assert not list(tmp_path.glob(".*.tmp"))
    assert all(torch.equal(downstream.read_weights(tmp_path)[name], tensor) for name, tensor in weights.items())
    section = load_config(None, ["downstream.model.kind=gru4rec"]).downstream
    downstream.write_config(tmp_path, section.model_dump(mode="json"))
    assert downstream.read_config(tmp_path) == section
    metrics = {"model": {"valid": {"ndcg@10": 0.1}, "test": {"ndcg@10": 0.2}}, "best_epoch": 1}
    downstream.write_metrics(tmp_path, metrics)
    assert downstream.read_metrics(tmp_path) == metrics
    index = faiss.IndexFlatIP(8)
    index.add(weights["items.weight"][1:].numpy())
    downstream.write_index(tmp_path, index)
    assert downstream.read_index(tmp_path, len(weights["items.weight"]) - 1, 8).ntotal == index.ntotal
    with pytest.raises(BadInput, match="index holds"):
        downstream.read_index(tmp_path, 3, 8)
    (tmp_path / downstream.CONFIG_FILE).write_text("[1]")
    with pytest.raises(BadInput, match="not a downstream config"):
        downstream.read_config(tmp_path)


def test_recommendations_round_trip_with_their_schema(tmp_path: Path, dataset_dir: Path) -> None:
    users = dataset.read_interactions(dataset_dir, ["user_id"]).column("user_id").unique().to_pylist()[:5]
    items = dataset.read_items(dataset_dir, ["item_id"]).column("item_id").to_pylist()
    table = recommendations.recommendations_table(users, [items[n:n + 3] for n in range(5)],
                                                  [[3.0, 2.0, 1.0]] * 5)
    recommendations.write_recommendations(tmp_path, table)
    read = recommendations.read_recommendations(tmp_path)
    assert read.equals(table) and _fields(read.schema) == _fields(recommendations.SCHEMA)
    with pytest.raises(ValueError, match="column 'scores' must be list<item: float>"):
        recommendations.write_recommendations(tmp_path, table.set_column(
            2, "scores", table.column("scores").cast(pa.list_(pa.float64()))))


def test_history_round_trips(tmp_path: Path) -> None:
    assert history.read_history(tmp_path) == []
    records = [{"step": 1, "loss": 2.5}, {"step": 2, "loss": 2.0, "lr": 1e-3}]
    history.write_history(tmp_path, records)
    assert history.read_history(tmp_path) == records


def _documentation(tree: ast.AST) -> set[int]:
    """The ids of string constants that document rather than name a file: docstrings and other bare string
    statements, and the values of `description=` / `help=` arguments."""
    docs: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            docs.add(id(node.value))
        elif isinstance(node, ast.keyword) and node.arg in DOC_KEYWORDS:
            docs.update(id(inner) for inner in ast.walk(node.value))
    return docs


def contract_names_outside_contracts() -> list[str]:
    """`path:line: name` for each string in the code outside pipeline/contracts/ that spells a contract file name."""
    found = []
    for path in sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py")):
        if path.is_relative_to(CONTRACTS):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = _documentation(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                found += [f"{path.relative_to(ROOT)}:{node.lineno}: {name}" for name in FILE_NAMES if name in node.value]
    return found


def test_contract_file_names_are_spelled_only_in_the_contracts() -> None:
    assert contract_names_outside_contracts() == []


def test_the_scan_finds_a_spelled_file_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pipeline" / "contracts").mkdir(parents=True)
    (tmp_path / "pipeline" / "contracts" / "names.py").write_text('NAME = "metrics.json"\n')
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "reader.py").write_text(
        '"""Reads metrics.json."""\n\ndef read(run):\n    """metrics.json"""\n    return run / f"x/{1}metrics.json"\n')
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    monkeypatch.setitem(globals(), "CONTRACTS", tmp_path / "pipeline" / "contracts")
    assert contract_names_outside_contracts() == ["stages/reader.py:5: metrics.json"]
