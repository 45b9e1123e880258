"""Typed configuration mirroring `pipeline.yaml` one-to-one.

`pipeline.yaml` at the repository root is the single source of defaults and documents every key (the package
holds it through the link `pipeline/pipeline.yaml`, which a built wheel stores as a file); the classes here
only fix names, types and ranges. A user's file is laid over those defaults, then dotted
overrides (`--set data.kcore_users=0`), then everything is validated at once: an unknown key, a wrong
type or an out-of-range value fails with its dotted path.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.resources
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline import sources
from pipeline.errors import BadInput

DEFAULTS_PATH = Path(str(importlib.resources.files("pipeline") / "pipeline.yaml"))


MixedPrecision = Literal["no", "fp16", "bf16"]  # Accelerate's autocast modes


class _Loader(yaml.SafeLoader):
    """YAML as PyYAML reads it, except as YAML 1.2: `5e-5` is a float (YAML 1.1 alone wants `5.0e-5`), and only
    true/false are booleans (YAML 1.1 reads `--set align.mixed_precision=no` as false)."""


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


class Section(BaseModel):
    # allow_inf_nan=False: an `.inf` or `.nan` setting (e.g. a learning rate) would train a model of NaNs
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class ColumnsConfig(Section):
    user: str
    item: str
    timestamp: str | None


class TextConfig(Section):
    fields: list[str] | None
    template: Literal["auto", "key_colon_value", "key_value", "values"]


class DataConfig(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    format: Literal["recbole_atomic", "unisrec", "lcrec", "movielens", "table", "amazon"]
    path: str
    stem: str | None
    interactions_file: str
    items_file: str
    columns: ColumnsConfig
    text: TextConfig
    dedup: Literal["none", "first"]
    kcore_users: int = Field(ge=0)
    kcore_items: int = Field(ge=0)
    max_history: int | None = Field(ge=3)
    split: Literal["auto", "leave_one_out"]
    drop_unknown_items: bool
    drop_empty_text: bool


class WorkspaceConfig(Section):
    root: str
    lock_wait_s: float = Field(ge=0)
    stale_lock_s: float = Field(gt=0)


class SaidConfig(Section):
    soft_tokens: int = Field(ge=1)
    item_dim: int = Field(ge=1)
    item_init: Literal["random", "text"]
    projector_width: int = Field(ge=1)
    lr: float = Field(gt=0)
    item_lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    schedule: Literal["constant", "linear", "cosine"]
    warmup_steps: int = Field(ge=0)
    epochs: int = Field(ge=1)
    max_steps: int | None = Field(ge=1)
    grad_accum: int = Field(ge=1)
    gradient_checkpointing: bool
    pooling: Literal["mean", "concat"]


class ExportConfig(Section):
    normalise: Literal["none", "l2"]
    index: Literal["flat", "hnsw", "ivfpq"]
    hnsw_m: int = Field(ge=2)
    ivf_lists: int = Field(ge=1)
    pq_m: int = Field(ge=1)


class EvidenceConfig(Section):
    items: int = Field(ge=0)
    attribute: str | None
    separator: str | None
    neighbour_queries: int = Field(ge=1)


class AlignConfig(Section):
    method: Literal["said", "text", "recformer"]
    lm: str
    encoder: str
    model_cache: str
    offline: bool
    template: str
    max_text_tokens: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    length_pool: int = Field(ge=1)
    seed: int
    mixed_precision: MixedPrecision
    lm_dtype: Literal["float32", "bfloat16", "float16"]
    attention: Literal["auto", "eager", "sdpa"]
    checkpoint_every: int = Field(ge=0)
    said: SaidConfig
    export: ExportConfig
    evidence: EvidenceConfig


class RecformerPretrainConfig(Section):
    mlm_probability: float = Field(gt=0, lt=1)
    mlm_weight: float = Field(ge=0)
    batch_size: int = Field(ge=2)
    learning_rate: float = Field(gt=0)
    warmup_steps: int = Field(ge=0)
    weight_decay: float = Field(ge=0)
    max_grad_norm: float = Field(gt=0)
    epochs: int = Field(ge=1)
    max_steps: int | None = Field(ge=0)
    datasets: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]]
    seed: int


class RecformerEncodeConfig(Section):
    batch_size: int = Field(ge=1)
    chunk_items: int = Field(ge=1)


class RecformerFinetuneConfig(Section):
    batch_size: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    max_grad_norm: float = Field(gt=0)
    stage1_epochs: int = Field(ge=0)
    stage2_epochs: int = Field(ge=0)
    patience: int = Field(ge=1)
    examples: Literal["all", "one_per_user"]
    mixed_precision: MixedPrecision
    checkpoint_every: int = Field(ge=0)
    seed: int


class RecformerConfig(Section):
    model: str | None
    attributes: list[str] | None
    max_attribute_tokens: int = Field(ge=1)
    max_items: int = Field(ge=1)
    max_tokens: int = Field(ge=2)
    pooling: Literal["cls", "mean"]
    temperature: float = Field(gt=0)
    pretrain: RecformerPretrainConfig
    encode: RecformerEncodeConfig
    finetune: RecformerFinetuneConfig
class ModelConfig(Section):
    """The downstream model's architecture and its item side."""

    kind: Literal["sasrec", "gru4rec", "said_light", "recformer"]
    hidden_size: int = Field(ge=1)
    layers: int = Field(ge=1)
    heads: int = Field(ge=1)
    feedforward_size: int | None = Field(ge=1)
    norm: Literal["pre", "post"]
    positions: Literal["newest", "oldest"]
    dropout: float = Field(ge=0, lt=1)
    max_length: int = Field(ge=1)
    pooling: Literal["mean", "attention"]
    adapter: Literal["linear", "mlp", "whiten"]
    id_embedding: bool
    freeze_embeddings: bool


