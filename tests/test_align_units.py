"""Stage one, piece by piece: loss, projector scale, batching, training loop, export and its reader, loading."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from pipeline.batching import length_batches, shard
from pipeline.config import load_config
from pipeline.contracts.embeddings import (
    check_index,
    l2_normalise,
    part_path,
    read_embeddings,
    read_rows,
    write_embeddings,
    write_index,
)
from pipeline.errors import BadInput, PipelineError
from pipeline.store import latest_checkpoint
from stages.align import export, said_items, said_method
from stages.align.catalog import RowPlan
from stages.align.evidence import attribute_sets, neighbour_rate
from stages.align.item_shards import Shards, owned
from stages.align.lm import load_causal_lm, use_attention
from stages.align.loss import token_nll
from stages.align.projector import SAIDProjector, pool, token_rms
from stages.align.said import OwnItems, TrainPlan, enable_checkpointing, fit, lr_factor
from stages.align.tokens import collate, tokenize

TEXTS = ["movie_title: Toy Story\nrelease_year: 1995\nclass: Animation Children's Comedy",
         "movie_title: GoldenEye\nrelease_year: 1995\nclass: Action Adventure Thriller",
         "movie_title: Four Rooms", "movie_title: Get Shorty\nrelease_year: 1995\nclass: Action Comedy Drama",
         "movie_title: Copycat\nrelease_year: 1995\nclass: Crime Drama Thriller", "movie_title: Babe",
         "movie_title: Dead Man Walking\nrelease_year: 1995\nclass: Drama",
         "movie_title: Richard III\nrelease_year: 1995\nclass: Drama War"]


@pytest.fixture(scope="module")
def lm(tiny_llama: Path):
    return load_causal_lm(str(tiny_llama), "align.lm", "unused", offline=True)


def test_token_nll_equals_cross_entropy_over_full_logits(lm) -> None:
    tokens = tokenize(TEXTS[:3], lm.tokenizer, 64, special_tokens=False)
    ids, mask = collate(tokens, np.arange(3), lm.tokenizer.pad_token_id)
    prefix = torch.randn(3, 2, 32) * 0.3
    with torch.no_grad():
        ours = token_nll(lm.model, prefix, ids, mask)
        embeds = torch.cat([prefix, lm.model.get_input_embeddings()(ids)], dim=1)
        attention = torch.cat([torch.ones(3, 2, dtype=torch.long), mask], dim=1)
        logits = lm.model(inputs_embeds=embeds, attention_mask=attention).logits  # (B, 2+L, V)
        reference = F.cross_entropy(logits[:, 1:-1].transpose(1, 2), ids, reduction="none") * mask
        plain = token_nll(lm.model, None, ids, mask)
        full = F.cross_entropy(lm.model(input_ids=ids, attention_mask=mask).logits[:, :-1].transpose(1, 2),
                               ids[:, 1:], reduction="none") * mask[:, 1:]
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)
    assert (plain[:, 0] == 0).all()
    torch.testing.assert_close(plain[:, 1:], full, atol=1e-4, rtol=1e-4)


def test_soft_tokens_have_the_rms_of_the_lms_token_embeddings(lm) -> None:
    embedding = lm.model.get_input_embeddings()
    rms = token_rms(embedding, embedding.num_embeddings)
    reference = embedding.weight.pow(2).mean(dim=1).sqrt().mean().item()
    assert rms == pytest.approx(reference, rel=1e-5)
    projector = SAIDProjector(item_dim=8, width=16, soft_tokens=3, hidden=32, token_rms=rms)
    soft = projector(torch.randn(5, 8))
    assert soft.shape == (5, 3, 32)
    torch.testing.assert_close(soft.pow(2).mean(-1).sqrt(), torch.full((5, 3), rms), atol=1e-4, rtol=1e-3)
    assert pool(soft, "mean").shape == (5, 32) and pool(soft, "concat").shape == (5, 96)


def test_length_batches_cover_every_row_once_with_less_padding() -> None:
    lengths = np.random.default_rng(1).integers(1, 60, size=203)
    batches = length_batches(np.arange(203), lengths, batch_size=8, pool=8, seed=3)
    assert sorted(np.concatenate(batches).tolist()) == list(range(203))
    assert [b.tolist() for b in batches] == [b.tolist() for b in length_batches(np.arange(203), lengths, 8, 8, 3)]
    padded = sum(len(b) * lengths[b].max() for b in batches)
    shuffled = np.random.default_rng(3).permutation(203)
    padded_random = sum(len(b) * lengths[b].max() for b in np.array_split(shuffled, len(batches)))
    assert padded < 0.8 * padded_random
    two = [shard(batches, rank, 2) for rank in (0, 1)]
    assert len(two[0]) == len(two[1]) and {r for s in two for b in s for r in b} == set(range(203))


def test_tokens_are_cached_truncated_and_counted(lm, tmp_path: Path) -> None:
    cache = tmp_path / "tokens.npz"
    tokens = tokenize(TEXTS, lm.tokenizer, 6, special_tokens=False, cache=cache)
    assert tokens.lengths.max() == 6 and tokens.truncated == sum(len(lm.tokenizer(t).input_ids) > 6 for t in TEXTS)
    with mock.patch.object(type(lm.tokenizer), "__call__", side_effect=AssertionError("tokenized twice")):
        again = tokenize(TEXTS, lm.tokenizer, 6, special_tokens=False, cache=cache)  # served from the cache
    assert np.array_equal(again.ids, tokens.ids)
    assert tokenize(TEXTS, lm.tokenizer, 7, special_tokens=False, cache=cache).lengths.max() == 7  # new settings


def _start(config, lm, tokens, shards: Shards) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The projector's state and the table `projector_for` gives the process holding `shards`."""
    start = said_method.projector_for(config, lm.model, tokens, shards, None, [None] * len(tokens.lengths))
    return start.projector.state_dict(), start.table.weight.detach()


