"""`python -m benchmarks` (listing, running, the README table) and benchmark arguments failing like the CLI's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks._catalog import BENCHMARKS, MISSING, Figure, render
from benchmarks._table import README, SCALE_BEGIN, TOP_README, render_readme, render_top_readme
from pipeline.errors import EXIT_BAD_INPUT
from tests.bench_support import run_benchmark
from tests.support import REPO


def benchmarks_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=REPO, capture_output=True, text=True,
                          check=False)


def test_the_committed_benchmarks_readme_is_the_rendering_of_the_result_files() -> None:
    assert README.read_text() == render_readme(), "run `python -m benchmarks table` and commit benchmarks/README.md"
    top = TOP_README.read_text()
    assert SCALE_BEGIN in top and top == render_top_readme(top), "run `python -m benchmarks table` and commit README.md"


def test_a_row_quotes_its_result_file_and_a_missing_one_says_so(tmp_path: Path) -> None:
    record = {"p50_ms": 1.234, "p99_ms": 2.5, "target_p99_ms": 5.0, "items": 1000, "index": "HNSW M=8",
              "date": "2026-11-30T12:34:56+00:00", "git_commit": "0123456789abcdef" * 2 + "01234567",
              "command": "python -m benchmarks.recommend_latency --items 1000"}
    (tmp_path / "recommend_latency.json").write_text(json.dumps(record))
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "said_variants.md").write_text("# SAID variants, by hand\n\nbody\n")
    text = render_readme(tmp_path, notes)
    row = next(line for line in text.splitlines() if line.startswith("| recommend_latency |"))
    assert "p50 1.23 ms, p99 2.50 ms" in row and "`0123456789ab`" in row and "2026-11-30 12:34" in row
    assert "[recommend_latency.json](results/recommend_latency.json)" in row
    assert "| prepare_bench | prepare, — generated interactions | not measured yet |" in text
    assert "- [said_variants.md](notes/said_variants.md): SAID variants, by hand" in text


def test_a_headline_shows_figures_a_run_left_out_as_missing() -> None:
    figure = Figure("x", "", "ours {ndcg10[ours]:.3f}, RecBole {ndcg10[recbole]:.3f}, fine-tuned {tuned:.2f}")
    assert render(figure.headline, {"ndcg10": {"ours": 0.05}, "tuned": None}) == \
        f"ours 0.050, RecBole {MISSING}, fine-tuned {MISSING}"


def test_the_listing_shows_every_benchmark_with_its_commands() -> None:
    done = benchmarks_cli()
    assert done.returncode == 0, done.stderr
    for benchmark in BENCHMARKS:
        assert f"{benchmark.name} (expected: {benchmark.expected}; last result: " in done.stdout
        assert all(f"    {command}\n" in done.stdout + "\n" for command in benchmark.commands)


@pytest.mark.parametrize("args", [("run", "no_such_benchmark"), ("run",), ("frobnicate",)])
def test_a_wrong_request_to_the_launcher_is_one_line_and_exit_2(args: tuple[str, ...]) -> None:
    done = benchmarks_cli(*args)
    assert done.returncode == EXIT_BAD_INPUT
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1


def test_a_wrong_items_path_is_one_line_naming_the_argument(monkeypatch, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        run_benchmark(monkeypatch, tmp_path, "align_throughput", "--items", tmp_path / "nope.parquet")
    assert exit_.value.code == EXIT_BAD_INPUT
    assert capsys.readouterr().err == f"error: argument --items: {tmp_path / 'nope.parquet'}: no such file\n"


def test_a_bad_override_is_one_line_naming_the_key(monkeypatch, tmp_path, capsys) -> None:
    """The product's own BadInput (raised by the config loader) ends the benchmark as it ends the CLI."""
    with pytest.raises(SystemExit) as exit_:
        run_benchmark(monkeypatch, tmp_path, "daily_refresh", "--workspace", tmp_path / "ws",
                      "--set", "downstream.train.max_epochz=1")
    assert exit_.value.code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "downstream.train.max_epochz" in err and err.count("\n") == 1
