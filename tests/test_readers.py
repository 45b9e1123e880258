"""Every reader on real data (the shared datasets, exact published counts) and on small generated files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline import prepare
from pipeline.config import load_config
from pipeline.contracts.dataset import INTERACTIONS_FILE, ITEMS_FILE
from pipeline.errors import BadInput
from pipeline.ingest import amazon, unisrec
from tests.support import REPO, shared_dataset

FILTERS_OFF = ["data.kcore_users=0", "data.kcore_items=0", "data.dedup=none"]


def prepare_shared(tmp_path: Path, name: str, *overrides: str) -> tuple[dict, pa.Table, pa.Table]:
    """Prepare a shared dataset with its shipped config; returns the manifest, items and interactions."""
    config = load_config(REPO / "configs" / f"{name}.yaml",
                         [f"workspace.root={tmp_path / 'artifacts'}", f"data.path={shared_dataset(name)}", *overrides])
    result = prepare.run(config)
    return (result.manifest, pq.read_table(result.run_dir / ITEMS_FILE),
            pq.read_table(result.run_dir / INTERACTIONS_FILE))


def sequence(interactions: pa.Table, user: str) -> list[tuple[str, str]]:
    rows = [row for row in interactions.to_pylist() if row["user_id"] == user]
    return [(row["item_id"], row["split"]) for row in sorted(rows, key=lambda row: row["position"])]


@pytest.mark.parametrize(("name", "users", "items", "interactions"), [
    ("amazon2018-scientific-unisrec", 8_442, 4_385, 59_427),
    ("amazon2018-scientific-lcrec", 8_317, 4_344, 58_492),
    ("amazon2014-office-lcrec", 4_905, 2_420, 53_258),
    ("ml-100k", 943, 1_682, 100_000),
    ("ml-latest-small", 671, 9_066, 100_004),
])
def test_shared_dataset_counts_match_provenance(tmp_path: Path, name: str, users: int, items: int,
                                               interactions: int) -> None:
    manifest, items_table, inter = prepare_shared(tmp_path, name, *FILTERS_OFF)
    expected = {"users": users, "items": items, "interactions": interactions}
    assert manifest["counts"] == expected
    assert manifest["counts_raw"] == expected
    assert (items_table.num_rows, inter.num_rows) == (items, interactions)
    assert manifest["split_rows"]["test"] == users


def test_ml100k_shipped_config_filters_after_counting_the_raw_data(tmp_path: Path) -> None:
    manifest, _, _ = prepare_shared(tmp_path, "ml-100k")
    assert manifest["counts_raw"] == {"users": 943, "items": 1_682, "interactions": 100_000}
    assert manifest["counts"]["interactions"] + manifest["removed"]["kcore"] == 100_000


def test_unisrec_keeps_the_source_split_and_rebuilds_full_sequences(tmp_path: Path) -> None:
    manifest, items, inter = prepare_shared(tmp_path, "amazon2018-scientific-unisrec")
    assert manifest["split_source"] == "source"
    assert manifest["split_rows"] == {"train": 42_543, "valid": 8_442, "test": 8_442}
    # User 0 of user2index; items 0..13 of item2index, the last two its valid and test targets.
    first_user = sequence(inter, "ABW8NXS7SV55K")
    assert len(first_user) == 14
    assert first_user[0] == ("B00TNNWMXI", "train")
    assert first_user[-2:] == [("B00THZKC8Y", "valid"), ("B0147CJTSA", "test")]
    assert items.column_names == ["item_id", "source_text", "text"]
    first = items.filter(pc.equal(items.column("item_id"), "B0000223SI")).to_pylist()[0]
    assert first["text"].startswith("PORTER-CABLE 740000801") and first["text"].endswith("PORTER-CABLE.")


def test_unisrec_rebuilt_sequences_agree_with_every_test_history(tmp_path: Path) -> None:
    """Independently of the reader: each test row's history is the tail of the rebuilt sequence."""
    raw = shared_dataset("amazon2018-scientific-unisrec")
    _, _, inter = prepare_shared(tmp_path, "amazon2018-scientific-unisrec")
    items, users = (dict(reversed(line.split("\t")) for line in (raw / name).read_text().splitlines())
                    for name in ("Scientific.item2index", "Scientific.user2index"))
    rebuilt: dict[str, list[str]] = {}
    for row in sorted(inter.to_pylist(), key=lambda row: (row["user_id"], row["position"])):
        rebuilt.setdefault(row["user_id"], []).append(row["item_id"])
    for line in (raw / "Scientific.test.inter").read_text().splitlines()[1:]:
        user, history, target = line.split("\t")
        full = rebuilt[users[user]]
        assert full[-1] == items[target]
        assert full[:-1][-50:] == [items[index] for index in history.split()]


