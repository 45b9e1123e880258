"""Save and load a trained Recformer encoder, so a later run can resume or embed new items.

A checkpoint folder holds the backbone's Hugging Face config (`config.json`, to rebuild the layer
stack without its original weights), the tokenizer, the encoder's own arguments
(`recformer.json`) and every encoder weight (`recformer.safetensors`).
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_model, save_model
from transformers import AutoConfig, AutoModel, PreTrainedTokenizerBase

from pipeline.config import RecformerConfig
from pipeline.errors import BadInput
from pipeline.integrity import sha256_file
from stages.recformer.model import RecformerEncoder

ENCODER_DIR = "encoder"  # where an embeddings or downstream run keeps its encoder
WEIGHTS = "recformer.safetensors"
ARGUMENTS = "recformer.json"


def is_checkpoint(folder: Path) -> bool:
    return (folder / WEIGHTS).is_file() and (folder / ARGUMENTS).is_file()


def model_identity(config: RecformerConfig) -> str | None:
    """The sha256 of a checkpoint's weights when `recformer.model` is a Recformer checkpoint folder, else None.

    Run ids hash it: a path such as `.../latest/encoder` stays the same while the weights behind it change.
    """
    if config.model is None or not is_checkpoint(Path(config.model)):
        return None
    return sha256_file(Path(config.model) / WEIGHTS)


def save_encoder(encoder: RecformerEncoder, tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    """Write the encoder and its tokenizer into `folder` (created if needed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    encoder.backbone_config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    arguments = {"max_items": encoder.max_items, "pooling": encoder.pooling}
    (folder / ARGUMENTS).write_text(json.dumps(arguments, indent=2) + "\n", encoding="utf-8")
    save_model(encoder, str(folder / WEIGHTS))


def load_encoder(folder: Path) -> RecformerEncoder:
    """The encoder saved by `save_encoder` (its tokenizer loads with `AutoTokenizer.from_pretrained(folder)`).

    Raises:
        BadInput: the folder is not a Recformer checkpoint.
    """
    folder = Path(folder)
    if not is_checkpoint(folder):
        raise BadInput(f"{folder}: not a Recformer checkpoint (no {WEIGHTS} or {ARGUMENTS})")
    arguments = json.loads((folder / ARGUMENTS).read_text(encoding="utf-8"))
    backbone = AutoModel.from_config(AutoConfig.from_pretrained(folder))
    encoder = RecformerEncoder(backbone, arguments["max_items"], arguments["pooling"])
    load_model(encoder, str(folder / WEIGHTS))
    return encoder
