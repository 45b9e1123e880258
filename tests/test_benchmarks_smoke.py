"""The smoke tier: every benchmark at tiny sizes, through the code path of its full run.

Each test runs one benchmark's `main` (or `python -m benchmarks run`) on small real data with tiny models
built from real configs and tokenizers, writes its result file to a temporary folder and checks the
figures its README row quotes. A benchmark module without a test named `test_<module>_smoke` here fails
`test_every_benchmark_has_a_smoke_test`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import prepare_bench
from benchmarks._catalog import by_name
from benchmarks._results import RESULTS_ENV
from pipeline import prepare
from pipeline.config import load_config
from stages.align import said
from tests.bench_support import BENCHMARKS_DIR, benchmark_modules, published, run_benchmark
from tests.support import REPO, shared_dataset, write_embeddings_run

SCIENTIFIC = "amazon2018-scientific-unisrec"
# Users with 20+ interactions: Scientific's 8,442 users become 106 (1,761 items), Office's 1,005 users.
FEW_USERS = ("--set", "data.kcore_users=20", "--set", "data.split=leave_one_out")


def test_every_benchmark_has_a_smoke_test() -> None:
    modules = benchmark_modules()
    assert modules, "no benchmark modules found"
    assert {name for name in by_name() if not (BENCHMARKS_DIR / f"{name}.sh").is_file()} == modules
    assert {m for m in modules if f"test_{m}_smoke" not in globals()} == set()


def items_parquet(small_dataset: Path) -> Path:
    return next(small_dataset.glob("*/items.parquet"))


def test_evaluation_throughput_smoke(monkeypatch, tmp_path) -> None:
    results = run_benchmark(monkeypatch, tmp_path, "evaluation_throughput", "--users", 300, "--items", 400,
                            "--dim", 16, "--batch-size", 128, "--peak-size", 256)
    record = published(results, "evaluation_throughput", "evaluation_throughput")
    assert (record["users"], record["items"]) == (300, 400)
    # The model is the product's default SASRec, whatever settings pipeline.yaml gains.
    assert record["model"] == {**load_config(None).downstream.model.model_dump(mode="json"), "hidden_size": 16}
    assert record["users_per_s"] > 0 and 0 < record["fraction_of_matmul_peak"]


def test_recommend_latency_smoke(tmp_path) -> None:
    """Through `python -m benchmarks run`: the documented command, with smaller sizes appended."""
    env = {**os.environ, RESULTS_ENV: str(tmp_path)}
    subprocess.run([sys.executable, "-m", "benchmarks", "run", "recommend_latency", "--", "--items", "300",
                    "--calls", "60"], cwd=REPO, env=env, check=True, capture_output=True)
    record = published(tmp_path, "recommend_latency", "recommend_latency")
    assert record["command"] == "python -m benchmarks.recommend_latency --items 300 --calls 60"
    assert (record["items"], record["calls"]) == (300, 60)
    assert 0 < record["p50_ms"] <= record["p99_ms"]


def test_prepare_bench_smoke(monkeypatch, tmp_path) -> None:
    results = run_benchmark(monkeypatch, tmp_path, "prepare_bench", "--rows", 3000, "--users", 200, "--items", 100,
                            "--repeats", 2, "--engine", "duckdb", "--memory-limit-gib", 1)
    record = published(results, "prepare_bench", "prepare_bench")
    assert record["rows"] == 3000 and len(record["repeats_wall_s"]) == 2
    assert (record["engine"], record["memory_limit_gib"]) == ("duckdb", 1)
    assert record["rows_per_s"] > 0 and record["peak_rss_gib"] > 0
    assert [prepare_bench.result_name(rows) for rows in (3000, 10**7, 10**8)] == [
        "prepare_bench", "prepare_bench", "prepare_100m"]  # each size above 10M its own file


def test_item_encoding_smoke(monkeypatch, tmp_path, tiny_bert) -> None:
    results = run_benchmark(monkeypatch, tmp_path, "item_encoding", "--encoder", tiny_bert, "--items", 40,
                            "--memory-items", 300, "--chunk-items", 64, "--peak-size", 256)
    record = published(results, "item_encoding", "item_encoding")
    assert record["model"] == f"{tiny_bert} (2 layers, hidden 32)"
    assert (record["items"], record["memory_items"]) == (40, 300)
    assert record["items_per_s"] > 0 and record["mean_tokens_per_item"] > 5  # title + four attributes


def test_align_throughput_smoke(monkeypatch, tmp_path, tiny_llama, small_dataset) -> None:
    """The optimised loop it times is the product's own step (`said.train_step`), not a copy of it."""
    steps, product_step = [], said.train_step

    def counted(*args: object) -> said.Step:
        steps.append(product_step(*args))
        return steps[-1]

    monkeypatch.setattr(said, "train_step", counted)
    results = run_benchmark(monkeypatch, tmp_path, "align_throughput", "--items", items_parquet(small_dataset),
                            "--lm", tiny_llama, "--batch-size", 4, "--steps", 2, "--repeats", 2, "--peak-size", 256)
    record = published(results, "align_throughput", "align_throughput")
    assert (record["steps_per_repeat"], record["repeats"]) == (2, 2)
    assert len(steps) == (2 + 1) * 2 and all(0 < step.items <= 4 < step.tokens for step in steps)  # + a warm-up
    assert record["tokens_per_s"] > 0 and record["naive_tokens_per_s"] > 0


