"""The out-of-core engine (`data.engine: duckdb`) makes the memory engine's dataset byte for byte, for every setting
and every format it reads, including a canonical dataset written the way Spark writes one; bad input ends with one
line; `auto` picks it past the memory limit."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline import engine, prepare
from pipeline.config import load_config
from pipeline.contracts.dataset import read_interactions, read_items
from pipeline.errors import BadInput
from pipeline.ingest import recbole
from tests.support import shared_dataset

ML_100K = "ml-100k"
SETTINGS = [
    [f"data.dedup={dedup}", f"data.kcore_users={kcore}", f"data.kcore_items={kcore}", f"data.max_history={history}"]
    for dedup, kcore, history in itertools.product(("first", "none"), (0, 5), ("null", 20))
]


def _prepare(root: Path, raw: Path, engine: str, settings: list[str]) -> prepare.RunResult:
    config = load_config(None, [f"workspace.root={root / engine}", f"data.path={raw}", f"data.engine={engine}",
                                *settings])
    return prepare.run(config)


def assert_same_dataset(root: Path, raw: Path, settings: list[str]) -> dict:
    """Both engines' runs: the same id, the same files (sha256) and the same manifest facts; returns them."""
    memory, duckdb = (_prepare(root, raw, engine, settings) for engine in ("memory", "duckdb"))
    assert (memory.manifest["engine"], duckdb.manifest["engine"]) == ("memory", "duckdb")
    assert memory.run_dir.name == duckdb.run_dir.name
    different = {key for key in memory.manifest if memory.manifest[key] != duckdb.manifest[key]}
    assert different == {"engine", "config", "created"}
    assert not (duckdb.run_dir / ".duckdb").exists()
    return duckdb.manifest


@pytest.fixture(scope="module")
def repeated_100k(tmp_path_factory) -> Path:
    """ml-100k with repeats added: 2,000 rows again (same time: duplicated records) and 2,000 pairs again later."""
    raw = tmp_path_factory.mktemp("repeated") / "raw"
    shutil.copytree(shared_dataset(ML_100K), raw)
    lines = (raw / "ml-100k.inter").read_text().splitlines()
    later = []
    for line in lines[1:2001]:
        user, item, rating, time = line.split("\t")
        later.append(f"{user}\t{item}\t{rating}\t{int(time) + 86_400}")
    (raw / "ml-100k.inter").write_text("\n".join([*lines, *lines[1:2001], *later]) + "\n")
    return raw


@pytest.mark.parametrize("settings", SETTINGS, ids=[" ".join(s).replace("data.", "") for s in SETTINGS])
def test_duckdb_makes_the_memory_engines_dataset(settings: list[str], repeated_100k: Path, tmp_path: Path) -> None:
    facts = assert_same_dataset(tmp_path, repeated_100k, settings)
    assert facts["removed"]["duplicates"] >= 2000  # the repeats at the same time always go


def test_duckdb_reads_a_csv_table_with_iso_times(tmp_path: Path) -> None:
    """The `table` format: ml-latest-small's CSV files, and a copy with ISO-8601 times in mixed forms."""
    raw = shared_dataset("ml-latest-small")
    columns = ["data.format=table", "data.interactions_file=ratings.csv", "data.items_file=movies.csv",
               "data.columns.user=userId", "data.columns.item=movieId"]
    assert_same_dataset(tmp_path / "epoch", raw, columns)
    iso = tmp_path / "iso"
    iso.mkdir()
    ratings = pa.csv.read_csv(raw / "ratings.csv")
    seconds = ratings.column("timestamp").cast(pa.timestamp("s", tz="UTC"))
    text = pc.strftime(seconds, "%Y-%m-%dT%H:%M:%SZ")
    text = pc.if_else(pc.equal(pc.modulo(ratings.column("userId"), 2), 0), text, pc.strftime(seconds, "%Y-%m-%d %H:%M:%S"))
    pa.csv.write_csv(ratings.set_column(3, "timestamp", text), iso / "ratings.csv")
    shutil.copy(raw / "movies.csv", iso / "movies.csv")
    assert_same_dataset(tmp_path / "iso", iso, columns)


