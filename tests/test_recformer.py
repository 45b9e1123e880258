"""Recformer core: input format, encoder, pretraining, catalog encoding, fine-tuning (tiny BERT, real tokenizer)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from accelerate import Accelerator
from transformers import AutoModel, BertConfig, BertModel, RobertaConfig, RobertaModel

from pipeline import prepare
from pipeline.config import load_config
from pipeline.errors import BadInput, Diverged
from stages import resume
from stages.recformer import build
from stages.recformer.checkpoint import load_encoder, save_encoder
from stages.recformer.data import load_corpus
from stages.recformer.encode import encode_catalog
from stages.recformer.finetune import cosine_scores, epoch_batches, finetune, user_vectors
from stages.recformer.inputs import CLS, KEY, PAD, VALUE, SequenceFormat, attribute_columns, tokenize_catalog
from stages.recformer.model import RecformerEncoder, RecformerForPretraining
from stages.recformer.pretrain import Position, gather_with_local_grad, item_item_loss, pretrain, run_pretraining
from tests.fault_support import plant, planted_sites
from tests.support import REPO, shared_dataset

TINY = {"recformer.max_items": 8, "recformer.max_tokens": 64, "recformer.pretrain.lr": 1e-3,
        "recformer.pretrain.warmup_steps": 0, "recformer.pretrain.batch_size": 16,
        "recformer.pretrain.max_steps": 40, "recformer.encode.batch_size": 8, "recformer.encode.chunk_items": 50}


def recformer_config(**extra: object):
    """The `recformer` section sized for tiny models, with dotted overrides on top."""
    overrides = {**TINY, **extra}
    return load_config(None, [f"{key}={value}" for key, value in overrides.items()]).recformer


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, which stall when other jobs share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer():
    return build.load_tokenizer(recformer_config())


def tiny_backbone(tokenizer) -> BertModel:
    """A 2-layer, 32-wide BERT over the real MiniLM vocabulary, seeded."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    return BertModel(config).eval()


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory) -> Path:
    raw = shared_dataset("ml-100k")
    config = load_config(None, [f"workspace.root={tmp_path_factory.mktemp('art')}", f"data.path={raw}"])
    return prepare.run(config).run_dir


def test_token_types_and_item_positions_on_a_hand_built_user(tokenizer) -> None:
    items = pa.table({"item_id": ["a", "b"], "title": ["red shoes", "blue hat"], "brand": ["nike", ""],
                      "text": ["", ""]})
    cache = tokenize_catalog(items, ["title", "brand"], tokenizer, max_attribute_tokens=1)
    fmt = SequenceFormat(cache, tokenizer.cls_token_id, tokenizer.pad_token_id, max_items=5, max_tokens=64)
    batch = fmt.batch([[0, 1], [1]])  # a then b; b alone
    title, brand, red, nike, blue = 2516, 4435, 2417, 18368, 2630  # "red shoes" cut to 1 token
    assert batch["input_ids"].tolist() == [[101, title, blue, title, red, brand, nike],
                                           [101, title, blue, 0, 0, 0, 0]]
    assert batch["token_type_ids"].tolist() == [[CLS, KEY, VALUE, KEY, VALUE, KEY, VALUE],
                                                [CLS, KEY, VALUE, PAD, PAD, PAD, PAD]]
    # most recent first: b (newer) is item 1, a is item 2; CLS and padding are 0
    assert batch["item_position_ids"].tolist() == [[0, 1, 1, 2, 2, 2, 2], [0, 1, 1, 0, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1] * 7, [1, 1, 1, 0, 0, 0, 0]]


def test_sequences_keep_the_most_recent_items_and_the_token_budget(tokenizer) -> None:
    items = pa.table({"item_id": list("abcd"), "title": ["a b c d e f"] * 4})
    cache = tokenize_catalog(items, ["title"], tokenizer, max_attribute_tokens=3)  # 1 key + 3 values each
    fmt = SequenceFormat(cache, tokenizer.cls_token_id, tokenizer.pad_token_id, max_items=2, max_tokens=7)
    _, types, positions = fmt.sequence([0, 1, 2, 3])
    assert positions.tolist() == [0, 1, 1, 1, 1, 2, 2]  # items d and c only, c cut after 2 tokens
    assert types.tolist() == [CLS, KEY, VALUE, VALUE, VALUE, KEY, VALUE]