def test_align_scale_smoke(monkeypatch, tmp_path, tiny_llama) -> None:
    """Two processes under accelerate launch: only the MLP is all-reduced, each process writes its own part."""
    results = run_benchmark(monkeypatch, tmp_path, "align_scale", "--items", 3000, "--steps", 3, "--lm", tiny_llama)
    record = published(results, "align_scale", "align_scale")
    assert (record["items"], record["processes"], record["steps"]) == (3000, 2, 3)
    assert record["parts"] == ["part-00001.parquet", "part-00002.parquet"]
    assert record["synchronised_parameters"] == ["mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"]
    assert 0 < record["allreduce_bytes_per_step"] < record["item_table_bytes"]
    assert record["items_per_s"] > 0 and 0 < record["peak_rss_gib_per_process"] < 4


def test_device_align_part_that_runs_on_a_cpu(monkeypatch, tmp_path, tiny_llama, small_dataset) -> None:
    """`device_align.sh` needs a GPU; its benchmark path (random weights of an architecture folder, config
    overrides, bf16 weights, no naive loop) runs here on the CPU."""
    results = run_benchmark(monkeypatch, tmp_path, "align_throughput", "--items", items_parquet(small_dataset),
                            "--architecture", tiny_llama, "--config-set", "num_hidden_layers=1",
                            "--mixed-precision", "bf16", "--lm-dtype", "bfloat16", "--skip-naive", "--batch-size", 4,
                            "--steps", 1, "--repeats", 1, "--peak-size", 256, "--name", "device_align/1.7b_b512_bf16w")
    record = published(results, "device_align/1.7b_b512_bf16w", "align_throughput")
    assert record["lm"].endswith("(random weights)") and record["config_overrides"] == ["num_hidden_layers=1"]
    assert "naive_tokens_per_s" not in record


def test_neighbour_check_smoke(monkeypatch, tmp_path) -> None:
    """On the real Scientific catalog, with bag-of-words hash vectors: texts sharing a brand share words."""
    root = tmp_path / "artifacts"
    config = load_config(REPO / "configs" / f"{SCIENTIFIC}.yaml",
                         [f"workspace.root={root}", f"data.path={shared_dataset(SCIENTIFIC)}"])
    dataset = prepare.run(config).run_dir
    run = write_embeddings_run(root, dataset, dim=64)
    results = run_benchmark(monkeypatch, tmp_path, "neighbour_check", "--runs", f"text={run}", "--queries", 2000)
    record = published(results, "neighbour_check", "neighbour_check", complete=False)  # one run of three
    assert record["runs"]["text"]["brand"]["queries"] == 2000
    assert record["runs"]["text"]["brand"]["lift"] > 2


def test_downstream_vs_recbole_smoke(monkeypatch, tmp_path, tiny_bert) -> None:
    """Our side only: RecBole runs in its own venv (`benchmarks/recbole_setup.sh`), absent here."""
    shared_dataset(SCIENTIFIC)
    results = run_benchmark(
        monkeypatch, tmp_path, "downstream_vs_recbole", "--workspace", tmp_path / "ws", "--seeds", 1,
        "--max-epochs", 1, "--recbole-seeds", 0, "--recbole-models", "SASRec", "--variants", "ours_id_sasrec",
        "--set", f"align.encoder={tiny_bert}", "--set", "align.batch_size=256", "--set", "downstream.model.hidden_size=16",
        "--set", "downstream.model.feedforward_size=32", "--set", "downstream.model.max_length=10", *FEW_USERS)
    record = published(results, "downstream_vs_recbole", "downstream_vs_recbole", complete=False)
    assert record["summary"]["ours_id_sasrec"]["epochs"] == [1]
    assert 0 <= record["ndcg10"]["ours_id_sasrec"] <= 1 and record["ndcg10"]["popularity"] > 0
    assert "recbole_sasrec" not in record["ndcg10"]


@pytest.mark.slow
def test_recformer_transfer_smoke(monkeypatch, tmp_path, tiny_bert) -> None:
    """Slow tier: five CLI runs, three of them starting torch and an encoder (about 15 s each on this shared
    machine), take about a minute however small the data; it runs with `pytest -m slow`."""
    shared_dataset(SCIENTIFIC)
    shared_dataset("amazon2014-office-lcrec")
    results = run_benchmark(
        monkeypatch, tmp_path, "recformer_transfer", "--workspace", tmp_path / "ws", "--start-from", tiny_bert,
        "--pretrain-steps", 1, "--finetune-seeds", 0, "--mixed-precision", "no",
        "--set", "recformer.pretrain.batch_size=4", "--set", "recformer.max_items=3", "--set", "recformer.max_tokens=64",
        "--set", "recformer.encode.batch_size=256", *FEW_USERS)
    record = published(results, "recformer_transfer", "recformer_transfer", complete=False)  # no fine-tuning seeds
    assert record["pretraining"]["steps"] == 1 and record["seeds"] == 0
    assert 0 <= record["zero_shot_ndcg10"] <= 1 and record["popularity_ndcg10"] > 0