def write_unisrec(folder: Path, train: list[str], valid: list[str], test: list[str]) -> None:
    folder.mkdir()
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    for split, rows in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"toy.{split}.inter").write_text(header + "".join(row + "\n" for row in rows))
    (folder / "toy.text").write_text("item_id:token\ttext:token_seq\n" + "".join(f"A{i}\titem {i}\n" for i in range(5)))
    (folder / "toy.item2index").write_text("".join(f"A{i}\t{i}\n" for i in range(5)))
    (folder / "toy.user2index").write_text("U0\t0\n")


def test_unisrec_rows_that_break_the_sequence_are_named(make_config, tmp_path: Path) -> None:
    # Train is missing the row whose target is item 2, so the valid history does not continue the train rows.
    write_unisrec(tmp_path / "raw", train=["0\t0\t1"], valid=["0\t0 1 2\t3"], test=["0\t0 1 2 3\t4"])
    config = make_config("data.format=unisrec", f"data.path={tmp_path / 'raw'}")
    with pytest.raises(BadInput, match=r"toy.valid.inter: line 2: user 0's history ends with 2, not 1"):
        unisrec.read(config.data)


def test_unisrec_maps_indices_to_original_ids(make_config, tmp_path: Path) -> None:
    write_unisrec(tmp_path / "raw", train=["0\t0 1\t2", "0\t0\t1"], valid=["0\t0 1 2\t3"], test=["0\t0 1 2 3\t4"])
    raw = unisrec.read(make_config("data.format=unisrec", f"data.path={tmp_path / 'raw'}").data)
    assert raw.interactions.column("item_id").to_pylist() == ["A0", "A1", "A2", "A3", "A4"]
    assert raw.interactions.column("user_id").to_pylist() == ["U0"] * 5
    assert raw.interactions.column("split").to_pylist() == ["train", "train", "train", "valid", "test"]


def test_lcrec_keeps_list_order_and_cleans_html(tmp_path: Path) -> None:
    manifest, items, inter = prepare_shared(tmp_path, "amazon2014-office-lcrec")
    assert manifest["has_timestamps"] is False
    source = json.loads((shared_dataset("amazon2014-office-lcrec") / "Office.inter.json").read_text())
    assert [item for item, _ in sequence(inter, "1")] == [str(item) for item in source["1"]]
    assert [split for _, split in sequence(inter, "1")][-2:] == ["valid", "test"]
    phone = items.filter(pc.equal(items.column("item_id"), "2")).to_pylist()[0]
    assert phone["title"] == "AT&T 210 Corded Phone, Black, 1 Handset"
    assert phone["text"].startswith("title AT&T 210 Corded Phone, Black, 1 Handset brand AT&T categories ")


def test_movielens_reads_quoted_titles_and_genres(tmp_path: Path) -> None:
    manifest, items, inter = prepare_shared(tmp_path, "ml-latest-small", *FILTERS_OFF)
    assert manifest["has_timestamps"] is True
    by_id = {row["item_id"]: row for row in items.to_pylist()}
    assert by_id["11"]["title"] == "American President, The (1995)"
    assert by_id["1"]["genres"] == "Adventure, Animation, Children, Comedy, Fantasy"
    assert by_id["1"]["text"] == "title: Toy Story (1995)\ngenres: Adventure, Animation, Children, Comedy, Fantasy"
    user = inter.filter(pc.equal(inter.column("user_id"), "1")).sort_by("position")
    times = user.column("timestamp").to_pylist()
    assert times == sorted(times)


def test_table_reads_named_columns_from_csv_and_parquet(make_config, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "events.tsv").write_text("who\twhat\twhen\nu1\tb\t20\nu1\ta\t10\nu1\tc\t30\n")
    pq.write_table(pa.table({"what": ["a", "b", "c"], "name": ["A", "B", "C"], "year": [2001, 2002, 2003]}),
                   raw / "things.parquet")
    config = make_config("data.format=table", f"data.path={raw}", "data.interactions_file=events.tsv",
                         "data.items_file=things.parquet", "data.columns={user: who, item: what, timestamp: when}",
                         *FILTERS_OFF)
    result = prepare.run(config)
    inter = pq.read_table(result.run_dir / INTERACTIONS_FILE).sort_by("position")
    assert inter.column("item_id").to_pylist() == ["a", "b", "c"]  # sorted by time
    assert inter.column("split").to_pylist() == ["train", "valid", "test"]
    items = pq.read_table(result.run_dir / ITEMS_FILE).sort_by("item_id")
    assert items.column("text").to_pylist()[0] == "name: A\nyear: 2001"


