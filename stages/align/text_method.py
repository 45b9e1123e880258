"""`align.method: text`: the baseline, mean-pooled last hidden states of a frozen encoder (nothing trained)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from accelerate import Accelerator

from pipeline.config import AlignConfig, PipelineConfig
from stages.align import model_id
from stages.align.lm import Loaded, load_encoder
from stages.align.method import STAGE_READS, AlignPlan, Embedded, check_dim, frozen_model, tokens_to_embed
from stages.align.text_encoder import encode


@dataclass(frozen=True)
class TextMethod:
    """The frozen text encoder as stage one's method table asks for it (`stages.align.method.Method`);
    `align.encoder: lm` pools the causal LM of `align.lm` instead."""

    def model_name(self, config: PipelineConfig) -> str:
        return frozen_model(config.align, config.align.encoder == "lm")[0]

    def pooling(self, config: PipelineConfig) -> str:
        return "mean_tokens"

    def model_identity(self, config: PipelineConfig) -> dict[str, object]:
        align = config.align
        return model_id.identify(*frozen_model(align, align.encoder == "lm"), align.model_cache, align.offline)

    def settings_read(self, config: PipelineConfig) -> list[object]:
        return [config.align.model_dump(mode="json", include=STAGE_READS)]

    def pretrain_dirs(self, config: PipelineConfig) -> list[Path]:
        return []

    def full_run_inputs(self, config: PipelineConfig, dataset_run: str, pretrain_dirs: list[Path]) -> list[object]:
        return []

    def describe(self, config: PipelineConfig, items: int) -> str:
        return ""

    def load(self, accelerator: Accelerator, align: AlignConfig) -> tuple[Loaded, int]:
        """The frozen encoder and the dimension of its vectors."""
        with accelerator.main_process_first():  # one process converts a GGUF model; the others read the result
            loaded = load_encoder(*frozen_model(align, align.encoder == "lm"), align.model_cache, align.offline,
                                  align.lm_dtype)
        return loaded, loaded.model.config.hidden_size

    def embed(self, accelerator: Accelerator, config: PipelineConfig, planned: AlignPlan, dataset_dir: Path,
              folder: Path) -> Embedded:
        align = config.align
        loaded, dim = self.load(accelerator, align)
        check_dim(planned.base, dim)
        tokens = tokens_to_embed(accelerator, align, planned, loaded, folder, special_tokens=True)
        mine, vectors = encode(accelerator, loaded.model, tokens, align.batch_size, loaded.tokenizer.pad_token_id)
        return Embedded(vectors, {"evidence": {}}, loaded.source, tokens.truncated, lambda _folder: None, mine.start)

    def carry_over(self, planned: AlignPlan, folder: Path) -> None:
        return None  # nothing but the vectors