def test_attributes_default_to_every_column_else_the_rendered_text() -> None:
    both = pa.table({"item_id": ["a"], "title": ["x"], "brand": ["y"], "text": ["title x brand y"]})
    assert attribute_columns(both, None, "items") == ["title", "brand"]
    assert attribute_columns(both, ["brand", "text"], "items") == ["brand", "text"]
    assert attribute_columns(both.select(["item_id", "text"]), None, "items") == ["text"]


def test_unknown_attribute_is_bad_input(ml100k, tokenizer) -> None:
    with pytest.raises(BadInput, match="recformer.attributes: .* no attribute 'brand'"):
        load_corpus([ml100k], ["movie_title", "brand"], tokenizer, 8, ["train"])


def test_examples_are_every_train_prefix_with_its_next_item(ml100k, tokenizer) -> None:
    import pyarrow.parquet as pq

    items, splits = load_corpus([ml100k], None, tokenizer, 8, ["train", "valid"])
    examples = splits["train"]
    rows = pq.read_table(ml100k / "interactions.parquet").to_pylist()
    assert len(examples) == sum(1 for r in rows if r["split"] == "train" and r["position"] > 0)
    e = 5
    user = [r["item_id"] for r in sorted((r for r in rows if r["user_id"] == examples.user_ids[e]),
                                         key=lambda r: r["position"])]
    t = examples.target[e] - examples.start[e]
    assert items.item_ids[examples.targets()[e]] == user[t]
    assert list(items.item_ids[examples.history(e, 3)]) == user[max(0, t - 3):t]
    valid = splits["valid"]  # one per user, its history every train item before it
    assert len(valid) == sum(1 for r in rows if r["split"] == "valid")
    n_train = sum(1 for r in rows if r["user_id"] == valid.user_ids[0] and r["split"] == "train")
    assert valid.target[0] - valid.start[0] == n_train


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_fresh_encoder_reproduces_the_pretrained_model(tokenizer, family: str) -> None:
    """At step 0 the new embeddings add nothing: same states as the backbone, token positions numbered its way."""
    if family == "bert":
        backbone = tiny_backbone(tokenizer)
    else:  # RoBERTa numbers positions from padding_idx + 1 and has a single token type
        torch.manual_seed(0)
        backbone = RobertaModel(RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                              num_attention_heads=2, intermediate_size=64, pad_token_id=1,
                                              max_position_embeddings=130, type_vocab_size=1)).eval()
    encoder = RecformerEncoder(backbone, max_items=4, pooling="cls").eval()
    ids = torch.tensor([[101, 2516, 2417, 6007, 102]])
    types = torch.tensor([[CLS, KEY, VALUE, VALUE, VALUE]])
    with torch.no_grad():
        ours = encoder.hidden_states(ids, types, torch.tensor([[0, 1, 1, 1, 1]]), torch.ones_like(ids))
        theirs = backbone(input_ids=ids).last_hidden_state
    torch.testing.assert_close(ours, theirs)
    assert encoder.max_positions == 128


def test_max_tokens_beyond_the_model_positions_is_bad_input(tokenizer) -> None:
    with pytest.raises(BadInput, match="recformer.max_tokens: 512 exceeds the 128"):
        build.build_encoder(tiny_backbone(tokenizer), recformer_config(**{"recformer.max_tokens": 512}))


def test_false_negatives_are_masked_in_the_contrastive_loss() -> None:
    torch.manual_seed(0)
    seq, items = torch.randn(2, 4), torch.randn(3, 4)
    with_duplicate = item_item_loss(seq, items, torch.tensor([7, 8]), torch.tensor([7, 8, 7]), 0, 1.0)
    without = item_item_loss(seq, items[:2], torch.tensor([7, 8]), torch.tensor([7, 8]), 0, 1.0)
    # sequence 0's duplicate (row 2) is dropped; for sequence 1, row 2 stays a negative
    logits1 = torch.nn.functional.normalize(seq[1], dim=0) @ torch.nn.functional.normalize(items, dim=1).T
    loss1 = torch.nn.functional.cross_entropy(logits1[None], torch.tensor([1]))
    logits0 = torch.nn.functional.normalize(seq[0], dim=0) @ torch.nn.functional.normalize(items[:2], dim=1).T
    loss0 = torch.nn.functional.cross_entropy(logits0[None], torch.tensor([0]))
    torch.testing.assert_close(with_duplicate, (loss0 + loss1) / 2)
    assert not torch.isclose(with_duplicate, without)