def test_table_without_timestamps_keeps_row_order(make_config, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "interactions.csv").write_text("user_id,item_id\nu1,b\nu1,a\nu1,c\n")
    (raw / "items.csv").write_text("item_id,title\na,A\nb,B\nc,C\n")
    config = make_config("data.format=table", f"data.path={raw}", "data.columns.timestamp=null", *FILTERS_OFF)
    inter = pq.read_table(prepare.run(config).run_dir / INTERACTIONS_FILE).sort_by("position")
    assert inter.column("item_id").to_pylist() == ["b", "a", "c"]
    assert inter.column("timestamp").null_count == 3


REVIEWS = [{"reviewerID": "U1", "asin": "A1", "unixReviewTime": 300, "overall": 5.0},
           {"reviewerID": "U1", "asin": "A2", "unixReviewTime": 100},
           {"reviewerID": "U1", "asin": "A1", "unixReviewTime": 200}]
META_2014 = [{"asin": "A1", "title": "Stapler &amp; staples", "price": 3.5, "brand": "Acme",
              "categories": [["Office Products", "Office Supplies"], ["Office Products", "Staplers"]],
              "description": "A stapler."},
             {"asin": "A2", "title": "Pen", "categories": [["Office Products"]]}]
META_2018 = [{"asin": "A1", "title": "Stapler &amp; staples", "brand": "Acme",
              "category": ["Office Products", "Office Supplies", "Staplers"],
              "description": ["A stapler.", "Staples included."]},
             {"asin": "A2", "title": "Pen", "category": []}]


def write_lines(path: Path, lines: list[str]) -> None:
    data = "".join(line + "\n" for line in lines).encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def amazon_config(make_config, folder: Path, reviews: str, meta: str):
    return make_config("data.format=amazon", f"data.path={folder}", f"data.interactions_file={reviews}",
                       f"data.items_file={meta}", "data.text.template=key_value", *FILTERS_OFF)


def test_amazon_2014_shape_with_python_literal_metadata(make_config, tmp_path: Path) -> None:
    write_lines(tmp_path / "reviews.json.gz", [json.dumps(review) for review in REVIEWS])
    write_lines(tmp_path / "meta.json.gz", [repr(item) for item in META_2014])  # the 2014 dumps are `repr` dicts
    result = prepare.run(amazon_config(make_config, tmp_path, "reviews.json.gz", "meta.json.gz"))
    items = {row["item_id"]: row for row in pq.read_table(result.run_dir / ITEMS_FILE).to_pylist()}
    assert items["A1"]["categories"] == "Office Products, Office Supplies, Staplers"
    assert items["A1"]["text"] == ("title Stapler & staples brand Acme categories Office Products, Office Supplies, "
                                   "Staplers description A stapler.")
    assert items["A2"]["text"] == "title Pen categories Office Products"
    inter = pq.read_table(result.run_dir / INTERACTIONS_FILE).sort_by("position")
    assert inter.column("item_id").to_pylist() == ["A2", "A1", "A1"]
    assert [t.timestamp() for t in inter.column("timestamp").to_pylist()] == [100, 200, 300]  # epoch seconds in


def test_amazon_2018_shape_plain_json_lines(make_config, tmp_path: Path) -> None:
    write_lines(tmp_path / "reviews.json", [json.dumps(review) for review in REVIEWS])
    write_lines(tmp_path / "meta.json", [json.dumps(item) for item in META_2018] + [""])
    raw = amazon.read(amazon_config(make_config, tmp_path, "reviews.json", "meta.json").data)
    assert raw.items.to_pylist()[0] == {"item_id": "A1", "title": "Stapler &amp; staples", "brand": "Acme",
                                        "categories": "Office Products, Office Supplies, Staplers",
                                        "description": "A stapler. Staples included."}
    assert raw.interactions.num_rows == 3


