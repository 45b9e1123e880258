"""`downstream`, `recommend`, `report` and `tracking`: stage two and the commands that read its runs."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from pipeline.schema.base import Section


class ModelConfig(Section):
    """The downstream model's architecture and its item side."""

    kind: str = Field(min_length=1, description=(
        "sasrec (causal self-attention) | gru4rec | said_light (pooled history + MLP) | recformer: fine-tunes the "
        "text encoder of the embeddings run (its recformer checkpoint) in two stages (section recformer.finetune); "
        "the only kind that loads an encoder; epochs = frozen_items_epochs = 0 evaluates the encoder zero-shot"))
    hidden_size: int = Field(ge=1, description="width of the item representations and of the sequence model")
    layers: int = Field(ge=1, description="Transformer blocks (sasrec), GRU layers (gru4rec), MLP layers (said_light)")
    heads: int = Field(ge=1, description="attention heads (sasrec); must divide hidden_size")
    feedforward_size: int | None = Field(ge=1, description=(
        "sasrec: width of each block's feed-forward layer; null = 4 x hidden_size (RecBole's SASRec calls it "
        "inner_size, 256 by default)"))
    norm: Literal["pre", "post"] = Field(description=(
        "sasrec: LayerNorm before each sub-layer (pre, with a final LayerNorm) | after each residual sum (post, as "
        "BERT and RecBole's SASRec)"))
    positions: Literal["newest", "oldest"] = Field(description=(
        "sasrec: learned positions counted back from the newest item (newest, the original SASRec's) | from the "
        "oldest item in the window (oldest, RecBole's and GPT's)"))
    dropout: float = Field(ge=0, lt=1, description="dropout on inputs and inside the layers")
    max_length: int = Field(ge=1, description="the most recent N items of a history are used")
    pooling: Literal["mean", "attention"] = Field(description=(
        "said_light: mean | attention (a learned query over the history)"))
    adapter: Literal["linear", "mlp", "whiten", "init"] = Field(description=(
        "frozen embedding -> hidden_size: whiten (PCA whitening, then linear) | linear | mlp; whitening lets SAID's "
        "soft-token means, which share one large component, differ (ml-100k main job: test NDCG@10 0.0365 whiten vs "
        "0.0152 linear) | init: the embeddings only start each item's ID vector (their top principal components), "
        "then it is an ID-only model (new items cannot be scored)"))
    id_embedding: bool = Field(description="add a trainable per-item ID vector to the adapted embedding")
    freeze_embeddings: bool = Field(description="false: the embedding table itself is trained too")
    temperature: float | None = Field(gt=0, description=(
        "null: an item's score is the dot product of the user state and its vector (SASRec) | t: their cosine / t "
        "(UniSRec 0.07, Recformer 0.05)"))
    members: int = Field(ge=1, description=(
        "sequence kinds: this many models (each its own item side and sequence model, its own start and dropout) "
        "trained side by side on the same batches, each by its own loss; an item's score is the sum of theirs, "
        "one dot product of their concatenated vectors (members x hidden_size wide); costs members x the "
        "training. 1 = one model"))

    @model_validator(mode="after")
    def _members_score_by_dot_product(self) -> ModelConfig:
        if self.members > 1 and self.temperature is not None:
            raise ValueError("members > 1 sums the members' dot products; set temperature to null")
        return self


class TrainConfig(Section):
    loss: Literal["auto", "ce", "sampled", "bce"] = Field(description=(
        "auto: ce up to full_softmax_max_items items, else sampled with popularity negatives | ce (softmax over all "
        "items) | sampled (softmax over target + negatives) | bce"))
    full_softmax_max_items: int = Field(ge=1, description=(
        "auto: the largest catalog trained with the full softmax (benchmarks/large_catalog)"))
    negatives: int = Field(ge=1, description="sampled / bce: negatives drawn per batch, shared by its positions")
    sampler: Literal["uniform", "popularity"] = Field(description=(
        "sampled / bce: uniform | popularity (train counts ^ 0.75, with the logQ correction)"))
    batch_size: int = Field(ge=1, description=(
        "sequences per step: windows of max_length + 1 train items, every position a target"))
    length_pool: int = Field(ge=1, description=(
        "batch by length: batch_size x length_pool windows are sorted by history length, then cut, so a batch pays "
        "for its own longest history, not max_length (1 = plain shuffle)"))
    batch_by: Literal["windows", "targets"] = Field(description=(
        "where a sorted pool is cut: every batch_size windows | targets: every batch_size x the mean window's "
        "targets, so a batch of one-item histories holds many more windows and every step carries about the same "
        "gradient weight"))
    lr: float = Field(gt=0, description="AdamW learning rate")
    ema_decay: float | None = Field(gt=0, lt=1, description=(
        "the weights evaluated, kept and published are an exponential moving average of the trained ones, updated "
        "every step with this decay (0.995: about the last 200 steps) | null: the trained weights themselves"))
    weight_decay: float = Field(ge=0, description="AdamW weight decay")
    epochs: int = Field(ge=1, description=(
        "at most this many epochs: early stopping (patience) usually ends training first"))
    patience: int = Field(ge=1, description="stop after this many epochs without a better valid NDCG@10")
    seed: int = Field(ge=0, description="seeds torch, numpy and Python; recorded in the manifest")
    init: Literal["scratch", "previous"] = Field(description=(
        "scratch: a fresh model | previous: start from the newest published run with the same model settings and kind "
        "of item side, trained on an earlier dataset run (rows matched by item id; new items start as in a fresh "
        "model); the scheduled refresh's cheap path (examples/). Early stopping as usual."))


