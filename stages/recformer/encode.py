"""Encode a whole catalog with the Recformer encoder, in chunks, with bounded memory.

Only one chunk of vectors exists at a time (chunk_items x H float32) besides the token cache, so a
catalog of millions of items streams through; within a chunk, items run in order of length so a
batch pads to similar lengths, and the chunk is yielded back in catalog order.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from accelerate import Accelerator

from pipeline.events import Tracker
from stages.recformer.inputs import SequenceFormat
from stages.recformer.model import RecformerEncoder


def encode_catalog(encoder: RecformerEncoder, fmt: SequenceFormat, batch_size: int, chunk_items: int,
                   indices: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (item ids (n,), vectors (n, H) float32) per chunk of `indices` (default: every item, in order).

    Each item is encoded as a one-item sequence, in eval mode; the encoder's mode is restored after.
    """
    indices = np.arange(len(fmt.items)) if indices is None else np.asarray(indices)
    lengths = fmt.items.lengths()
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    try:
        with Tracker("recformer item encoding", len(indices), "items") as tracker:
            for start in range(0, len(indices), chunk_items):
                chunk = indices[start:start + chunk_items]
                order = np.argsort(lengths[chunk], kind="stable")
                vectors = np.empty((len(chunk), encoder.hidden_size), np.float32)
                for b in range(0, len(chunk), batch_size):
                    rows = order[b:b + batch_size]
                    batch = {k: v.to(device) for k, v in fmt.item_batch(chunk[rows]).items()}
                    with torch.inference_mode():
                        vectors[rows] = encoder(**batch).float().cpu().numpy()
                    tracker.advance(len(rows))
                yield fmt.items.item_ids[chunk], vectors
    finally:
        encoder.train(was_training)


def item_table(encoder: RecformerEncoder, fmt: SequenceFormat, batch_size: int, chunk_items: int,
               accelerator: Accelerator) -> torch.Tensor:
    """Every item's vector (N, H) on this process's device; each process encodes one shard, then all gather."""
    shards = np.array_split(np.arange(len(fmt.items)), accelerator.num_processes)
    mine = shards[accelerator.process_index]
    local = torch.zeros(len(shards[0]), encoder.hidden_size)  # shards differ by at most one row: pad to the first
    done = 0
    for _, vectors in encode_catalog(encoder, fmt, batch_size, chunk_items, mine):
        local[done:done + len(vectors)] = torch.from_numpy(vectors)
        done += len(vectors)
    everyone = accelerator.gather(local.to(accelerator.device))  # (P * S, H)
    size = len(shards[0])
    return torch.cat([everyone[p * size: p * size + len(shard)] for p, shard in enumerate(shards)])