def test_amazon_streams_in_batches(make_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(amazon, "BATCH_ROWS", 2)
    write_lines(tmp_path / "reviews.json", [json.dumps(review) for review in REVIEWS])
    write_lines(tmp_path / "meta.json", [json.dumps(item) for item in META_2018])
    raw = amazon.read(amazon_config(make_config, tmp_path, "reviews.json", "meta.json").data)
    assert raw.interactions.column("user_id").num_chunks == 2
    assert raw.interactions.column("item_id").to_pylist() == ["A1", "A2", "A1"]


@pytest.mark.parametrize(("line", "message"), [
    ('{"reviewerID": "U2", "unixReviewTime": 5}', r"reviews.json: line 2: no 'asin'"),
    ('{"reviewerID": "U2", "asin": "A1", "unixReviewTime": "soon"}', r"line 2: 'unixReviewTime' is not an integer"),
    ('{"reviewerID": "U2", "asin": ', r"line 2: neither a JSON object nor a Python dict literal"),
])
def test_amazon_bad_review_lines_are_named(make_config, tmp_path: Path, line: str, message: str) -> None:
    write_lines(tmp_path / "reviews.json", [json.dumps(REVIEWS[0]), line])
    write_lines(tmp_path / "meta.json", [json.dumps(item) for item in META_2018])
    with pytest.raises(BadInput, match=message):
        amazon.read(amazon_config(make_config, tmp_path, "reviews.json", "meta.json").data)


def test_amazon_truncated_gzip_is_named(make_config, tmp_path: Path) -> None:
    write_lines(tmp_path / "reviews.json.gz", [json.dumps(review) for review in REVIEWS * 50])
    data = (tmp_path / "reviews.json.gz").read_bytes()
    (tmp_path / "reviews.json.gz").write_bytes(data[: len(data) // 2])
    write_lines(tmp_path / "meta.json", [json.dumps(item) for item in META_2018])
    with pytest.raises(BadInput, match=r"reviews.json.gz: not readable"):
        amazon.read(amazon_config(make_config, tmp_path, "reviews.json.gz", "meta.json").data)


def test_filters_may_not_change_a_source_split(make_config, tmp_path: Path) -> None:
    # The valid target repeats an earlier item: de-duplication would silently drop it from the split.
    write_unisrec(tmp_path / "raw", train=["0\t0 1\t2", "0\t0\t1"], valid=["0\t0 1 2\t1"], test=["0\t0 1 2 1\t3"])
    settings = ["data.format=unisrec", f"data.path={tmp_path / 'raw'}", "data.kcore_users=0", "data.kcore_items=0"]
    with pytest.raises(BadInput, match=r"toy.train.inter: the filters would remove 1 valid/test rows"):
        prepare.run(make_config(*settings, "data.dedup=first"))
    assert prepare.run(make_config(*settings, "data.dedup=none")).manifest["split_rows"] == {
        "train": 3, "valid": 1, "test": 1}


def test_unisrec_empty_history_is_named(make_config, tmp_path: Path) -> None:
    write_unisrec(tmp_path / "raw", train=["0\t0\t1"], valid=["0\t0 1\t2"], test=["0\t\t3"])
    with pytest.raises(BadInput, match=r"toy.test.inter: line 2: user 0's history is empty"):
        unisrec.read(make_config("data.format=unisrec", f"data.path={tmp_path / 'raw'}").data)


@pytest.mark.parametrize(("inter_json", "message"), [
    (b'{\n "0": [1, 2],\n "1": [2 3]\n}', r"Office.inter.json: line 3: not valid JSON"),
    (b'{\n "0": [1, 2],\n "1": "2 3"\n}', r"Office.inter.json: user '1': expected a list of item ids"),
    (b'{\n "0": [1, 2],\n "\xe9": [2]\n}', r"Office.inter.json: line 3: not UTF-8 \(byte 0xe9\)"),
])
def test_lcrec_bad_json_is_named(make_config, tmp_path: Path, inter_json: bytes, message: str) -> None:
    (tmp_path / "Office.inter.json").write_bytes(inter_json)
    (tmp_path / "Office.item.json").write_text('{"1": {"title": "Pen"}, "2": {"title": "Ink"}}')
    with pytest.raises(BadInput, match=message):
        prepare.run(make_config("data.format=lcrec", f"data.path={tmp_path}"))


def test_table_attribute_without_a_text_form_is_named(make_config, tmp_path: Path) -> None:
    (tmp_path / "interactions.csv").write_text("user_id,item_id,timestamp\nu1,a,1\n")
    pq.write_table(pa.table({"item_id": ["a"], "tags": pa.array([{"x": 1}])}), tmp_path / "items.parquet")
    with pytest.raises(BadInput, match=r"items.parquet: column 'tags' of type struct<x: int64> cannot be read as text"):
        prepare.run(make_config("data.format=table", f"data.path={tmp_path}", "data.items_file=items.parquet"))