class EvaluateConfig(Section):
    ks: list[Annotated[int, Field(ge=1)]] = Field(min_length=1, description=(
        "cut-offs for Recall@K and NDCG@K (NDCG at the first K chooses the best epoch)"))
    mask_history: bool = Field(description=(
        "true: items already in the user's history cannot be ranked (UniSRec/Recformer: false)"))
    batch_size: int = Field(ge=1, description="users scored per matrix product")


class IndexConfig(Section):
    kind: Literal["flat", "hnsw"] = Field(description="flat (exact) | hnsw (approximate, fast for large catalogs)")
    hnsw_m: int = Field(ge=2, description="hnsw: neighbours per node")
    ef_search: int = Field(ge=1, description="hnsw: search breadth (higher = more exact, slower)")


class DownstreamConfig(Section):
    embeddings: str | None = Field(description=(
        "item embeddings: latest (<root>/embeddings/<data.name>/latest) | a run id there | a run folder path | null "
        "(ID-only baseline: no embeddings at all)"))
    missing_items: Literal["error", "id_vector"] = Field(description=(
        "dataset items absent from the embeddings: error | id_vector (a trainable ID vector instead)"))
    model: ModelConfig = Field(description="the downstream model's architecture and its item side")
    train: TrainConfig = Field(description="training: loss, batches, optimizer and early stopping")
    evaluate: EvaluateConfig = Field(description="validation and test metrics")
    index: IndexConfig = Field(description="FAISS inner-product index over the trained item vectors (for `recommend`)")


class RecommendConfig(Section):
    run: str = Field(description=(
        "the downstream run: latest (<root>/downstream/<data.name>/latest) | a run id | a path"))
    k: int = Field(ge=1, description="items per user")
    users: list[str] | None = Field(description=(
        "user ids to recommend for, as strings ([\"1\", \"7\"]; or `recommend --user 1 --user 7`); null = every user"))
    search: Literal["exact", "faiss"] = Field(description=(
        "exact (a matrix product) | faiss (the run's item index, approximate for hnsw)"))
    filter_history: bool = Field(description="leave out items the user already interacted with")
    batch_size: int = Field(ge=1, description="users per batch")


class ReportConfig(Section):
    """`seqrec-pipeline report`: read by no stage, so no run id hashes it."""

    dir: str | None = Field(description="folder the pages are written to; null = <workspace.root>/reports/<data.name>")
    on_run: bool = Field(description=(
        "`run` ends by writing the report of the downstream run it made and printing its path"))
    examples: int = Field(ge=0, description=(
        "nearest-neighbour examples: this many random items and this many of the most popular"))
    map_items: int = Field(ge=2, description="items drawn (at random) on the 2-D map of the item embeddings")
    map_values: int = Field(ge=1, description=(
        "the most frequent attribute values (align.evidence.attribute) coloured on the map; the rest, and items "
        "without a value, are grey (\"other\")"))
    seed: int = Field(description="draws the random examples and the map's items")


class TrackingConfig(Section):
    """Where published runs are also logged: read by no stage, so no run id hashes it."""

    backend: Literal["none", "tensorboard", "mlflow"] = Field(description=(
        "none | tensorboard (pip install tensorboard) | mlflow (pip install mlflow): the run id is the run name, the "
        "resolved config its hyperparameters, history.jsonl its curve"))
    dir: str | None = Field(description=(
        "the TensorBoard log folder or MLflow tracking folder; null = <workspace.root>/tracking"))