def test_a_projector_starts_from_the_seed_whatever_ran_before(lm) -> None:
    config = load_config(None, ["align.seed=3"]).align
    tokens = tokenize(TEXTS, lm.tokenizer, 64, special_tokens=False)
    first, first_table = _start(config, lm, tokens, owned(len(TEXTS), None, 0, 1))
    torch.rand(1000)  # e.g. a first-time model conversion draws random numbers before the projector is built
    second, second_table = _start(config, lm, tokens, owned(len(TEXTS), None, 0, 1))
    assert all(torch.equal(first[name], second[name]) for name in first) and torch.equal(first_table, second_table)


@pytest.mark.parametrize("item_init", ["random", "text"])
def test_a_process_builds_only_its_rows_of_the_item_table_as_one_process_would(lm, item_init: str) -> None:
    """Rank 1 of 2 holds its shard's 4 rows of 9, never the whole table, and they are the rows a one-process
    run with the same shards starts from; so is the MLP, and item_init: text's map, fitted on a sample."""
    config = load_config(None, ["align.seed=3", f"align.said.item_init={item_init}", "align.said.item_dim=4"]).align
    tokens = tokenize([*TEXTS, TEXTS[1]], lm.tokenizer, 64, special_tokens=False)
    with mock.patch.object(said_method, "TEXT_SAMPLE", 6), \
            mock.patch.object(said_method, "text_means", wraps=said_method.text_means) as means:
        one, one_table = _start(config, lm, tokens, owned(9, 2, 0, 1))
        means.reset_mock()
        two, two_table = _start(config, lm, tokens, owned(9, 2, 1, 2))
    assert one_table.shape == (9, 4) and two_table.shape == (4, 4)
    # item_init: text takes the text means of a sample of 6 items, then of its own rows (5..8) alone
    calls = [call.args[2].tolist() for call in means.call_args_list]
    assert [len(rows) for rows in calls] == ([6, 4] if item_init == "text" else []) and calls[1:] in ([], [[5, 6, 7, 8]])
    torch.testing.assert_close(two_table, one_table[5:], atol=1e-6, rtol=0)
    assert all(torch.equal(one[name], two[name]) for name in one)


