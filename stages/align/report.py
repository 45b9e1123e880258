"""One readable paragraph of an embeddings run's evidence, for the end of `align`."""

from __future__ import annotations

from typing import Any


def summary(manifest: dict[str, Any]) -> str:
    """The prefix-loss comparison and the neighbour check, as far as the run measured them."""
    lines = [(f"{manifest.get('method')} embeddings: {manifest.get('rows'):,} rows x {manifest.get('dim')} "
              f"({manifest.get('items_embedded'):,} of them embedded when the run was made)")]
    evidence = manifest.get("evidence") or {}
    losses = evidence.get("prefix_loss") or {}
    if "learned_prefix" in losses:
        parts = [f"{name.replace('_', ' ')} {losses[name]['loss']:.3f} (ppl {losses[name]['perplexity']:,.1f})"
                 for name in ("learned_prefix", "no_prefix", "other_item_prefix")]
        lines.append(f"text loss per token on {losses['items']} items: " + ", ".join(parts))
    neighbours = evidence.get("neighbours") or {}
    if "nearest_neighbour_share_rate" in neighbours:
        lines.append(f"nearest neighbour shares {neighbours['attribute']}: {neighbours['nearest_neighbour_share_rate']:.1%}"
                     f" vs random pairs {neighbours['random_pair_share_rate']:.1%} ({neighbours['queries']} queries)")
    return "\n".join(lines)
