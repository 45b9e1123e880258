from pathlib import Path

import numpy as np
import pytest

from pipeline.contracts.downstream import read_index
from pipeline.contracts.recommendations import read_recommendations
from pipeline.errors import BadInput
from stages.downstream import kinds, recommend, runs, train
from tests.support import write_embeddings_run


@pytest.fixture
def trained(workspace):
    """A config whose workspace holds one trained run (flat item index, so FAISS search is exact)."""
    config = workspace("downstream.train.epochs=1", "downstream.index.kind=flat", "recommend.k=7")
    write_embeddings_run(Path(config.workspace.root), runs.dataset_dir(config).resolve(), 16)
    run_dir = train.run(config).run_dir
    return config, kinds.load_trained(run_dir)


def _with(config, **recommend_changes):
    return config.model_copy(update={"recommend": config.recommend.model_copy(update=recommend_changes)})


def _read(result) -> list[dict]:
    return read_recommendations(result.run_dir).to_pylist()


def _histories(loaded) -> dict[str, set[str]]:
    seqs = loaded.seqs
    return {user: {seqs.item_ids[i - 1] for i in seqs.items[seqs.offsets[u]:seqs.offsets[u + 1]]}
            for u, user in enumerate(seqs.user_ids)}


def test_every_user_gets_k_distinct_unseen_items_in_score_order(trained) -> None:
    config, loaded = trained
    rows = _read(recommend.run(config))
    histories = _histories(loaded)
    assert len(rows) == len(loaded.seqs.user_ids)
    for row in rows:
        assert len(row["item_ids"]) == 7 == len(set(row["item_ids"]))
        assert not histories[row["user_id"]] & set(row["item_ids"])
        assert row["scores"] == sorted(row["scores"], reverse=True)
    unfiltered = _read(recommend.run(_with(config, filter_history=False)))
    assert any(histories[row["user_id"]] & set(row["item_ids"]) for row in unfiltered)


def test_faiss_search_agrees_with_the_exact_product(trained) -> None:
    config, _ = trained
    exact = _read(recommend.run(_with(config, users=["1", "10", "100"])))
    found = _read(recommend.run(_with(config, users=["1", "10", "100"], search="faiss")))
    assert [row["user_id"] for row in exact] == ["1", "10", "100"]
    assert [row["item_ids"] for row in found] == [row["item_ids"] for row in exact]
    np.testing.assert_allclose([row["scores"] for row in found], [row["scores"] for row in exact], rtol=1e-4)


def test_online_calls_match_the_batch_output(trained) -> None:
    config, loaded = trained
    batch = {row["user_id"]: row for row in _read(recommend.run(config))}
    seqs = loaded.seqs
    index = read_index(loaded.run_dir, seqs.num_items, 16)
    for online in (recommend.Online(loaded, None), recommend.Online(loaded, index)):
        for user in ("1", "42"):
            u = seqs.user_ids.index(user)
            history = [seqs.item_ids[i - 1] for i in seqs.items[seqs.offsets[u]:seqs.offsets[u + 1]]]
            picks = online.recommend(history, k=7, filter_history=True)
            assert [item for item, _ in picks] == batch[user]["item_ids"]


def test_unknown_users_are_named(trained) -> None:
    config, _ = trained
    with pytest.raises(BadInput, match=r"recommend.users: 1 unknown user ids \(e.g. nobody\)"):
        recommend.run(_with(config, users=["1", "nobody"]))
