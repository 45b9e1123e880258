from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import ModelConfig, TrainConfig, load_config
from pipeline.contracts.embeddings import align_to_items, read_embeddings
from pipeline.errors import BadInput
from stages.downstream.fit import negative_sampling
from stages.downstream.kinds import build_recommender
from stages.downstream.objective import Objective
from stages.downstream.recommender import Recommender
from stages.downstream.sequences import load_sequences, padded
from tests.support import write_embeddings_run

LENGTH = 10


def _config(**changes: object) -> ModelConfig:
    base = {"kind": "sasrec", "hidden_size": 16, "layers": 1, "heads": 2, "feedforward_size": None, "norm": "pre",
            "positions": "newest",
            "dropout": 0.1,
            "max_length": LENGTH,
            "pooling": "attention", "adapter": "linear", "id_embedding": False, "freeze_embeddings": True,
            "temperature": None, "members": 1}
    return ModelConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def data(small_dataset: Path, tmp_path_factory):
    dataset_dir = (small_dataset / "latest").resolve()
    seqs = load_sequences(dataset_dir)
    embeddings = read_embeddings(write_embeddings_run(tmp_path_factory.mktemp("emb"), dataset_dir, 24))
    vectors, has = align_to_items(embeddings, seqs.item_ids, allow_missing=False)
    users = np.flatnonzero(seqs.n_train >= 2)[:64]
    rows = torch.from_numpy(padded(seqs, users, seqs.split_end("train")[users], LENGTH + 1))
    return seqs, vectors, has, rows


@pytest.mark.parametrize(("changes", "loss", "with_embeddings"), [
    ({"kind": "sasrec"}, "ce", True),
    ({"kind": "sasrec", "norm": "post"}, "ce", False),  # RecBole's block layout, ID-only
    ({"kind": "gru4rec"}, "ce", True),
    ({"kind": "said_light", "pooling": "attention"}, "ce", True),
    ({"kind": "said_light", "pooling": "mean", "adapter": "mlp", "id_embedding": True}, "sampled", True),
    ({"kind": "sasrec", "adapter": "whiten", "id_embedding": True, "freeze_embeddings": False}, "ce", True),
    ({"kind": "gru4rec"}, "bce", False),  # the ID-only baseline
    ({"kind": "sasrec"}, "sampled-popularity", False),  # what `loss: auto` trains large catalogs with
    ({"kind": "sasrec", "adapter": "whiten", "id_embedding": True, "temperature": 0.07}, "ce", True),
    ({"kind": "sasrec", "adapter": "init"}, "ce", True),
    ({"kind": "sasrec", "adapter": "whiten", "id_embedding": True, "members": 2}, "ce", True),
    ({"kind": "gru4rec", "members": 3}, "sampled", False),
], ids=["sasrec", "sasrec-post-norm-id-only", "gru4rec", "said-attention", "said-mean-mlp-sampled",
        "sasrec-whiten-id-unfrozen", "gru4rec-id-only-bce", "sasrec-sampled-popularity-logq", "sasrec-cosine",
        "sasrec-semantic-id-start", "sasrec-two-members", "gru4rec-id-only-three-members-sampled"])
