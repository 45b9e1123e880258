"""`seqrec-pipeline recommend`: top-K items per user from a trained downstream run.

Batch mode scores users in batches (an exact matrix product, or the run's FAISS index) on today's data:
the latest dataset run's histories (each user's whole sequence) or a histories file, against every item
the model can score now, new items included (`current`). `Online` answers one history at a time, as a
serving process would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import torch

from pipeline import events
from pipeline.config import PipelineConfig, RecommendConfig
from pipeline.contracts import downstream as downstream_run
from pipeline.contracts.embeddings import Embeddings, read_embeddings
from pipeline.contracts.recommendations import recommendations_table, write_recommendations
from pipeline.errors import BadInput
from pipeline.run_ids import code_identity, stage_run_id
from pipeline.store import RunResult, publish_run, read_manifest, sha256_file, workspace_output
from pipeline.workspace import newest, sibling_output
from stages.downstream import kinds, runs
from stages.downstream.current import Current, on_current_data, read_histories
from stages.downstream.recommender import Recommender
from stages.downstream.sequences import Sequences, history_pairs, load_sequences, padded


def _drop_seen(candidates: np.ndarray, scores: np.ndarray, seen: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep each row's first k candidates that are not `seen` (both (n, C), candidates 0-based, -1 = none).

    Dropped slots come back as -1 with score -inf when a row has fewer than k left.
    """
    drop = seen | (candidates < 0)
    order = np.argsort(drop, axis=1, kind="stable")[:, :k]  # kept candidates first, in score order
    kept_candidates = np.take_along_axis(candidates, order, axis=1)
    kept_drop = np.take_along_axis(drop, order, axis=1)
    return np.where(kept_drop, -1, kept_candidates), np.where(kept_drop, -np.inf, np.take_along_axis(scores, order, axis=1))


def _seen_mask(pairs: tuple[np.ndarray, np.ndarray], candidates: np.ndarray, num_items: int) -> np.ndarray:
    """(n, C) bool: candidate (0-based) appears in its row's history pairs (1-based items)."""
    rows, items = pairs
    seen = np.unique(rows * (num_items + 1) + items)
    codes = np.arange(len(candidates))[:, None] * (num_items + 1) + candidates + 1
    return np.isin(codes, seen)


@torch.no_grad()
def top_k(current: Current, users: np.ndarray, config: RecommendConfig, max_length: int,
          index: faiss.Index | None) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) 0-based item indices (-1 = none left) and their float32 scores for `users`, in batches.

    Items that cannot be scored (`current.scoreable` false) are never recommended.
    """
    model, seqs = current.model, current.seqs
    k = min(config.k, int(current.scoreable.sum()))
    table = model.items.all_items()  # (N, H)
    blocked = torch.from_numpy(~current.scoreable)
    ends = seqs.split_end("all")
    out_items, out_scores = [], []
    for start in range(0, len(users), config.batch_size):
        batch = users[start:start + config.batch_size]
        history = torch.from_numpy(padded(seqs, batch, ends[batch], max_length))
        pairs = history_pairs(seqs, batch, ends[batch])
        extra = int(np.bincount(pairs[0], minlength=len(batch)).max()) if config.filter_history and len(pairs[0]) else 0
        width = min(k + extra, int(current.scoreable.sum()))
        vectors = model.user_vectors(history)  # (B, H)
        if index is None:
            scores, candidates = torch.topk((vectors @ table.T).masked_fill(blocked, -torch.inf), width, dim=1)
            scores, candidates = scores.numpy(), candidates.numpy()
        else:
            scores, candidates = index.search(np.ascontiguousarray(vectors.numpy(), dtype=np.float32), width)
        seen = _seen_mask(pairs, candidates, seqs.num_items) if config.filter_history else np.zeros_like(candidates, bool)
        candidates, scores = _drop_seen(candidates, scores, seen, k)
        out_items.append(candidates)
        out_scores.append(scores.astype(np.float32))
    return np.concatenate(out_items), np.concatenate(out_scores)


def select_users(user_ids: list[str], wanted: list[str] | None) -> np.ndarray:
    """Indices of the wanted users (all when None).

    Raises:
        BadInput: a wanted user is not in the dataset.
    """
    if wanted is None:
        return np.arange(len(user_ids))
    row_of = {user: row for row, user in enumerate(user_ids)}
    unknown = [user for user in wanted if user not in row_of]
    if unknown:
        raise BadInput(f"recommend.users: {len(unknown)} unknown user ids (e.g. {', '.join(unknown[:5])})")
    return np.array([row_of[user] for user in wanted], dtype=np.int64)


def _table(seqs: Sequences, users: np.ndarray, items: np.ndarray, scores: np.ndarray) -> pa.Table:
    item_ids = np.array(seqs.item_ids, dtype=object)
    keep = items >= 0
    return recommendations_table([seqs.user_ids[u] for u in users],
                                 [item_ids[row[ok]].tolist() for row, ok in zip(items, keep)],
                                 [row[ok].tolist() for row, ok in zip(scores, keep)])


def _embeddings_now(trained: runs.Trained) -> Embeddings | None:
    """Today's embeddings for a model that reads them: the newest run of the same method and width."""
    method, dim = trained.manifest.get("embeddings_method"), trained.manifest.get("embedding_dim")
    if trained.manifest.get("embeddings_run_id") is None or not isinstance(trained.model, Recommender):
        return None
    output = sibling_output(trained.run_dir, "embeddings")
    found = newest(output, lambda run: run.manifest.get("kind") == "embeddings"
                   and run.manifest.get("method") == method and run.manifest.get("dim") == dim)
    return None if found is None else read_embeddings(found.run_dir)


