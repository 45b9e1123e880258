"""The config's sections as typed classes, mirroring `pipeline.yaml` one-to-one: names, types, ranges and each
key's description (`pipeline.yaml`'s comment on the key says the same, checked by tests/test_config_docs.py)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from pipeline.schema.align import AlignConfig, EvidenceConfig, ExportConfig, SaidConfig
from pipeline.schema.base import MixedPrecision, Section
from pipeline.schema.data import ColumnsConfig, DataConfig, TextConfig, WorkspaceConfig
from pipeline.schema.downstream import (
    DownstreamConfig,
    EvaluateConfig,
    IndexConfig,
    ModelConfig,
    RecommendConfig,
    ReportConfig,
    TrackingConfig,
    TrainConfig,
)
from pipeline.schema.recformer import (
    RecformerConfig,
    RecformerEncodeConfig,
    RecformerFinetuneConfig,
    RecformerPretrainConfig,
)

__all__ = [
    "AlignConfig", "ColumnsConfig", "DataConfig", "DownstreamConfig", "EvaluateConfig", "EvidenceConfig",
    "ExportConfig", "IndexConfig", "MixedPrecision", "ModelConfig", "PipelineConfig", "RecformerConfig",
    "RecformerEncodeConfig", "RecformerFinetuneConfig", "RecformerPretrainConfig", "RecommendConfig",
    "ReportConfig", "SaidConfig", "Section", "TextConfig", "TrackingConfig", "TrainConfig", "WorkspaceConfig",
    "descriptions",
]


class PipelineConfig(Section):
    workspace: WorkspaceConfig = Field(description=(
        "where runs are written, and how jobs sharing it wait for each other"))
    data: DataConfig = Field(description="the raw dataset `prepare` reads and the cleaning it applies")
    align: AlignConfig = Field(description=(
        "stage one: item embeddings aligned with a language model (`seqrec-pipeline align`)"))
    recformer: RecformerConfig = Field(description=(
        "Recformer (Li et al., KDD 2023): items as \"key value\" text, users as item-text sequences"))
    downstream: DownstreamConfig = Field(description=(
        "stage two: a sequential recommender on frozen item embeddings (no LM loaded)"))
    recommend: RecommendConfig = Field(description=(
        "`seqrec-pipeline recommend`: the top items per user from a downstream run"))
    report: ReportConfig = Field(description=(
        "`seqrec-pipeline report`: one offline HTML page per downstream run or comparison"))
    tracking: TrackingConfig = Field(description=(
        "also log each run a command publishes to an experiment tracker (Accelerate's trackers)"))


def descriptions(model: type[BaseModel] = PipelineConfig, prefix: str = "") -> dict[str, str]:
    """Every key of `model` and of its sections, dotted, with its description (`config --explain`)."""
    found = {}
    for name, info in model.model_fields.items():
        found[f"{prefix}{name}"] = info.description or ""
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            found.update(descriptions(info.annotation, f"{prefix}{name}."))
    return found