def test_each_model_learns_on_real_sequences(data, changes: dict, loss: str, with_embeddings: bool) -> None:
    seqs, vectors, has, rows = data
    torch.manual_seed(0)
    model = build_recommender(_config(**changes), seqs.num_items, vectors if with_embeddings else None, has if with_embeddings else None)
    sampling = None
    if loss == "sampled-popularity":
        loss, sampling = "sampled", negative_sampling(seqs, TrainConfig.model_construct(loss="sampled", sampler="popularity"))
        assert sampling.shape == (seqs.num_items,) and abs(float(sampling.sum()) - 1) < 1e-5
        assert sampling[int(np.argmax(seqs.train_counts()))] == sampling.max()  # popular items drawn most
    objective = Objective(model, loss, negatives=50, targets_per_batch=float((rows[:, :-1] != 0).sum()), sampling=sampling)
    optimizer = torch.optim.AdamW(objective.parameters(), lr=3e-2)

    def measured() -> float:  # the same negatives and no dropout, so before and after are comparable
        objective.eval()
        torch.manual_seed(1)
        with torch.no_grad():
            value = objective(rows[:, :-1], rows[:, 1:]).item()
        objective.train()
        return value

    before = measured()
    for _ in range(25):
        loss_value = objective(rows[:, :-1], rows[:, 1:])
        optimizer.zero_grad()
        loss_value.backward()
        optimizer.step()
    after = measured()
    assert np.isfinite(after) and after < 0.98 * before
    if with_embeddings and changes.get("freeze_embeddings", True) and changes.get("adapter") != "init":
        assert "items.table" not in model.state_dict()  # the frozen table is an input, not a weight


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_a_target_weighs_the_same_in_a_batch_of_short_or_long_histories(data, loss: str) -> None:
    """Length batching puts short and long histories in different batches: the two batches' losses must add
    up to the loss of one batch holding both, which a per-batch mean (the short batch's targets weighted
    up) does not."""
    seqs, vectors, has, rows = data
    torch.manual_seed(0)
    objective = Objective(build_recommender(_config(), seqs.num_items, vectors, has), loss, negatives=50, targets_per_batch=100.0).eval()
    short, long = rows[:32].clone(), rows[32:]
    short[:, :-4] = 0  # right-aligned windows of 3 history items

    def loss_of(batch: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(1)  # the same negatives for every call
        with torch.no_grad():
            return objective(batch[:, :-1], batch[:, 1:])

    assert (short[:, :-1] != 0).sum() < (long[:, :-1] != 0).sum()
    torch.testing.assert_close(loss_of(short) + loss_of(long), loss_of(torch.cat([short, long])), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("kind", "norm"), [("sasrec", "pre"), ("sasrec", "post"), ("gru4rec", "pre"),
                                            ("said_light", "pre")])
def test_a_position_never_sees_later_items(data, kind: str, norm: str) -> None:
    seqs, vectors, has, rows = data
    model = build_recommender(_config(kind=kind, norm=norm), seqs.num_items, vectors, has).eval()
    history = rows[:8, :-1].clone()
    changed = history.clone()
    changed[:, -1] = (changed[:, -1] % seqs.num_items) + 1
    with torch.no_grad():
        before, after = model(history), model(changed)
    torch.testing.assert_close(before[:, :-1], after[:, :-1])
    assert not torch.allclose(before[:, -1], after[:, -1])


@pytest.mark.parametrize(("kind", "positions"), [("sasrec", "newest"), ("sasrec", "oldest"), ("gru4rec", "newest"),
                                                 ("said_light", "newest")])
def test_a_history_reads_the_same_alone_or_padded_in_a_batch_of_longer_ones(data, kind: str, positions: str) -> None:
    """A batch pads each history on the left to its longest: a history's states may not depend on that padding."""
    seqs, vectors, has, rows = data
    torch.manual_seed(0)
    model = build_recommender(_config(kind=kind, positions=positions), seqs.num_items, vectors, has).eval()
    batch = rows[:8, 1:].clone()
    for row in range(8):
        batch[row, :row] = 0  # histories of 10, 9, ..., 3 items
    lengths = (batch != 0).sum(dim=1).tolist()
    with torch.no_grad():
        for module in model.sequence.modules():  # biases as training leaves them, which a padding step would feel
            for name, parameter in module.named_parameters(recurse=False):
                if "bias" in name:
                    parameter.uniform_(-1, 1)
        together = model(batch)
        for row, length in enumerate(lengths):
            torch.testing.assert_close(together[row, -length:], model(batch[row:row + 1])[0, -length:])


def test_items_without_an_embedding_get_an_id_vector(data) -> None:
    seqs, vectors, has, _ = data
    has = has.copy()
    has[:5] = False
    model = build_recommender(_config(), seqs.num_items, vectors, has)
    ids = torch.tensor([1, 6, 0])
    with torch.no_grad():
        out = model.items(ids)
        torch.testing.assert_close(out[0], model.items.ids.weight[1])
        torch.testing.assert_close(out[1], model.items.adapter(model.items.table[6]))
    assert not out[2].any()


@pytest.mark.parametrize(("feedforward_size", "width"), [(None, 64), (24, 24)])
def test_sasrec_feedforward_width_defaults_to_four_times_hidden(feedforward_size: int | None, width: int) -> None:
    model = build_recommender(_config(feedforward_size=feedforward_size), 10, None, None)
    assert {layer.linear1.out_features for layer in model.sequence.blocks.layers} == {width}


@pytest.mark.parametrize(("norm", "norm_first", "final"), [("pre", True, torch.nn.LayerNorm), ("post", False, torch.nn.Identity)])
def test_sasrec_blocks_normalise_before_or_after_as_configured(norm: str, norm_first: bool, final: type) -> None:
    model = build_recommender(_config(norm=norm, layers=2), 10, None, None)
    assert {layer.norm_first for layer in model.sequence.blocks.layers} == {norm_first}
    assert isinstance(model.sequence.norm, final)


@pytest.mark.parametrize(("positions", "same_as_a_short_history"), [("oldest", True), ("newest", False)])
def test_sasrec_positions_from_the_oldest_read_a_prefix_as_inference_reads_that_history(
        positions: str, same_as_a_short_history: bool) -> None:
    """Training reads target t + 1 off position t of a longer window; inference reads a history of t + 1 items.

    Counting positions from the oldest item gives both the same state; counting back from the newest does not.
    """
    torch.manual_seed(0)
    model = build_recommender(_config(positions=positions), 20, None, None).eval()
    batch = torch.tensor([[3, 7, 1, 9, 4],
                          [0, 0, 0, 3, 7]])  # the window's first two items, alone and left-padded
    with torch.no_grad():
        states = model(batch)
    inside_window, alone = states[0, 1], states[1, -1]
    assert torch.allclose(inside_window, alone, atol=1e-5) == same_as_a_short_history


def test_a_kind_without_a_sequence_model_is_refused_by_name() -> None:
    with pytest.raises(BadInput, match=r"'recformer' is no sequence model over item vectors \(those are: sasrec, "
                                       r"gru4rec, said_light\)"):
        build_recommender(_config(kind="recformer"), 10, None, None)


@pytest.mark.parametrize("adapter", ["whiten", "linear", "mlp"])
@pytest.mark.parametrize("scale", [1.0, 300.0])
def test_adapted_item_vectors_start_at_the_id_vectors_scale(adapter: str, scale: float) -> None:
    from stages.downstream.item_encoder import ID_INIT_STD, ItemEncoder

    torch.manual_seed(0)
    table = torch.randn(500, 48) * scale + scale  # raw LM vectors come off-centre and at any scale
    encoder = ItemEncoder(500, 64, table, None, adapter, id_embedding=False, freeze=True)
    with torch.no_grad():
        assert float(encoder.all_items().std()) == pytest.approx(ID_INIT_STD, rel=0.05)


def test_a_temperature_scores_by_cosine_over_it(data) -> None:
    seqs, vectors, has, rows = data
    torch.manual_seed(0)
    model = build_recommender(_config(adapter="whiten", id_embedding=True, temperature=0.05), seqs.num_items,
                              vectors, has).eval()
    with torch.no_grad():
        items, users = model.items.all_items(), model.user_vectors(rows[:, :-1])
        assert torch.allclose(items.norm(dim=1), torch.ones(len(items)), atol=1e-5)
        assert torch.allclose(users.norm(dim=1), torch.full((len(users),), 1 / 0.05), atol=1e-3)
        scores = model.scores(rows[:, :-1])
    assert float(scores.abs().max()) <= 1 / 0.05 + 1e-3


def test_semantic_id_start_puts_similar_items_close_at_the_id_scale() -> None:
    from stages.downstream.item_encoder import ID_INIT_STD, ItemEncoder

    torch.manual_seed(0)
    groups = torch.randn(5, 32) * 3
    table = groups.repeat_interleave(40, dim=0) + 0.3 * torch.randn(200, 32)  # 5 groups of 40 similar items
    has = torch.ones(200, dtype=torch.bool)
    has[7] = False  # an item without an embedding starts as a plain ID vector
    encoder = ItemEncoder(200, 16, table, has, "init", id_embedding=False, freeze=True)
    assert not encoder.uses_embeddings and "items.table" not in encoder.state_dict()
    start = torch.nn.functional.normalize(encoder.ids.weight[1:].detach(), dim=1)
    same = torch.tensor([[i // 40 == j // 40 for j in range(200)] for i in range(200)])
    similarity = start @ start.T
    known = has[:, None] & has[None, :] & ~torch.eye(200, dtype=torch.bool)
    # whitened components weigh alike, so the 12 noise components dilute the 4 the groups span; still apart
    assert similarity[same & known].mean() > similarity[~same & known].mean() + 0.2
    assert float(encoder.ids.weight[1:].detach().std()) == pytest.approx(ID_INIT_STD, rel=0.1)


def test_members_score_by_the_sum_of_their_scores_and_each_trains_by_its_own_loss(data) -> None:
    seqs, vectors, has, rows = data
    torch.manual_seed(0)
    model = build_recommender(_config(adapter="whiten", id_embedding=True, members=3), seqs.num_items, vectors, has)
    model.eval()
    items, sequences = model.items.members, model.sequence.members
    assert all(member.table.data_ptr() == items[0].table.data_ptr() for member in items)  # one frozen table
    alone = [Recommender(item_side, sequence) for item_side, sequence in zip(items, sequences)]
    history = rows[:8, :-1]
    with torch.no_grad():
        scores = [member.scores(history) for member in alone]
        assert model.scores(history).shape == (8, seqs.num_items)
        assert torch.allclose(model.scores(history), sum(scores), atol=1e-5)
        assert not torch.allclose(scores[0], scores[1], atol=1e-3)  # members start from their own weights
        for loss in ("ce", "sampled", "bce"):
            def loss_of(recommender: Recommender, loss: str = loss) -> float:
                torch.manual_seed(1)  # the same negatives for the model and each member
                return Objective(recommender, loss, negatives=20, targets_per_batch=100.0)(rows[:, :-1], rows[:, 1:]).item()

            assert loss_of(model) == pytest.approx(np.mean([loss_of(member) for member in alone]), rel=1e-5)


def test_members_score_by_dot_product_only() -> None:
    with pytest.raises(BadInput, match="members > 1 sums the members' dot products"):
        load_config(None, ["downstream.model.members=2", "downstream.model.temperature=0.07"])