def test_items_can_start_from_their_texts_and_later_items_are_placed_the_same_way(lm) -> None:
    texts = [*TEXTS, TEXTS[1]]  # the last item repeats GoldenEye's text
    tokens = tokenize(texts, lm.tokenizer, 64, special_tokens=False)
    means = said_method.text_means(lm.model, tokens, np.arange(len(texts)))
    embedded = lm.model.get_input_embeddings()(torch.as_tensor(tokens.item(3))).float().mean(dim=0)
    torch.testing.assert_close(means[3], embedded)
    torch.testing.assert_close(said_method.text_means(lm.model, tokens, np.array([8, 3])), means[[8, 3]])
    hidden = lm.model.config.hidden_size
    projector = SAIDProjector(item_dim=4, width=8, soft_tokens=2, hidden=hidden, token_rms=1.0)
    projector.fit_text_basis(means[:6])
    start = projector.text_start(means[:6])
    # centred, unit-variance principal components: the scale of the default normal start
    torch.testing.assert_close(start.mean(dim=0), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(start.std(dim=0), torch.ones(4), atol=1e-3, rtol=0)
    later = projector.text_start(means[6:])  # items added later: the same map
    torch.testing.assert_close(later, (means[6:] - projector.text_mean) @ projector.text_basis)
    torch.testing.assert_close(later[2], start[1])  # same text, same start


def test_the_attention_kernel_is_eager_on_cpu_unless_configured(tiny_llama: Path) -> None:
    model = load_causal_lm(str(tiny_llama), "align.lm", "unused", offline=True).model
    default = model.config._attn_implementation
    use_attention(model, "auto", torch.device("cuda"))  # on a GPU auto keeps the model's own kernel
    assert model.config._attn_implementation == default
    use_attention(model, "auto", torch.device("cpu"))
    assert model.config._attn_implementation == "eager"
    use_attention(model, "sdpa", torch.device("cpu"))
    assert model.config._attn_implementation == "sdpa"


def test_fit_trains_only_the_projector_and_the_lm_stays_bit_identical(lm, tmp_path: Path) -> None:
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    tokens = tokenize(TEXTS, lm.tokenizer, 32, special_tokens=False)
    torch.manual_seed(0)
    embedding = lm.model.get_input_embeddings()
    projector = SAIDProjector(8, 32, 2, 32, token_rms(embedding, embedding.num_embeddings))
    start = OwnItems(projector, torch.nn.Embedding(len(TEXTS), 8), owned(len(TEXTS), None, 0, 1))
    plan = TrainPlan(lr=0.05, item_lr=0.05, weight_decay=0.0, schedule="constant", warmup_steps=0, epochs=20,
                     max_steps=None, grad_accum=2, batch_size=2, length_pool=2, seed=0, checkpoint_every=15)
    position = fit(Accelerator(cpu=True), lm.model, start, tokens, plan, lm.tokenizer.pad_token_id, tmp_path).position
    assert position.step == 40
    assert np.mean(position.losses[-5:]) < np.mean(position.losses[:5]) - 0.5
    assert not any(p.requires_grad for p in lm.model.parameters()) and not lm.model.training
    after = lm.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert latest_checkpoint(tmp_path, "step-*").name == "step-00000040"  # only the newest complete checkpoint kept
    assert len(list(tmp_path.glob("step-*"))) == 1


def test_a_bfloat16_frozen_lm_still_trains_a_float32_prefix(tiny_llama: Path) -> None:
    loaded = load_causal_lm(str(tiny_llama), "align.lm", "unused", offline=True, dtype="bfloat16")
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    tokens = tokenize(TEXTS[:4], loaded.tokenizer, 32, special_tokens=False)
    ids, mask = collate(tokens, np.arange(4), loaded.tokenizer.pad_token_id)
    prefix = (torch.randn(4, 2, 32) * 0.3).requires_grad_()
    losses = token_nll(loaded.model, prefix, ids, mask)
    losses.sum().backward()
    assert losses.dtype == torch.float32 and prefix.grad.dtype == torch.float32
    assert torch.isfinite(prefix.grad).all() and prefix.grad.abs().sum() > 0


def test_gradient_checkpointing_gives_the_same_gradients(tiny_llama: Path) -> None:
    grads, calls = [], []
    for checkpointing in (False, True):
        loaded = load_causal_lm(str(tiny_llama), "align.lm", "unused", offline=True)
        if checkpointing:
            enable_checkpointing(loaded.model)
        calls.append(0)
        mlp = loaded.model.model.layers[0].mlp
        mlp.register_forward_pre_hook(lambda *_: calls.__setitem__(-1, calls[-1] + 1))
        tokens = tokenize(TEXTS[:4], loaded.tokenizer, 32, special_tokens=False)
        ids, mask = collate(tokens, np.arange(4), loaded.tokenizer.pad_token_id)
        prefix = (torch.randn(4, 2, 32, generator=torch.Generator().manual_seed(0)) * 0.3).requires_grad_()
        token_nll(loaded.model, prefix, ids, mask).sum().backward()
        grads.append(prefix.grad)
        assert not any(m.training for m in loaded.model.modules() if isinstance(m, torch.nn.Dropout))
    torch.testing.assert_close(grads[0], grads[1])
    assert calls == [1, 2]  # with checkpointing the layer runs again in backward


META = {"method": "said", "model": "m", "normalisation": "none", "config_hash": "c", "dataset_run_id": "d"}


def _all_rows(ids: list[str]) -> RowPlan:
    """A full run's rows: every item embedded now, none kept."""
    return RowPlan(ids, ["0" * 64] * len(ids), np.zeros(0, np.int64), list(range(len(ids))), [None] * len(ids), 0)


def test_parts_written_by_two_processes_read_back_as_one_run_and_fill_every_index_kind(tmp_path: Path) -> None:
    vectors = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    ids = [f"i{n}" for n in range(300)]
    write_embeddings(tmp_path, ids[:120], vectors[:120], ["0" * 64] * 120, META, part=1)
    write_embeddings(tmp_path, ids[120:], vectors[120:], ["0" * 64] * 180, META, part=2)
    read = read_embeddings(tmp_path)
    assert read.item_ids == ids and np.array_equal(read.vectors, vectors) and read.metadata["dim"] == "16"
    assert pq.read_schema(part_path(tmp_path, 2)).field("embedding").type == pa.list_(pa.float32(), 16)
    np.testing.assert_array_equal(read_rows(tmp_path, np.array([299, 5, 130, 119, 120])), vectors[[299, 5, 130, 119, 120]])
    assert read_embeddings(tmp_path, vectors=False).vectors.shape == (300, 0)
    for kind in ("auto", "flat", "hnsw", "ivfpq"):
        spec = export.IndexSpec(kind, hnsw_m=8, ivf_lists=4, pq_m=4)
        index = export.fill_index(spec, tmp_path, None, _all_rows(ids), 16, seed=0)
        assert type(index).__name__ == {"auto": "IndexFlatIP", "flat": "IndexFlatIP", "hnsw": "IndexHNSWFlat",
                                        "ivfpq": "IndexIVFPQ"}[kind]
        assert write_index(tmp_path, index)["ntotal"] == 300
        check_index(tmp_path, 300, 16)
    exact = export.fill_index(export.IndexSpec("flat", 8, 4, 4), tmp_path, None, _all_rows(ids), 16, seed=0)
    np.testing.assert_allclose(exact.reconstruct_n(0, 300), l2_normalise(vectors), atol=1e-6)  # rows in order
    with pytest.raises(BadInput, match="holds 300 vectors of width 16"):
        check_index(tmp_path, 299, 16)
    assert export.IndexSpec("auto", 8, 4, 4).resolved(export.FLAT_MAX_ITEMS + 1) == "ivfpq"


def test_item_parts_read_any_rows_across_parts_and_a_legacy_table_reads_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SAID's item table in parts (spans of 7 rows here) and, for runs published before parts, as `items.weight`
    inside projector.safetensors: the same rows either way, kept rows copied chunk by chunk."""
    monkeypatch.setattr(said_items, "CHUNK_ROWS", 7)
    table = torch.randn(30, 4)
    parts, legacy = tmp_path / "parts", tmp_path / "legacy"
    for run in (parts, legacy, tmp_path / "kept-parts", tmp_path / "kept-legacy"):
        run.mkdir()
    said_items.write_part(parts, 1, table[:12])
    said_items.write_part(parts, 2, table[12:])
    published = SAIDProjector(item_dim=4, width=8, soft_tokens=2, hidden=16, token_rms=1.0)
    save_file({**published.state_dict(), "items.weight": table}, str(legacy / said_items.PROJECTOR_FILE))
    rows = np.array([29, 3, 12, 11, 3, 20])
    for run in (parts, legacy):
        assert torch.equal(said_items.read_rows(run, rows), table[rows])
        assert torch.equal(said_items.read_item_table(run), table)
        kept = tmp_path / f"kept-{run.name}"
        said_items.copy_kept(kept, run, np.array([0, 6, 7, 13, 29]))
        assert torch.equal(load_file(str(said_items.part_path(kept, 0)))["weight"], table[[0, 6, 7, 13, 29]])
        with pytest.raises(BadInput, match="asked for item row 30, the run's item table has 30 rows"):
            said_items.read_rows(run, np.array([30]))
    extended = SAIDProjector(item_dim=4, width=8, soft_tokens=2, hidden=16, token_rms=1.0)
    own = torch.zeros(2, 4)  # the process holding catalog rows 1..2 of 3: a legacy base still warm-starts them
    said_method.continue_from(extended, own, range(1, 3), legacy, [29, None, 3])
    assert torch.equal(own[0], torch.zeros(4)) and torch.equal(own[1], table[3])
    assert torch.equal(extended.mlp[0].weight, published.mlp[0].weight)


def test_export_refuses_nan_and_bad_index_settings(tmp_path: Path) -> None:
    vectors = np.ones((3, 8), np.float32)
    vectors[1, 2] = np.nan
    with pytest.raises(PipelineError, match="1 embeddings are NaN or inf \\(first: item b\\)"):
        export.write_embedded(Accelerator(cpu=True), tmp_path, _all_rows(["a", "b", "c"]), vectors, 0, "none", META)
    assert not (tmp_path / "embeddings").exists()
    with pytest.raises(BadInput, match="align.export.pq_m: 3 does not divide"):
        export.new_index(export.IndexSpec("ivfpq", 8, 4, 3), 8, 300, np.ones((300, 8), np.float32))
    with pytest.raises(BadInput, match="ivfpq needs at least 256 items"):
        export.new_index(export.IndexSpec("ivfpq", 8, 4, 4), 8, 10, np.ones((10, 8), np.float32))


def test_reader_rejects_repeated_ids_and_missing_metadata(tmp_path: Path) -> None:
    write_embeddings(tmp_path, ["a", "b"], np.ones((2, 4), np.float32), ["0" * 64] * 2, META, part=1)
    write_embeddings(tmp_path, ["a"], np.ones((1, 4), np.float32), ["0" * 64], META, part=2)
    with pytest.raises(BadInput, match="item ids repeat"):  # across parts too
        read_embeddings(tmp_path)
    pq.write_table(pa.table({"item_id": ["a"]}), part_path(tmp_path, 2))
    with pytest.raises(BadInput, match="part-00002.parquet: schema metadata lacks method"):
        read_embeddings(tmp_path)


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    cosine = lr_factor("cosine", warmup=2, total=10)
    assert [cosine(s) for s in (0, 1, 2, 6, 10)] == pytest.approx([0.5, 1.0, 1.0, 0.5, 0.0])
    assert lr_factor("linear", 0, 10)(5) == pytest.approx(0.5) and lr_factor("constant", 0, 10)(9) == 1.0


def test_neighbour_check_counts_shared_values_against_random_pairs() -> None:
    values = attribute_sets(["Drama War", "War", "Comedy", "Comedy Animation", "Horror", "Horror", ""], " ")
    assert values[0] == {"Drama", "War"} and values[6] == frozenset()
    vectors = np.array([[1, 0.1], [1, 0.2], [0.1, 1], [0.2, 1], [-1, 0.1], [-1, 0.2], [5, 5]], np.float32)
    index = faiss.IndexFlatIP(2)
    index.add(l2_normalise(vectors))
    result = neighbour_rate(index, lambda rows: vectors[rows], values, queries=6, seed=0)
    assert result["queries"] == 6 and result["nearest_neighbour_share_rate"] == 1.0
    assert result["random_pair_share_rate"] < 1.0


def test_a_checkpoint_counts_only_once_its_marker_exists(tmp_path: Path) -> None:
    (tmp_path / "step-00000004").mkdir()
    (tmp_path / "step-00000004" / "COMPLETE").touch()
    (tmp_path / "step-00000008").mkdir()  # killed while saving: no marker
    assert latest_checkpoint(tmp_path, "step-*") == tmp_path / "step-00000004"
    assert latest_checkpoint(tmp_path / "none", "step-*") is None


def test_length_batches_cut_by_a_budget_hold_about_the_same_total_length() -> None:
    lengths = np.minimum(np.random.default_rng(1).geometric(0.25, size=2000), 50)  # mostly short, as histories are
    budget = 32 * float(lengths.mean())
    batches = length_batches(np.arange(2000), lengths, batch_size=32, pool=16, seed=3, budget=budget)
    assert sorted(np.concatenate(batches).tolist()) == list(range(2000))
    totals = np.array([lengths[b].sum() for b in batches])
    assert totals.max() <= budget + lengths.max()
    assert np.median(totals) >= budget - lengths.max()  # only each pool's last batch may fall short
    assert max(len(b) for b in batches) > 3 * min(len(b) for b in batches)  # short rows share a batch in numbers