class TrainConfig(Section):
    loss: Literal["auto", "ce", "sampled", "bce"]
    full_softmax_max_items: int = Field(ge=1)
    negatives: int = Field(ge=1)
    sampler: Literal["uniform", "popularity"]
    batch_size: int = Field(ge=1)
    length_pool: int = Field(ge=1)
    batch_by: Literal["windows", "targets"]
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    max_epochs: int = Field(ge=1)
    patience: int = Field(ge=1)
    seed: int = Field(ge=0)
    init: Literal["scratch", "previous"]


class EvaluateConfig(Section):
    ks: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)
    mask_history: bool
    batch_size: int = Field(ge=1)


class IndexConfig(Section):
    kind: Literal["flat", "hnsw"]
    hnsw_m: int = Field(ge=2)
    ef_search: int = Field(ge=1)


class DownstreamConfig(Section):
    embeddings: str | None
    missing_items: Literal["error", "id_vector"]
    model: ModelConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    index: IndexConfig


class RecommendConfig(Section):
    run: str
    k: int = Field(ge=1)
    users: list[str] | None
    search: Literal["exact", "faiss"]
    filter_history: bool
    batch_size: int = Field(ge=1)


class ReportConfig(Section):
    """`seqrec-pipeline report`: read by no stage, so no run id hashes it."""

    dir: str | None
    on_run: bool
    examples: int = Field(ge=0)
    map_items: int = Field(ge=2)
    map_values: int = Field(ge=1)
    seed: int


class TrackingConfig(Section):
    """Where published runs are also logged: read by no stage, so no run id hashes it."""

    backend: Literal["none", "tensorboard", "mlflow"]
    dir: str | None


class PipelineConfig(Section):
    workspace: WorkspaceConfig
    data: DataConfig
    align: AlignConfig
    recformer: RecformerConfig
    downstream: DownstreamConfig
    recommend: RecommendConfig
    report: ReportConfig
    tracking: TrackingConfig


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `tree` with `a.b.c=value` overrides applied; values are parsed as YAML."""
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"--set {override!r}: expected KEY=VALUE, e.g. data.kcore_users=5")
        nested: Any = yaml.load(raw, Loader=_Loader) if raw.strip() else None
        for part in reversed(key.strip().split(".")):
            nested = {part: nested}
        tree = _merge(tree, nested)
    return tree


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        tree = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_Loader) or {}
    except FileNotFoundError:
        raise BadInput(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: a folder, not a config file") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read the config file ({exc.strerror})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(tree, dict):
        raise BadInput(f"{path}: the top level must be a mapping of sections")
    return tree


def _format_errors(error: ValidationError, source: str) -> str:
    problems = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        problems.append(f"{key}: {message}")
    return f"{source}: " + "; ".join(problems)


@dataclass(frozen=True)
class Resolved:
    """A validated config, the tree it was validated from, and where each leaf's value came from."""

    config: PipelineConfig
    tree: dict[str, Any]
    sources: dict[str, str]  # dotted key -> "default", a config file's path, $SEQREC_WORKSPACE, --workspace, --set


def resolve_config(path: Path | None = None, overrides: list[str] | None = None,
                   workspace: str | None = None) -> Resolved:
    """The defaults from `pipeline.yaml`, then the file at `path` (its relative paths read against its folder),
    then `$SEQREC_WORKSPACE`, `workspace` (`--workspace`) and the overrides, validated.

    Raises:
        BadInput: a file is missing or not YAML, or keys are unknown, mistyped or out of range;
            every problem is listed with its dotted key.
    """
    tree = _read_yaml(DEFAULTS_PATH)
    found = sources.origins(tree, sources.DEFAULT)
    source = str(DEFAULTS_PATH.name)
    if path is not None and Path(path).resolve() != DEFAULTS_PATH.resolve():
        mine = sources.anchor_paths(_read_yaml(path), Path(path).absolute().parent)
        tree = _merge(tree, mine)
        found.update(sources.origins(mine, str(path)))
        source = str(path)
    from_env = os.environ.get(sources.WORKSPACE_ENV)
    for origin, root in ((f"${sources.WORKSPACE_ENV}", from_env), ("--workspace", workspace)):
        if root:
            tree = _merge(tree, {"workspace": {"root": root}})
            found["workspace.root"] = origin
    for override in overrides or []:
        tree = apply_overrides(tree, [override])
        found.update(sources.origins(tree, "--set", under=override.partition("=")[0].strip()))
    sources.fill_data_path(tree, found)
    try:
        return Resolved(PipelineConfig.model_validate(tree), tree, found)
    except ValidationError as exc:
        raise BadInput(_format_errors(exc, source)) from None


def load_config(path: Path | None = None, overrides: list[str] | None = None,
                workspace: str | None = None) -> PipelineConfig:
    """The validated config of `resolve_config` (the defaults, `path`, the workspace, the overrides)."""
    return resolve_config(path, overrides, workspace).config


def saved_section(section: str, saved: dict[str, Any]) -> dict[str, Any]:
    """A config section saved beside an older run, completed with the keys added since at today's default
    (an added setting's default keeps what older runs did), so the run can still be loaded and served."""
    def complete(values: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
        out = dict(values)
        for key, default in defaults.items():
            if isinstance(default, dict) and isinstance(out.get(key), dict):
                out[key] = complete(out[key], default)
            elif key not in out:
                out[key] = default
        return out

    return complete(saved, _read_yaml(DEFAULTS_PATH)[section])


@functools.cache
def code_release() -> str:
    """The installed release of this package ("source" when run from an uninstalled checkout)."""
    try:
        return importlib.metadata.version("seqrec-pipeline")
    except importlib.metadata.PackageNotFoundError:
        return "source"