def write_like_spark(table: pa.Table, folder: Path, partition: str | None = None, parts: int = 2) -> None:
    """Spark's layout: `key=value/` folders, `part-0000N-<uuid>.snappy.parquet` files with `.crc` siblings, a
    `_SUCCESS` marker, timestamps as INT96."""
    groups = [(f"{partition}={value}", table.filter(pc.equal(table.column(partition), value)).drop_columns(partition))
              for value in pc.unique(table.column(partition)).to_pylist()] if partition else [("", table)]
    for sub, rows in groups:
        (folder / sub).mkdir(parents=True, exist_ok=True)
        size = -(-rows.num_rows // parts)
        for n in range(parts):
            name = f"part-{n:05d}-6f1c2d3e-0000-4000-8000-000000000000.c000.snappy.parquet"
            pq.write_table(rows.slice(n * size, size), folder / sub / name, compression="snappy",
                           use_deprecated_int96_timestamps=True)
            (folder / sub / f".{name}.crc").write_bytes(b"crc")
    (folder / "_SUCCESS").write_bytes(b"")


def test_a_canonical_dataset_written_like_spark_is_read_directly(tmp_path: Path) -> None:
    """A dataset run rewritten partitioned by split, as an upstream Spark job would: both engines read it into the
    same dataset, keeping its split (data.split: auto)."""
    made = _prepare(tmp_path / "first", shared_dataset(ML_100K), "memory", [])
    raw = tmp_path / "spark"
    write_like_spark(read_interactions(made.run_dir), raw / "interactions.parquet", partition="split")
    write_like_spark(read_items(made.run_dir), raw / "items.parquet")
    facts = assert_same_dataset(tmp_path / "canonical", raw, ["data.format=canonical"])
    assert facts["split_source"] == "source"
    assert facts["split_rows"] == made.manifest["split_rows"] and facts["counts"] == made.manifest["counts"]


def test_auto_turns_to_duckdb_past_the_memory_limit(tmp_path: Path, monkeypatch) -> None:
    config = load_config(None, [f"workspace.root={tmp_path}", f"data.path={shared_dataset(ML_100K)}",
                                "data.memory_limit_gib=0.5"])
    assert engine.estimated_rows(recbole.interactions_source(config.data)) == pytest.approx(100_000, rel=0.02)
    assert prepare.run(config).manifest["engine"] == "memory"  # 100,000 rows: about 21 MiB in memory
    monkeypatch.setattr(engine, "MEMORY_ENGINE_BYTES_PER_ROW", 6000)  # as if each row took 6 KB: 0.56 GiB
    assert prepare.run(config, force=True).manifest["engine"] == "duckdb"


def test_duckdb_names_the_bad_line_and_keeps_the_published_run(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(shared_dataset(ML_100K), raw)
    published = _prepare(tmp_path, raw, "duckdb", [])
    inter = raw / "ml-100k.inter"
    lines = inter.read_text().splitlines()
    inter.write_text("\n".join([*lines[:10], "196\t242\t3", *lines[10:]]) + "\n")
    for engine_name in ("duckdb", "memory"):  # the same line from both
        with pytest.raises(BadInput, match=rf"^{inter}: line 11: expected 4 fields, got 3$"):
            _prepare(tmp_path, raw, engine_name, [])
    inter.write_text("\n".join([*lines[:10], "196\t99999\t3\t881250949", *lines[10:]]) + "\n")
    with pytest.raises(BadInput, match=r"1 interactions name items absent from .* \(e.g. 99999\); set "
                                       r"data.drop_unknown_items=true"):
        _prepare(tmp_path, raw, "duckdb", [])
    inter.write_text("\n".join([*lines[:10], "196\t242\t3\tyesterday", *lines[10:]]) + "\n")
    for engine_name in ("duckdb", "memory"):  # not all numbers, so read as ISO-8601 times: the first is named
        with pytest.raises(BadInput, match=r"column 'timestamp', row 1: '881250949' is neither an epoch number"):
            _prepare(tmp_path, raw, engine_name, [])
    assert read_interactions(published.run_dir).num_rows == published.manifest["counts"]["interactions"]
    assert [p.name for p in (tmp_path / "duckdb" / "datasets" / ML_100K).iterdir() if p.name.startswith(".")] == []
    with (raw / "ml-100k.item").open("a") as items:
        items.write("99998\t\t\t\n")  # no text: dropped with its interactions
    inter.write_text("\n".join([*lines[:10], "196\t99999\t3\t881250949", "1\t99998\t3\t881250949", *lines[10:]]))
    dropped = assert_same_dataset(tmp_path / "dropped", raw, ["data.drop_unknown_items=true",
                                                              "data.drop_empty_text=true"])
    assert dropped["removed"]["unknown_items"] == 2


def test_duckdb_refuses_a_format_it_cannot_read_naming_the_key(tmp_path: Path) -> None:
    config = load_config(None, [f"workspace.root={tmp_path}", "data.format=unisrec", "data.engine=duckdb",
                                f"data.path={shared_dataset('amazon2018-scientific-unisrec')}"])
    with pytest.raises(BadInput, match=r"^data.engine: duckdb reads recbole_atomic, table and canonical data, "
                                       r"not unisrec; set data.engine=memory \(or auto\)$"):
        prepare.run(config)
