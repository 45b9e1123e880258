"""`seqrec-pipeline report` on a real run (a slice of ml-100k, tiny models): every section, the spread across
seeds, and the page as headless Chromium shows it (no failed request, no console error, images decode)."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.contracts.history import read_history
from pipeline.report import facts
from tests.align_support import write_ml100k_slice
from tests.browser_support import find_chromium, load_page
from tests.support import TINY_MODEL, shared_dataset

SEEDS = (1, 2)  # stage two re-trained with these seeds beside the main job's


def _sets(*settings: str) -> list[str]:
    return [part for setting in settings for part in ("--set", setting)]


def _cli(*args: str) -> list[str]:
    done = CliRunner().invoke(app, list(args))
    assert done.exit_code == 0, done.output
    return done.stdout.strip().splitlines()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> dict:
    """The main job (`run`) on 120 movies of ml-100k with SAID on the tiny LM behind the whitening adapter, two
    more seeds and an ID-only run of two members."""
    base = tmp_path_factory.mktemp("report")
    raw = write_ml100k_slice(shared_dataset("ml-100k"), base / "raw", items=120)
    settings = [f"workspace.root={base / 'art'}", f"data.path={raw}", "data.kcore_users=0", "data.kcore_items=0",
                "align.method=said", f"align.lm={tiny_llama}", "align.said.lr=0.05", "align.said.warmup_steps=2",
                "align.said.epochs=2", "align.evidence.items=16", "align.evidence.neighbour_queries=50",
                "downstream.model.adapter=whiten", "report.examples=2", *TINY_MODEL,
                "downstream.train.epochs=4"]
    printed = _cli("run", *_sets(*settings))
    runs = [Path(printed[2])] + [Path(_cli("train-downstream", *_sets(*settings, f"downstream.train.seed={seed}"))[-1])
                                 for seed in SEEDS]
    runs.append(Path(_cli("train-downstream", *_sets(*settings, "downstream.embeddings=null",
                                                     "downstream.model.members=2"))[-1]))
    return {"settings": settings, "printed": printed, "runs": runs, "root": base / "art"}


def _images(html: str) -> list[Image.Image]:
    """Every inline image of the page, decoded (PIL raises on a corrupt PNG)."""
    found = []
    for payload in re.findall(r'src="data:image/png;base64,([^"]+)"', html):
        image = Image.open(io.BytesIO(base64.b64decode(payload)))
        image.load()
        found.append(image)
    return found


def test_run_ends_with_a_self_contained_report_of_every_stage(workspace: dict) -> None:
    printed, root = workspace["printed"], workspace["root"]
    dataset_dir, embeddings_dir, downstream_dir = (Path(line) for line in printed[:3])
    report = Path(printed[-1])
    assert report == root / "reports" / "ml-100k" / f"{downstream_dir.name}.html"
    html = report.read_text()
    for anchor in ("runs", "dataset", "stage-one", "stage-two", "config"):
        assert f'<section id="{anchor}">' in html
    images = _images(html)
    assert len(images) == 6  # distributions, SAID loss, prefix evidence, map, stage-two curves, test metrics
    for image in images:
        assert image.width >= 800 and np.asarray(image.convert("L")).std() > 10  # drawn on, not blank
    # offline: nothing is fetched; each run id is linked to its folder
    assert not re.search(r'(src|href)="(https?:)?//', html)
    links = {Path(href.removeprefix("file://")) for href in re.findall(r'href="(file://[^"]+)"', html)}
    assert links == {dataset_dir.resolve(), embeddings_dir.resolve(), downstream_dir.resolve()}
    # neighbours: report.examples random and as many popular items, five neighbours each
    assert html.count("<b>random:</b>") == 2 and html.count("<b>popular:</b>") == 2
    assert len(re.findall(r'<ol class="nn">(?:<li>.*?</li>){5}</ol>', html)) == 4
    # the curves drawn are the ones kept in the run folders
    steps = json.loads((embeddings_dir / "manifest.json").read_text())["training"]["steps"]
    assert len(read_history(embeddings_dir)) == steps and f"{steps:,} optimizer steps" in html
    assert [h["epoch"] for h in read_history(downstream_dir)] == [1, 2, 3, 4]


def test_a_comparison_shows_each_variant_across_its_seeds(workspace: dict) -> None:
    runs = workspace["runs"]
    out = workspace["root"] / "compare.html"
    printed = _cli("report", *map(str, runs), "--out", str(out), *_sets(*workspace["settings"]))
    assert Path(printed[-1]) == out
    html = out.read_text()
    assert len(_images(html)) == 3  # bars with the spread, validation curves, dataset distributions
    metrics = [json.loads((run / "metrics.json").read_text()) for run in runs]
    said = [m["model"]["test"]["ndcg@10"] for m in metrics[:3]]
    row = re.search(r"<td>sasrec on said</td><td class=\"num\">(\d+)</td>(.*?)</tr>", html)
    assert row is not None and row.group(1) == str(1 + len(SEEDS))
    assert f"{np.mean(said):.4f} ± {np.std(said, ddof=1):.4f}" in row.group(2)
    assert re.search(r"<td>sasrec x2 on ID only</td><td class=\"num\">1</td>", html)
    assert f"{metrics[0]['popularity']['test']['ndcg@10']:.4f} ± 0.0000" in html


def test_the_report_opens_in_headless_chromium(workspace: dict, tmp_path: Path) -> None:
    browser = find_chromium()
    if browser is None:
        pytest.skip("no chromium on PATH: scripts/setup.sh installs Debian's `chromium` where apt-get can")
    report = Path(workspace["printed"][-1])
    page = load_page(browser, report.resolve().as_uri(), 1280, 2400)
    assert page.failed_requests == [] and page.console_errors == []
    assert len(page.images) == 6 and all(i["complete"] and i["width"] > 0 for i in page.images)
    shot = Image.open(io.BytesIO(page.screenshot))
    assert shot.size == (1280, 2400)
    assert np.asarray(shot.convert("L")).std() > 20  # text and figures, not an empty page
    # the same check fails on a page that reaches out: the report's policy blocks the request, visibly
    leaky = tmp_path / "leaky.html"
    leaky.write_text(report.read_text().replace("</body>", '<img src="http://example.invalid/x.png"></body>'))
    caught = load_page(browser, leaky.as_uri(), 1280, 800)
    assert caught.failed_requests and caught.console_errors


def test_report_refuses_a_run_that_is_not_downstream(workspace: dict) -> None:
    embeddings_dir = workspace["printed"][1]
    done = CliRunner().invoke(app, ["report", embeddings_dir, *_sets(*workspace["settings"])])
    assert done.exit_code == 2 and "report takes downstream runs" in done.output


def test_the_map_keeps_the_most_frequent_first_values_and_greys_the_rest() -> None:
    assert facts.first_value("Action Comedy", " ") == "Action" and facts.first_value("  ", " ") is None
    rng = np.random.default_rng(0)
    values = ["a b"] * 5 + ["b"] * 3 + ["c"] * 2 + [None] * 2
    mapped = facts.embedding_map(rng.normal(size=(12, 6)), [facts.first_value(v, " ") for v in values], "genre",
                                 top=2, max_items=12, seed=0)
    assert mapped.legend == ["a", "b", facts.OTHER]
    assert sorted(mapped.labels) == sorted(["a"] * 5 + ["b"] * 3 + [facts.OTHER] * 4)
    assert mapped.coords.shape == (12, 2) and mapped.explained[0] >= mapped.explained[1] > 0
    spread = facts.Spread("x", [0.1, 0.2, 0.3])
    assert spread.mean == pytest.approx(0.2) and spread.std == pytest.approx(0.1)