def _search_index(config: PipelineConfig, run_dir: Path, trained: runs.Trained, current: Current) -> faiss.Index | None:
    """The run's FAISS index when `recommend.search` asks for it and today's items are the ones it holds."""
    if config.recommend.search != "faiss":
        return None
    if current.seqs.item_ids != trained.seqs.item_ids:
        events.emit("exact_search", "recommend.search=faiss: today's items differ from the ones the run's index "
                    "holds; scoring every item exactly instead")
        return None
    return downstream_run.read_index(run_dir, trained.seqs.num_items, int(trained.model.items.all_items().shape[1]))


@events.in_stage("recommend")
def run(config: PipelineConfig, force: bool = False, run_dir: Path | None = None, dataset_dir: Path | None = None,
        embeddings_dir: Path | None = None, histories: Path | None = None) -> RunResult:
    """Write recommendations.parquet for `recommend.users` (or everyone) under `<root>/recommendations/<data.name>`.

    The model is `recommend.run` (or `run_dir`); histories are the latest dataset run's (or `dataset_dir`'s,
    or a `histories` file's) and candidates every item of today's catalog that the model can score.
    """
    if histories is not None and not histories.is_file():
        raise BadInput(f"{histories}: histories file not found (expected Parquet or CSV: user_id, item_id)")
    run_dir = run_dir or runs.resolve(workspace_output(config, "downstream"), config.recommend.run, "downstream")
    trained = kinds.load_trained(run_dir)
    # Today's data comes from the model's own workspace (the configured one, unless recommend.run names a run
    # folder elsewhere, e.g. a read-only copy); the recommendations go to the configured workspace.
    dataset_dir = dataset_dir or sibling_output(run_dir, "datasets").require_latest(
        "no dataset yet (run `seqrec-pipeline prepare` first)")
    embeddings = read_embeddings(embeddings_dir) if embeddings_dir else _embeddings_now(trained)
    current = on_current_data(trained, load_sequences(dataset_dir), embeddings)
    source = {"dataset_run_id": read_manifest(dataset_dir)["run_id"],
              "embeddings_run_id": None if embeddings is None else embeddings.run_id,
              "histories_sha256": None if histories is None else sha256_file(histories)}
    settings = config.recommend.model_dump(mode="json", exclude={"run"})
    run_id = stage_run_id("recommend", settings, trained.manifest["run_id"], source, code=code())
    events.making(run_id)

    def build(folder: Path) -> dict[str, Any]:
        seqs, facts = current.seqs, dict(current.facts)
        if histories is not None:
            seqs, from_file = read_histories(histories, current)
            facts.update(from_file)
        users = select_users(seqs.user_ids, config.recommend.users)
        scored = Current(current.model, seqs, current.scoreable, facts)
        items, scores = top_k(scored, users, config.recommend, trained.config.model.max_length,
                              _search_index(config, run_dir, trained, current))
        write_recommendations(folder, _table(seqs, users, items, scores))
        events.emit("recommended", f"top-{config.recommend.k} for {len(users):,} users over "
                    f"{facts['items_scoreable']:,} items ({facts['items_new_since_training']:,} new since training, "
                    f"{facts['items_left_out']:,} left out: no embedding or ID vector)", users=len(users), **facts)
        return {"kind": "recommendations", "code_identity": code(), "downstream_run_id": trained.manifest["run_id"],
                **runs.outside_facts(folder, downstream=run_dir), "users": len(users), "config": settings,
                **source, **facts}

    return publish_run(workspace_output(config, "recommendations"), run_id, build, force=force,
                       lock_wait_s=config.workspace.lock_wait_s, stale_lock_s=config.workspace.stale_lock_s)


def code() -> str:
    """The identity of the code that makes recommendation runs."""
    return code_identity(("stages.downstream.recommend",))


class Online:
    """Recommendations for one history at a time (a serving process keeps one of these loaded).

    Args:
        trained: a loaded downstream run.
        index: its item index (HNSW for speed), or None for an exact product.
    """

    def __init__(self, trained: runs.Trained, index: faiss.Index | None) -> None:
        self.trained, self.index = trained, index
        self.row_of = {item: row for row, item in enumerate(trained.seqs.item_ids)}
        with torch.no_grad():
            self.table = trained.model.items.all_items().numpy()  # (N, H)

    @torch.no_grad()
    def recommend(self, history: list[str], k: int, filter_history: bool) -> list[tuple[str, float]]:
        """Top-k (item id, score) after `history` (oldest first); unknown item ids are ignored."""
        ids = [self.row_of[item] + 1 for item in history if item in self.row_of]
        length = self.trained.config.model.max_length
        window = torch.zeros(1, length, dtype=torch.int64)
        recent = ids[-length:]
        if recent:
            window[0, -len(recent):] = torch.tensor(recent)
        vector = self.trained.model.user_vectors(window).numpy()  # (1, H)
        width = min(k + (len(set(ids)) if filter_history else 0), len(self.table))
        if self.index is None:
            scores = vector[0] @ self.table.T  # (N,)
            candidates = np.argpartition(-scores, width - 1)[:width]
            candidates = candidates[np.argsort(-scores[candidates], kind="stable")]
            scores = scores[candidates]
        else:
            found_scores, found = self.index.search(vector, width)
            candidates, scores = found[0], found_scores[0]
        seen = {i - 1 for i in ids} if filter_history else set()
        picks = [(self.trained.seqs.item_ids[c], float(s)) for c, s in zip(candidates, scores) if c >= 0 and c not in seen]
        return picks[:k]