@pytest.mark.slow
def test_daily_refresh_smoke(monkeypatch, tmp_path, tiny_llama) -> None:
    """Slow tier: three days are about twelve CLI runs, each starting torch (4-5 s here), so a minute or
    more however small the models; it runs with `pytest -m slow`."""
    results = run_benchmark(monkeypatch, tmp_path, "daily_refresh", "--workspace", tmp_path / "ws",
                            "--set", f"align.lm={tiny_llama}", "--set", "align.said.max_steps=3",
                            "--set", "downstream.train.epochs=1")
    record = published(results, "daily_refresh", "daily_refresh")
    assert record["unchanged_rows_identical"]
    assert record["day2_items_trained"] == record["day2_new_or_changed_items"] > 0


def test_large_catalog_smoke(monkeypatch, tmp_path) -> None:
    """A catalog past `full_softmax_max_items` (lowered for the smoke run): `auto` trains the sampled softmax."""
    results = run_benchmark(monkeypatch, tmp_path, "large_catalog", "--items", 600, "--users", 150, "--length", 8,
                            "--epochs", 1, "--workspace", tmp_path / "ws", "--set", "downstream.train.full_softmax_max_items=100",
                            "--set", "downstream.model.hidden_size=16", "--set", "downstream.model.layers=1")
    record = published(results, "large_catalog", "large_catalog")
    assert (record["sampled_loss"], record["sampled_sampler"]) == ("sampled", "popularity")
    assert record["items"] > 100 and record["ce_epoch_s"] > 0 and 0 <= record["sampled_ndcg10"] <= 1


def test_quality_smoke(monkeypatch, tmp_path, tiny_bert) -> None:
    """ml-100k, IDs alone against averaged text + ID vectors, two seeds of three epochs on a tiny model; then IDs
    alone again (its runs reused), keeping the first invocation's text + ID figures."""
    shared_dataset("ml-100k")
    settings = ("--workspace", tmp_path / "ws", "--datasets", "ml100k", "--seeds", 2, "--jobs", 2,
                "--set", f"align.encoder={tiny_bert}", "--set", "align.batch_size=256",
                "--set", "downstream.train.epochs=3", "--set", "downstream.model.hidden_size=16",
                "--set", "downstream.model.max_length=10", "--set", "data.max_history=10")
    results = run_benchmark(monkeypatch, tmp_path, "quality", *settings, "--recipes", "id", "text_id_ema")
    record = published(results, "quality", "quality", complete=False)  # no Scientific or Office here
    runs = record["by_dataset"]["ml100k"]
    assert set(runs) == {"id", "text_id_ema"} and all(s["epochs"] == [3, 3] for s in runs.values())
    assert all(0 < s["seed_ensemble"]["ndcg@10"] <= s["seed_ensemble"]["ndcg@50"] <= 1 for s in runs.values())
    assert 0 < record["ml100k"]["id_sasrec_valid_ndcg10_epoch3"] <= 1 and record["ml100k"]["best_variant"] in runs

    first = tmp_path / "first.json"
    shutil.copy(results / "quality.json", first)
    again = published(run_benchmark(monkeypatch, tmp_path, "quality", *settings, "--recipes", "id", "--keep", first),
                      "quality", "quality", complete=False)
    kept = again["by_dataset"]["ml100k"]
    assert kept["text_id_ema"] == {**runs["text_id_ema"], "measured": {key: record[key] for key in (
        "git_commit", "date", "command")}}
    assert kept["id"] == runs["id"] and "measured" not in kept["id"]  # run again (reused), not kept
    assert sorted((r["recipe"], r["seed"]) for r in again["runs"]) == sorted((r["recipe"], r["seed"]) for r in record["runs"])
    assert again["ml100k"]["best_variant"] == record["ml100k"]["best_variant"]
    assert (record["kept_from_earlier"], again["kept_from_earlier"]) == (0, 1)


def test_fault_matrix_smoke(monkeypatch, tmp_path) -> None:
    """Two of the fault suite's tests instead of all of them: the log is counted into the published figures."""
    results = run_benchmark(monkeypatch, tmp_path, "fault_matrix", "--tests",
                            "tests/test_bad_input.py::test_a_folder_given_as_the_config_file",
                            "tests/test_store.py::test_an_empty_or_unreadable_lock_is_taken_over")
    record = published(results, "fault_matrix", "fault_matrix")
    assert (record["bad_inputs"], record["bad_inputs_exit2"], record["trials"], record["suite_exit_code"]) == (1, 1, 0, 0)
