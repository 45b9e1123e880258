"""Recformer item encoding: generated "key value" items through the streaming catalog encoder.

Two measurements in one process, both through `stages.recformer.encode.encode_catalog` (chunks of
`--chunk-items` vectors, consumed and dropped as a writer would):
1. throughput: `--items` items through the real all-MiniLM-L6-v2 weights; items/s and the encoder's useful
   FLOP/s (real tokens only, no padding) as a share of this run's measured float32 matmul peak;
2. memory: `--memory-items` items (tokenised in slices of 100k, as a catalog would be) through a tiny
   2-layer encoder over the same vocabulary, to show that peak memory stays bounded however many items.
`peak_rss_gib` is the process's peak resident memory over both parts.

Run from the repository root: python -m benchmarks.item_encoding [--items 20000 --memory-items 1000000]
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

from benchmarks import _args, _results
from stages.recformer.build import model_path
from stages.recformer.encode import encode_catalog
from stages.recformer.inputs import ItemTokens, SequenceFormat, tokenize_catalog
from stages.recformer.model import RecformerEncoder

ATTRIBUTES = ["title", "brand", "category", "color", "material"]
_SLICE = 100_000


def vocabulary(tokenizer) -> np.ndarray:
    """Whole lower-case words of the tokenizer's vocabulary: generated text that tokenises like real text."""
    words = [w for w in tokenizer.get_vocab() if w.isalpha() and w.islower() and len(w) > 2]
    return np.array(sorted(words), dtype=object)


def items(start: int, count: int, words: np.ndarray, rng: np.random.Generator) -> pa.Table:
    """`count` items: a 4-10 word title and one or two words for each other attribute."""
    def phrase(low: int, high: int) -> list[str]:
        lengths = rng.integers(low, high + 1, count)
        picks = words[rng.integers(0, len(words), lengths.sum())]
        return [" ".join(part) for part in np.split(picks, np.cumsum(lengths)[:-1])]

    columns = {"item_id": [f"i{start + n}" for n in range(count)], "title": phrase(4, 10)}
    columns.update({name: phrase(1, 2) for name in ATTRIBUTES[1:]})
    return pa.table(columns)


def catalog(count: int, tokenizer, words: np.ndarray, max_attribute_tokens: int) -> ItemTokens:
    rng = np.random.default_rng(0)
    parts = [tokenize_catalog(items(start, min(_SLICE, count - start), words, rng), ATTRIBUTES, tokenizer,
                              max_attribute_tokens) for start in range(0, count, _SLICE)]
    return ItemTokens.concat(parts)


def encoder_flops(encoder: RecformerEncoder, lengths: np.ndarray) -> float:
    """Forward FLOPs of encoding items of `lengths` tokens (CLS included): dense layers + attention scores."""
    config = encoder.backbone_config
    h, inner, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    tokens, squares = float(lengths.sum()), float((lengths.astype(np.float64) ** 2).sum())
    dense = 2 * tokens * (4 * h * h + 2 * h * inner)  # Q, K, V, output projections and the feed-forward
    attention = 4 * squares * h  # QK^T and attention x V
    return layers * (dense + attention)


def encode(encoder: RecformerEncoder, fmt: SequenceFormat, batch_size: int, chunk_items: int) -> float:
    """Seconds to stream every item through the encoder; each chunk is dropped once received."""
    started = time.perf_counter()
    for _ids, vectors in encode_catalog(encoder, fmt, batch_size, chunk_items):
        assert np.isfinite(vectors).all()
    return time.perf_counter() - started


def describe(encoder: Path | None, model: RecformerEncoder) -> str:
    """The timed encoder's name and shape, as the results name it."""
    config = model.backbone_config
    name = "all-MiniLM-L6-v2" if encoder is None else str(encoder)
    return f"{name} ({config.num_hidden_layers} layers, hidden {config.hidden_size})"


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


@_args.reports_errors
def main() -> None:
    parser = _args.parser(__doc__)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--memory-items", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunk-items", type=int, default=8192)
    parser.add_argument("--max-attribute-tokens", type=int, default=32)
    parser.add_argument("--encoder", type=_args.existing_dir,
                        help="a Hugging Face folder (encoder + tokenizer) timed instead of all-MiniLM-L6-v2")
    _args.add_peak_size(parser)
    args = parser.parse_args()
    torch.manual_seed(0)
    peak = _results.matmul_peak_gflops(args.peak_size)
    folder = args.encoder or model_path(None)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    words = vocabulary(tokenizer)

    cache = catalog(args.items, tokenizer, words, args.max_attribute_tokens)
    minilm = RecformerEncoder(AutoModel.from_pretrained(folder), max_items=50, pooling="cls")
    fmt = SequenceFormat(cache, tokenizer.cls_token_id, tokenizer.pad_token_id, max_items=50, max_tokens=512)
    seconds = encode(minilm, fmt, args.batch_size, args.chunk_items)
    lengths = np.minimum(cache.lengths() + 1, 512)
    gflops = encoder_flops(minilm, lengths) / seconds / 1e9
    rss_after_minilm = rss_gib()
    model_name = describe(args.encoder, minilm)
    del minilm, cache, fmt

    started = time.perf_counter()
    big = catalog(args.memory_items, tokenizer, words, args.max_attribute_tokens)
    tokenize_s = time.perf_counter() - started
    tiny = RecformerEncoder(BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                                 num_attention_heads=2, intermediate_size=64)),
                            max_items=50, pooling="cls")
    memory_s = encode(tiny, SequenceFormat(big, tokenizer.cls_token_id, tokenizer.pad_token_id, 50, 512),
                      args.batch_size * 4, args.chunk_items)
    results = {
        "items": args.items, "model": model_name,
        "mean_tokens_per_item": round(float(lengths.mean()), 1), "batch_size": args.batch_size,
        "chunk_items": args.chunk_items, "seconds": round(seconds, 2), "items_per_s": round(args.items / seconds, 1),
        "encoder_gflops": round(gflops, 2), "matmul_peak_gflops": round(peak, 2),
        "fraction_of_matmul_peak": round(gflops / peak, 3), "peak_rss_gib_after_minilm": round(rss_after_minilm, 3),
        "memory_items": args.memory_items, "memory_model": "tiny BERT (2 layers, hidden 32), same vocabulary",
        "memory_tokenize_s": round(tokenize_s, 1), "memory_encode_s": round(memory_s, 1),
        "token_cache_mib": round((big.ids.nbytes + big.types.nbytes + big.offsets.nbytes) / 2**20, 1),
        "peak_rss_gib": round(rss_gib(), 3)}
    _results.write("item_encoding", results, [
        (f"items encoded with {model_name}", f"{args.items:,} (mean {results['mean_tokens_per_item']} tokens)"),
        ("items/s", f"{results['items_per_s']:,.1f}"),
        ("encoder GFLOP/s (real tokens) / float32 matmul peak", f"{gflops:.1f} / {peak:.1f}"),
        ("fraction of matmul peak", f"{results['fraction_of_matmul_peak']:.3f}"),
        ("items streamed for the memory check (tiny encoder)", f"{args.memory_items:,}"),
        ("token cache of those items (MiB)", results["token_cache_mib"]),
        ("peak RSS over the whole run (GiB; target < 4)", results["peak_rss_gib"])])


if __name__ == "__main__":
    main()
