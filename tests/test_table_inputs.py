"""The `table` format as a data engineer exports it: ISO-8601 times, and folders of Parquet parts (Spark, DuckDB)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from pipeline import prepare
from pipeline.config import load_config
from pipeline.contracts.dataset import INTERACTIONS_FILE
from pipeline.errors import BadInput
from tests.support import shared_dataset

CANONICAL = ["user_id", "item_id", "timestamp", "position", "split"]


@pytest.fixture(scope="module")
def ml100k_rows() -> tuple[pa.Table, pa.Table]:
    """The interactions of ml-100k's first 80 users (user, item, epoch seconds) and the movies' titles."""
    raw = shared_dataset("ml-100k")
    inter = [line.split("\t") for line in (raw / "ml-100k.inter").read_text(encoding="latin-1").splitlines()[1:]]
    kept = [row for row in inter if int(row[0]) <= 80]
    items = [line.split("\t") for line in (raw / "ml-100k.item").read_text(encoding="latin-1").splitlines()[1:]]
    return (pa.table({"user_id": [r[0] for r in kept], "item_id": [r[1] for r in kept],
                      "timestamp": [int(float(r[3])) for r in kept]}),
            pa.table({"item_id": [r[0] for r in items], "title": [r[1] for r in items]}))


def _prepare(tmp_path: Path, interactions_file: str, name: str) -> pa.Table:
    config = load_config(None, [f"workspace.root={tmp_path / 'artifacts'}", f"data.path={tmp_path}",
                                f"data.name={name}", "data.format=table", f"data.interactions_file={interactions_file}",
                                "data.items_file=items.parquet", "data.kcore_users=0", "data.kcore_items=0"])
    result = prepare.run(config)
    return pq.read_table(result.run_dir / INTERACTIONS_FILE).select(CANONICAL).sort_by(
        [("user_id", "ascending"), ("position", "ascending")])


def test_iso_times_and_partitioned_parquet_give_the_dataset_epoch_numbers_give(tmp_path: Path, ml100k_rows) -> None:
    inter, items = ml100k_rows
    pq.write_table(items, tmp_path / "items.parquet")
    pacsv.write_csv(inter, tmp_path / "epoch.csv")
    # ISO-8601 as exports write it: half in UTC with Z, half at +02:00 (the same instants), one column.
    utc = [datetime.fromtimestamp(t, UTC) for t in inter.column("timestamp").to_pylist()]
    plus2 = timezone(timedelta(hours=2))
    iso = [m.isoformat().replace("+00:00", "Z") if n % 2 else m.astimezone(plus2).isoformat()
           for n, m in enumerate(utc)]
    pacsv.write_csv(inter.set_column(2, "timestamp", pa.array(iso)), tmp_path / "iso.csv")
    # As Spark writes it: hive folders by a partition column, part files, a _SUCCESS marker; times as timestamps.
    spark = inter.set_column(2, "timestamp", pa.array(utc, pa.timestamp("ms", tz="UTC"))).append_column(
        "shard", pa.array([int(u) % 3 for u in inter.column("user_id").to_pylist()]))
    pq.write_to_dataset(spark, tmp_path / "events", partition_cols=["shard"],
                        basename_template="part-{i}.parquet")
    (tmp_path / "events" / "_SUCCESS").touch()
    parts = (tmp_path / "events").rglob("part-*.parquet")
    assert sorted(p.parent.name for p in parts) == ["shard=0", "shard=1", "shard=2"]

    expected = _prepare(tmp_path, "epoch.csv", "epoch")
    assert expected.num_rows == inter.num_rows
    assert _prepare(tmp_path, "iso.csv", "iso").equals(expected)
    assert _prepare(tmp_path, "events", "events").equals(expected)


def test_a_value_that_is_no_time_is_named_with_its_row(tmp_path: Path, ml100k_rows) -> None:
    inter, items = ml100k_rows
    pq.write_table(items, tmp_path / "items.parquet")
    times = ["2024-05-01T12:00:00Z"] * inter.num_rows
    times[6] = "next tuesday"
    pacsv.write_csv(inter.set_column(2, "timestamp", pa.array(times)), tmp_path / "bad.csv")
    with pytest.raises(BadInput, match=r"bad.csv: column 'timestamp', row 7: 'next tuesday' is neither an epoch number "
                                       r"nor an ISO-8601 time"):
        _prepare(tmp_path, "bad.csv", "bad")


def test_a_partition_folder_changed_is_a_new_dataset_run(tmp_path: Path, ml100k_rows) -> None:
    inter, items = ml100k_rows
    pq.write_table(items, tmp_path / "items.parquet")
    (tmp_path / "events" / "day=1").mkdir(parents=True)
    pq.write_table(inter, tmp_path / "events" / "day=1" / "part-0.parquet")
    config = load_config(None, [f"workspace.root={tmp_path / 'artifacts'}", f"data.path={tmp_path}",
                                "data.format=table", "data.interactions_file=events", "data.items_file=items.parquet"])
    before = prepare.run_id(config, prepare.source_facts(config))
    assert [fact["member"] for fact in prepare.source_facts(config)[:1]] == ["day=1/part-0.parquet"]
    (tmp_path / "events" / "day=1").rename(tmp_path / "events" / "day=2")  # same bytes, another partition value
    assert prepare.run_id(config, prepare.source_facts(config)) != before
