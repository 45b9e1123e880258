"""docs/your-own-data.md, run as written: its config and commands on a generated catalog of two CSV files
(item_id,title and user_id,item_id: no genre column, no timestamp), with tiny models in place of the real ones."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from tests.support import REPO, TINY_MODEL, shared_dataset

GUIDE = REPO / "docs" / "your-own-data.md"


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", GUIDE.read_text(), flags=re.DOTALL)


def _write_catalog(folder: Path) -> None:
    """The 120 most-rated ml-100k movies as `item_id,title`, their ratings as `user_id,item_id` in time order."""
    source = shared_dataset("ml-100k")
    rows = [line.split("\t") for line in (source / "ml-100k.inter").read_text(encoding="latin-1").splitlines()[1:]]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[1]] = counts.get(row[1], 0) + 1
    kept = set(sorted(counts, key=lambda item: -counts[item])[:120])
    titles = {line.split("\t")[0]: line.split("\t")[1]
              for line in (source / "ml-100k.item").read_text(encoding="latin-1").splitlines()[1:]}
    folder.mkdir(parents=True)
    (folder / "items.csv").write_text("item_id,title\n" + "".join(f'{item},"{titles[item]}"\n' for item in sorted(kept)))
    ordered = sorted((float(row[3]), n, row[0], row[1]) for n, row in enumerate(rows) if row[1] in kept)
    (folder / "interactions.csv").write_text("user_id,item_id\n" + "".join(f"{u},{i}\n" for _, _, u, i in ordered))


def test_the_guide_runs_as_written(tmp_path: Path, tiny_bert: Path, monkeypatch) -> None:
    config = yaml.safe_load(_blocks("yaml")[0])
    _write_catalog(tmp_path / config["data"]["path"])
    (tmp_path / "my-data.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)  # the config's paths are relative, as a user's would be
    tiny = [f"align.encoder={tiny_bert}", *TINY_MODEL, "downstream.train.epochs=2"]
    outputs = []
    for line in _blocks("bash")[0].strip().splitlines():
        args = line.split()
        assert args[0] == "seqrec-pipeline", line
        done = CliRunner().invoke(app, [*args[1:], *[a for key in tiny for a in ("--set", key)]])
        assert done.exit_code == 0, f"{line}\n{done.output}"
        outputs.append(done.output)
    dry, full, id_only, status = outputs
    assert "align: no embeddings run yet: full alignment of 120 items" in dry
    assert "the items have no column 'class'; the neighbour check is skipped" in full
    assert "interactions removed:" in full and "test NDCG@10" in full and "test NDCG@10" in id_only
    assert "align: catalog unchanged since run" in status
    recommendations = pq.read_table(tmp_path / "artifacts/recommendations/my-shop/latest/recommendations.parquet")
    lists = recommendations.column("item_ids").to_pylist()  # a user who has seen most of 120 items gets fewer than 10
    assert recommendations.num_rows > 900 and max(map(len, lists)) == 10 and min(map(len, lists)) > 0