def test_gathered_items_carry_gradient_only_for_the_local_rows() -> None:
    class TwoProcesses:  # what rank 1 of 2 sees: rank 0's rows arrive first, as constants
        num_processes, process_index = 2, 1

        def gather(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([torch.full_like(x, 7.0), x])

    local = torch.ones(3, 2, requires_grad=True)
    everyone, first = gather_with_local_grad(TwoProcesses(), local)
    assert first == 3 and everyone.shape == (6, 2)
    assert torch.equal(everyone[:3], torch.full((3, 2), 7.0)) and torch.equal(everyone[3:], local)
    (everyone * torch.arange(6.0)[:, None]).sum().backward()
    assert torch.equal(local.grad, torch.tensor([[3.0, 3.0], [4.0, 4.0], [5.0, 5.0]]))


def test_pretraining_lowers_the_loss_and_trains_the_tied_mlm_head(ml100k, tokenizer) -> None:
    config = recformer_config()
    backbone = tiny_backbone(tokenizer)
    encoder = build.build_encoder(backbone, config)
    items, splits = load_corpus([ml100k], None, tokenizer, config.max_attribute_tokens, ["train"])
    examples = splits["train"]
    fmt = build.sequence_format(items, tokenizer, config)
    words_before = encoder.word_embeddings.weight.detach().clone()
    model, position = pretrain(encoder, fmt, examples, tokenizer.mask_token_id, config.temperature, config.pretrain,
                               Accelerator(cpu=True))
    history = position.history
    assert len(history) == 40
    def mean(key: str, steps: slice) -> float:
        return float(np.mean([h[key] for h in history[steps]]))
    assert mean("loss", slice(-5, None)) < 0.92 * mean("loss", slice(5)), history
    assert mean("contrastive", slice(-5, None)) < mean("contrastive", slice(5))
    assert mean("mlm", slice(-5, None)) < mean("mlm", slice(5))
    head = model.mlm_head
    assert head.decoder.weight is model.encoder.word_embeddings.weight  # still one tensor after training
    assert not torch.equal(model.encoder.word_embeddings.weight, words_before)
    assert head.decoder.bias.abs().sum() > 0 and not torch.equal(head.layer_norm.weight, torch.ones(32))
    state = model.state_dict()
    torch.testing.assert_close(state["mlm_head.decoder.weight"], state["encoder.word_embeddings.weight"])


def test_catalog_encoded_in_chunks_matches_one_big_batch(ml100k, tokenizer) -> None:
    config = recformer_config(**{"recformer.pooling": "mean"})
    encoder = build.build_encoder(tiny_backbone(tokenizer), config)
    items, _ = load_corpus([ml100k], None, tokenizer, config.max_attribute_tokens, [])
    fmt = build.sequence_format(items, tokenizer, config)
    shapes: list[tuple[int, int]] = []  # (rows, padded length) of every forward pass
    encoder.register_forward_hook(lambda module, args, kwargs, out: shapes.append(tuple(kwargs["input_ids"].shape)),
                                  with_kwargs=True)
    stream = encode_catalog(encoder, fmt, batch_size=8, chunk_items=500)
    chunks = [next(stream)]
    assert sum(rows for rows, _ in shapes) == 500  # lazy: only the first chunk has been encoded
    lengths = [length for _, length in shapes]
    assert lengths == sorted(lengths)  # within a chunk, short items first: batches pad little
    chunks += list(stream)
    assert [len(ids) for ids, _ in chunks] == [500, 500, 349]
    assert list(np.concatenate([ids for ids, _ in chunks])) == list(items.item_ids)
    with torch.no_grad():
        whole = encoder.eval()(**fmt.item_batch(range(len(items)))).numpy()
    np.testing.assert_allclose(np.concatenate([v for _, v in chunks]), whole, atol=1e-5)
    assert chunks[0][1].dtype == np.float32


def small_finetune_setup(ml100k, tokenizer, **overrides):
    config = recformer_config(**{"recformer.finetune.lr": 1e-3, "recformer.finetune.epochs": 2,
                                 "recformer.finetune.frozen_items_epochs": 2, "recformer.finetune.patience": 5,
                                 "recformer.encode.batch_size": 256, **overrides})
    encoder = build.build_encoder(tiny_backbone(tokenizer), config)
    items, splits = load_corpus([ml100k], None, tokenizer, config.max_attribute_tokens, ["train", "valid"])
    train, valid = splits["train"].subset(slice(64)), splits["valid"].subset(slice(100))
    return config, encoder, build.sequence_format(items, tokenizer, config), train, valid


def recall_at_10(targets: np.ndarray):
    def score(users: torch.Tensor, table: torch.Tensor) -> float:
        top = cosine_scores(users, table).topk(10).indices
        return (top == torch.from_numpy(targets)[:, None]).any(1).float().mean().item()
    return score


def test_finetune_reencodes_the_table_in_stage_one_and_freezes_it_in_stage_two(ml100k, tokenizer) -> None:
    config, encoder, fmt, train, valid = small_finetune_setup(ml100k, tokenizer)
    seen: list[torch.Tensor] = []
    recall = recall_at_10(valid.targets())

    def score_fn(users: torch.Tensor, table: torch.Tensor) -> float:
        seen.append(table)
        return recall(users, table) + 1e-3 * len(seen)  # every epoch "improves": no early stop, last wins

    result = finetune(encoder, fmt, train, valid, score_fn, config.temperature, config.finetune, config.encode,
                      Accelerator(cpu=True))
    assert [(h["stage"], h["epoch"]) for h in result.history] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    initial, stage1_a, stage1_b, stage2_a, stage2_b = seen
    assert not torch.equal(stage1_a, initial) and not torch.equal(stage1_b, stage1_a)
    assert stage2_a is stage1_b and stage2_b is stage1_b  # stage 2 starts from stage 1's best table, frozen
    # the encoder is left holding the best (last) weights: it reproduces the best score
    assert recall(user_vectors(encoder, fmt, valid, 64), result.table) + 1e-3 * 5 == pytest.approx(result.best_score)


def test_finetune_stops_early_and_keeps_the_best_weights(ml100k, tokenizer) -> None:
    config, encoder, fmt, train, valid = small_finetune_setup(ml100k, tokenizer, **{"recformer.finetune.patience": 1})
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    scores = iter([1.0, 0.5, 0.4, 0.3, 0.2])  # nothing beats the score before fine-tuning
    result = finetune(encoder, fmt, train, valid, lambda users, table: next(scores), config.temperature,
                      config.finetune, config.encode, Accelerator(cpu=True))
    assert [(h["stage"], h["epoch"]) for h in result.history] == [(1, 1), (2, 1)]
    assert result.best_score == 1.0
    for name, value in encoder.state_dict().items():
        torch.testing.assert_close(value, before[name])


def test_killed_finetuning_resumes_mid_epoch_and_ends_as_an_uninterrupted_run(
        ml100k, tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = {"recformer.finetune.epochs": 2, "recformer.finetune.frozen_items_epochs": 1,
             "recformer.finetune.checkpoint_every": 3}

    def run(checkpoints: Path):
        config, encoder, fmt, train, valid = small_finetune_setup(ml100k, tokenizer, **extra)  # 4 batches an epoch
        result = finetune(encoder, fmt, train, valid, recall_at_10(valid.targets()), config.temperature,
                          config.finetune, config.encode, Accelerator(cpu=True), checkpoints)
        return result, encoder

    whole, uninterrupted = run(tmp_path / "whole")
    save = resume.save

    def save_then_die(*args) -> None:
        save(*args)
        if args[3] == 6:  # step 6: two batches into stage 1's second epoch
            raise KeyboardInterrupt

    monkeypatch.setattr(resume, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed")
    monkeypatch.undo()
    planted = plant(tmp_path / "killed" / "step-00000006", tmp_path / "pickle-ran")
    resumed, encoder = run(tmp_path / "killed")
    planted_sites(planted, tmp_path / "pickle-ran")
    assert [(h["stage"], h["epoch"]) for h in resumed.history] == [(1, 1), (1, 2), (2, 1)]
    assert _untimed(resumed.history) == _untimed(whole.history) and resumed.best_score == whole.best_score
    torch.testing.assert_close(resumed.table, whole.table)
    expected = uninterrupted.state_dict()
    assert all(torch.equal(tensor, expected[name]) for name, tensor in encoder.state_dict().items())


def test_one_example_per_user_epochs_draw_each_user_once_and_differently_each_epoch(ml100k, tokenizer) -> None:
    config = recformer_config(**{"recformer.finetune.examples": "one_per_user", "recformer.finetune.batch_size": 50})
    _, splits = load_corpus([ml100k], None, tokenizer, config.max_attribute_tokens, ["train"])
    train = splits["train"]

    def drawn(epoch: int) -> np.ndarray:
        return np.concatenate(epoch_batches(train, config.finetune, 1, epoch, 0, 1))

    first, again, second = drawn(0), drawn(0), drawn(1)
    users = train.user_ids[first]
    assert len(users) == len(set(users)) == len(set(train.user_ids))  # every user once
    np.testing.assert_array_equal(first, again)  # a pure function of (seed, stage, epoch): resumable
    assert (np.sort(first) != np.sort(second)).mean() > 0.5  # another epoch draws other targets
    everything = np.concatenate(epoch_batches(train, config.finetune.model_copy(update={"examples": "all"}), 1, 0, 0, 1))
    np.testing.assert_array_equal(np.sort(everything), np.arange(len(train)))


def test_real_minilm_loads_into_the_recformer_encoder(tokenizer) -> None:
    config = recformer_config(**{"recformer.max_tokens": 512})
    backbone = AutoModel.from_pretrained(build.model_path(None))
    encoder = build.build_encoder(backbone, config).eval()
    items = pa.table({"item_id": ["s", "k"], "title": ["running shoes", "kitchen knife"], "brand": ["nike", "zwilling"]})
    fmt = build.sequence_format(tokenize_catalog(items, ["title", "brand"], tokenizer, 32), tokenizer, config)
    batch = fmt.item_batch([0, 1])
    with torch.no_grad():
        vectors = encoder(**batch)
        plain = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state[:, 0]
    assert vectors.shape == (2, 384) and torch.isfinite(vectors).all()
    torch.testing.assert_close(vectors, plain)  # fresh Recformer embeddings change nothing at step 0


def test_saved_encoder_loads_back_and_encodes_the_same(tmp_path: Path, tokenizer) -> None:
    config = recformer_config(**{"recformer.pooling": "mean"})
    encoder = build.build_encoder(tiny_backbone(tokenizer), config)
    with torch.no_grad():
        encoder.item_position_embeddings.weight.normal_()  # trained-looking, not the zero start
    save_encoder(encoder, tokenizer, tmp_path / "ckpt")
    loaded = load_encoder(tmp_path / "ckpt")
    items = pa.table({"item_id": ["s", "k"], "title": ["running shoes", "kitchen knife"]})
    batch = SequenceFormat(tokenize_catalog(items, ["title"], tokenizer, 8), 101, 0, 8, 64).batch([[0, 1], [1]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**batch), encoder.eval()(**batch))
    assert loaded.pooling == "mean" and loaded.item_position_embeddings.num_embeddings == 9
    with pytest.raises(BadInput, match="not a Recformer checkpoint"):
        load_encoder(tmp_path)
    # `recformer.model` may name the checkpoint to continue from; its shape-giving keys must agree
    again = build.load_encoder(recformer_config(**{"recformer.model": str(tmp_path / "ckpt"), "recformer.pooling": "mean"}))
    torch.testing.assert_close(again.item_position_embeddings.weight, encoder.item_position_embeddings.weight)
    with pytest.raises(BadInput, match="recformer.pooling: 'cls' differs from the checkpoint"):
        build.load_encoder(recformer_config(**{"recformer.model": str(tmp_path / "ckpt")}))


def test_batch_larger_than_the_training_examples_is_bad_input(ml100k, tokenizer) -> None:
    config = recformer_config(**{"recformer.pretrain.batch_size": 200})
    items, splits = load_corpus([ml100k], None, tokenizer, 8, ["train"])
    few = splits["train"].subset(slice(100))
    with pytest.raises(BadInput, match="recformer.pretrain.batch_size: 200 per process exceeds the 100"):
        pretrain(build.build_encoder(tiny_backbone(tokenizer), config), build.sequence_format(items, tokenizer, config),
                 few, tokenizer.mask_token_id, config.temperature, config.pretrain, Accelerator(cpu=True))


def test_killed_pretraining_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_run(
        ml100k, tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    config = recformer_config(**{"recformer.pretrain.max_steps": 6, "recformer.pretrain.batch_size": 8})
    items, splits = load_corpus([ml100k], None, tokenizer, config.max_attribute_tokens, ["train"])
    fmt = build.sequence_format(items, tokenizer, config)

    def run(checkpoints: Path) -> tuple[RecformerForPretraining, Position]:
        torch.manual_seed(0)
        encoder = build.build_encoder(tiny_backbone(tokenizer), config)
        return pretrain(encoder, fmt, splits["train"], tokenizer.mask_token_id, config.temperature, config.pretrain,
                        Accelerator(cpu=True), checkpoints, checkpoint_every=4)

    uninterrupted, whole = run(tmp_path / "whole")
    save = resume.save

    def save_then_die(*args) -> None:
        save(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(resume, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed")
    assert (tmp_path / "killed" / "step-00000004" / "COMPLETE").is_file()
    monkeypatch.undo()
    planted = plant(tmp_path / "killed" / "step-00000004", tmp_path / "pickle-ran")
    resumed, position = run(tmp_path / "killed")
    planted_sites(planted, tmp_path / "pickle-ran")
    assert position.resumed_from == 4 and position.step == 6
    assert _untimed(position.history) == _untimed(whole.history)
    assert resumed.mlm_head.decoder.weight is resumed.encoder.word_embeddings.weight  # saved once, re-tied on load
    assert "Removed shared tensor" not in caplog.text  # so Accelerate's notice of it is not repeated at every checkpoint
    expected = uninterrupted.state_dict()
    assert all(torch.equal(tensor, expected[name]) for name, tensor in resumed.state_dict().items())


def test_pretraining_entry_runs_the_real_minilm_on_a_dataset_run(ml100k) -> None:
    config = recformer_config(**{"recformer.pretrain.max_steps": 3, "recformer.pretrain.batch_size": 4,
                                 "recformer.attributes": "[movie_title, class]", "recformer.pretrain.warmup_steps": 4})
    model, position = run_pretraining(config, [ml100k], Accelerator(cpu=True))
    history = position.history
    assert len(history) == 3 and all(np.isfinite(h["loss"]) for h in history)
    assert [h["lr"] for h in history] == pytest.approx([0.0, 0.25e-3, 0.5e-3])  # linear warmup over 4 steps
    assert model.encoder.hidden_size == 384 and model.mlm_head.decoder.weight is model.encoder.word_embeddings.weight


@pytest.mark.slow
def test_two_processes_shard_the_table_and_stay_in_sync(ml100k, tmp_path: Path) -> None:
    result = tmp_path / "result.json"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    str(Path(__file__).with_name("recformer_ddp_worker.py")), str(ml100k), str(result)],
                   check=True, timeout=600, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    facts = json.loads(result.read_text())
    assert facts["processes"] == 2 and facts["table_rows"] == facts["items"]
    assert facts["table_error"] < 1e-5  # two shards gathered = the whole catalog encoded in one process
    assert facts["steps"] == 3 and facts["checksums"][0] == facts["checksums"][1]  # DDP kept the weights equal
    assert facts["finetune_epochs"] == 1 and facts["finetune_score"] == 943 + facts["items"] + 1
    assert facts["tuned_checksums"][0] == facts["tuned_checksums"][1] != facts["checksums"][0]


def _untimed(history: list[dict]) -> list[dict]:
    """History records without their wall-clock figures (seconds, examples/s), which no two runs share."""
    return [{k: v for k, v in record.items() if k not in ("train_s", "examples_per_s")} for record in history]


@pytest.mark.slow  # the default tier stops stage two; Recformer stops through the same call
def test_a_diverging_pretraining_stops_before_the_weights_take_it(ml100k, tokenizer) -> None:
    config = recformer_config(**{"recformer.pretrain.lr": 1e30, "recformer.pretrain.batch_size": 8,
                                 "recformer.pretrain.max_steps": 6})
    items, splits = load_corpus([ml100k], None, tokenizer, config.max_attribute_tokens, ["train"])
    with pytest.raises(Diverged, match=r"training loss is (nan|inf) at Recformer pretraining step \d+: stopped"):
        pretrain(build.build_encoder(tiny_backbone(tokenizer), config), build.sequence_format(items, tokenizer, config),
                 splits["train"], tokenizer.mask_token_id, config.temperature, config.pretrain, Accelerator(cpu=True))
