"""Which documents go where: text hashes, the stable held-out split, the per-source character budget
(weighted water-filling with a share cap) and seeded sampling under it."""

from __future__ import annotations

import hashlib

HELDOUT_FRACTION = 0.02


def text_hash(text: str, salt: str = "") -> int:
    return int.from_bytes(hashlib.sha1((salt + text).encode("utf-8")).digest()[:8], "big")


def is_heldout(text: str, fraction: float = HELDOUT_FRACTION) -> bool:
    """Stable split: a function of the document text alone (not of order, seed or the other documents)."""
    return text_hash(text, "heldout:") < fraction * 2**64


def allocate(available: dict[str, int], weights: dict[str, float], budget: float, max_share: float) -> dict[str, float]:
    """Weighted water-filling: each source gets its weighted share of what is left, but never more
    than it has nor more than ``max_share`` of the budget; what small sources leave goes to the others."""
    cap = max(max_share, 1.0 / max(1, len(available))) * budget
    alloc: dict[str, float] = {}
    active = set(available)
    remaining = float(budget)
    while active:
        wsum = sum(weights[s] for s in active)
        fair = {s: remaining * weights[s] / wsum for s in active}
        done = [s for s in sorted(active) if min(available[s], cap) <= fair[s]]
        if not done:
            alloc.update(fair)
            break
        for s in done:
            alloc[s] = float(min(available[s], cap))
            remaining -= alloc[s]
            active.discard(s)
    return alloc


def sample_docs(docs: list[str], budget: float, seed: int) -> list[str]:
    """Documents ranked by a seeded hash of their text, taken until the character budget is reached
    (so the choice does not depend on their order)."""
    if sum(map(len, docs)) <= budget:
        return list(docs)
    ranked = sorted(docs, key=lambda d: text_hash(d, f"sample:{seed}:"))
    out, total = [], 0
    for d in ranked:
        if total + len(d) > budget:
            break
        out.append(d)
        total += len(d)
    return out
