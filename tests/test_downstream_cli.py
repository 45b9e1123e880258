import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from pipeline.cli import app
from tests.support import REPO, TINY_MODEL, shared_dataset, write_embeddings_run

LM_PACKAGES = ("transformers", "sentence_transformers", "gguf", "llama_cpp")


def _sets(root: Path, *extra: str) -> list[str]:
    args = [f"workspace.root={root}", "data.name=e2e", f"data.path={shared_dataset('ml-100k')}",
            "data.kcore_items=20", "data.max_history=20", *TINY_MODEL, *extra]
    return [part for arg in args for part in ("--set", arg)]


def test_prepare_train_evaluate_recommend_through_the_cli(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    runner = CliRunner()
    prepared = runner.invoke(app, ["prepare", *_sets(root)])
    assert prepared.exit_code == 0, prepared.output
    write_embeddings_run(root, (root / "datasets" / "e2e" / "latest").resolve(), 16)  # stage one's output

    trained = runner.invoke(app, ["train-downstream", *_sets(root), "--log-format", "json"])
    assert trained.exit_code == 0, trained.output
    run_dir = Path(trained.stdout.strip().splitlines()[-1])
    assert json.loads((run_dir / "manifest.json").read_text())["embeddings_run_id"] == "hash0001"
    reported = [json.loads(line) for line in trained.stderr.splitlines() if line.startswith('{"event": "evaluated"')]
    stored = json.loads((run_dir / "metrics.json").read_text())
    assert len(reported) == 1 and reported[0]["test"] == stored["model"]["test"]  # the figures land on the console
    assert reported[0]["message"].startswith(f"test NDCG@10 {stored['model']['test']['ndcg@10']:.4f}, Recall@10 ")

    evaluated = runner.invoke(app, ["evaluate", *_sets(root, "downstream.evaluate.mask_history=true")])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout)
    assert report["protocol"]["mask_history"] is True and report["run_dir"] == str(run_dir)
    assert report["model"]["test"]["ndcg@10"] >= stored["model"]["test"]["ndcg@10"]  # masking only removes competitors

    recommended = runner.invoke(app, ["recommend", *_sets(root, "recommend.k=5"), "--user", "1", "--user", "7"])
    assert recommended.exit_code == 0, recommended.output
    rows = pq.read_table(Path(recommended.stdout.strip()) / "recommendations.parquet").to_pylist()
    assert [row["user_id"] for row in rows] == ["1", "7"] and all(len(row["item_ids"]) == 5 for row in rows)

    unknown = runner.invoke(app, ["recommend", *_sets(root), "--user", "nobody"])
    assert unknown.exit_code == 2 and "unknown user ids" in unknown.output


def test_train_downstream_loads_no_language_model_code(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    assert CliRunner().invoke(app, ["prepare", *_sets(root)]).exit_code == 0
    write_embeddings_run(root, (root / "datasets" / "e2e" / "latest").resolve(), 16)
    harness = (
        "import runpy, sys\n"
        f"sys.argv = ['seqrec-pipeline', 'train-downstream', *{_sets(root, 'downstream.train.epochs=1')!r}]\n"
        "try:\n    runpy.run_module('pipeline.cli', run_name='__main__')\n"
        "except SystemExit as stop:\n    print('EXIT', stop.code)\n"
        f"print('LM_MODULES', sorted(m for m in sys.modules if m.split('.')[0] in {LM_PACKAGES!r}))\n")
    done = subprocess.run([sys.executable, "-c", harness], cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert "EXIT 0" in done.stdout, done.stderr[-2000:]
    assert "LM_MODULES []" in done.stdout
    assert (root / "downstream" / "e2e" / "latest" / "model.safetensors").is_file()
