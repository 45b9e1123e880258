"""Train and test one RecBole 1.2.1 model on a UniSRec-format pre-split dataset; print one JSON line.

Runs under RecBole's own virtual environment (`benchmarks/recbole_setup.sh`), never ours:

    .venv-recbole/bin/python benchmarks/peers/recbole_run.py --data ../shared/datasets/amazon2018-scientific-unisrec/raw \
        --model SASRec --seed 2020 --hidden 300 --patience 10

Anomaly detection, which importing RecBole's sequential models switches on, is switched off again so
RecBole is timed at its best; the JSON says so.

A run to early stopping takes hours on a small CPU, so with `--state-dir` it survives a kill: after every
epoch (and its valid evaluation) the trainer's state goes to `last.pth` and the time spent so far to
`progress.json`; a rerun with the same arguments resumes from there (RecBole's own `resume_checkpoint`), and
`train_s` sums the finished epochs of every attempt. The epoch a kill interrupted is redone, not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # RecBole pickles its config into checkpoints


def link_dataset(raw: Path, stem: str, root: Path) -> None:
    """RecBole reads `<data_path>/<stem>/<stem>.<part>.inter`; link the pre-split files there."""
    folder = root / stem
    folder.mkdir(parents=True)
    for part in ("train", "valid", "test"):
        (folder / f"{stem}.{part}.inter").symlink_to((raw / f"{stem}.{part}.inter").resolve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--stem", default="Scientific")
    parser.add_argument("--model", default="SASRec", choices=["SASRec", "GRU4Rec"])
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--hidden", type=int, default=300)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=300, help="cap; `stopped_early` says whether patience ended it first")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--state-dir", type=Path, help="keep checkpoints here and resume from them (default: none)")
    args = parser.parse_args()

    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    with tempfile.TemporaryDirectory() as tmp:
        link_dataset(args.data, args.stem, Path(tmp))
        config = Config(model=args.model, dataset=args.stem, config_dict={
            "data_path": tmp, "checkpoint_dir": str(Path(tmp) / "saved"), "seed": args.seed, "reproducibility": True,
            "benchmark_filename": ["train", "valid", "test"], "alias_of_item_id": ["item_id_list"],
            "load_col": {"inter": ["user_id", "item_id_list", "item_id"]}, "train_neg_sample_args": None,
            "loss_type": "CE", "hidden_size": args.hidden, "embedding_size": args.hidden, "epochs": args.epochs,
            "stopping_step": args.patience, "train_batch_size": args.batch_size, "learning_rate": args.lr,
            "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO", "mode": "full"},
            "metrics": ["Recall", "NDCG", "MRR"], "topk": [10, 50], "valid_metric": "NDCG@10",
            "eval_batch_size": 4096, "show_progress": False, "device": "cpu", "use_gpu": False,
            "state": "WARNING",
        })
        init_seed(config["seed"], config["reproducibility"])
        dataset = create_dataset(config)
        train_data, valid_data, test_data = data_preparation(config, dataset)
        torch.autograd.set_detect_anomaly(False)
        model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        progress = Resumable(trainer, args.state_dir) if args.state_dir else None
        start = time.perf_counter()
        if not (progress and trainer.cur_step >= args.patience):  # an earlier attempt may have finished training
            trainer.fit(train_data, valid_data, saved=True, show_progress=False,
                        callback_fn=progress.epoch_done if progress else None)
        train_s = progress.state["train_s"] if progress else time.perf_counter() - start
        test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
        epochs = progress.state["epochs"] if progress else len(trainer.train_loss_dict)
        # cur_step counts the epochs since the best valid score.
        stopped_early = trainer.cur_step >= args.patience
    print(json.dumps({
        "model": args.model, "seed": args.seed, "train_s": round(train_s, 2),
        "epochs": epochs, "max_epochs": args.epochs, "stopped_early": stopped_early,
        "s_per_epoch": round(train_s / max(epochs, 1), 2),
        "best_valid_ndcg10": float(trainer.best_valid_score), "test": {k: float(v) for k, v in test.items()},
        "attempts": progress.state["attempts"] if progress else 1,
        "train_samples": len(train_data.dataset), "anomaly_detection": "off (switched off after import)",
        "torch_threads": torch.get_num_threads(), "python": sys.version.split()[0],
    }))


class Resumable:
    """Saves the trainer after every validated epoch and restores it on the next attempt."""

    def __init__(self, trainer: Any, folder: Path) -> None:
        self.trainer, self.folder = trainer, folder
        folder.mkdir(parents=True, exist_ok=True)
        self.progress_file, self.last = folder / "progress.json", folder / "last.pth"
        self.state: dict[str, Any] = {"epochs": 0, "train_s": 0.0, "attempts": 0}
        if self.last.is_file() and self.progress_file.is_file():
            self.state = json.loads(self.progress_file.read_text())
            trainer.resume_checkpoint(self.last)
            print(f"resumed after epoch {self.state['epochs'] - 1} ({self.state['train_s']:.0f} s so far)",
                  file=sys.stderr, flush=True)
        self.state["attempts"] += 1
        trainer.saved_model_file = str(folder / "best.pth")  # resume_checkpoint points it at last.pth
        self.attempt_start, self.done_before = time.perf_counter(), self.state["train_s"]

    def epoch_done(self, epoch_idx: int, valid_score: float) -> None:
        """RecBole's end-of-epoch callback, called after early stopping has booked the epoch."""
        partial = self.last.with_suffix(".partial")
        self.trainer._save_checkpoint(epoch_idx, verbose=False, saved_model_file=str(partial))
        os.replace(partial, self.last)
        self.state.update(epochs=epoch_idx + 1, train_s=self.done_before + time.perf_counter() - self.attempt_start)
        written = self.progress_file.with_suffix(".partial")
        written.write_text(json.dumps(self.state))
        os.replace(written, self.progress_file)  # the checkpoint and its bookkeeping are each replaced whole
        print(f"epoch {epoch_idx}: valid NDCG@10 {valid_score:.4f}, {self.state['train_s']:.0f} s so far, "
              f"{self.trainer.cur_step} epochs without a better score", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
