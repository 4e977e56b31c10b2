"""The one reader of a host model's forward arguments.

Every module that needs to know what a top-level forward (or a ``generate``) was called with asks
here: how many rows and tokens, which tokens are pads, where each token sits in its sequence, how
long the prompt handed to ``generate`` is. Nothing else in saesteer parses HF's arguments.

What transformers passes differs between versions, so positions are read from what every version
passes, in this order:

1. the 2-D attention mask, when there is one covering the past and the current tokens: absolute
   position = number of real tokens before (left padding aware), pads marked;
2. ``position_ids`` (``[B, T]`` or ``[1, T]``): transformers 5.24+ ``generate`` passes them, with no
   attention mask when nothing is padded and no ``cache_position``;
3. ``cache_position`` (older 4.x / 5.x ``generate``);
4. the KV cache object's own ``get_seq_length()``, under ``cache`` (5.24+) or ``past_key_values``;
5. otherwise a new sequence: positions ``0..T-1``.

Cost: a few dictionary look-ups and, with a mask, one cumulative sum over ``[B, past + T]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

#: keyword names under which transformers versions pass the KV cache to a forward
CACHE_KEYS = ("cache", "past_key_values")


@dataclass(frozen=True)
class CallInputs:
    """What a forward was called with, as far as steering needs it.

    ``tokens`` is ``input_ids [B, T]`` or ``inputs_embeds [B, T, d]`` (None when neither is given);
    ``attention_mask`` the 2-D mask when one was passed (a 4-D mask is not a pad mask and is ignored);
    ``position_ids`` the 2-D position ids when given; ``cache`` the KV cache object when given."""

    tokens: torch.Tensor | None
    attention_mask: torch.Tensor | None
    position_ids: torch.Tensor | None
    cache_position: torch.Tensor | None
    cache: Any

    @property
    def rows(self) -> int | None:
        """Batch rows of the call, or None when it holds no token tensor."""
        return int(self.tokens.shape[0]) if self.tokens is not None else None

    @property
    def length(self) -> int | None:
        """Tokens per row in this forward (not counting the KV cache)."""
        return int(self.tokens.shape[1]) if self.tokens is not None else None

    def past_length(self) -> int:
        """Tokens already in the KV cache before this forward (0 for a new sequence). Read from
        ``cache_position``, then the cache's ``get_seq_length()``; ``position_ids`` are used by
        :meth:`token_positions` directly."""
        cp = self.cache_position
        if isinstance(cp, torch.Tensor) and cp.numel():
            return int(cp.reshape(-1)[0])
        cache = self.cache
        if cache is not None and hasattr(cache, "get_seq_length"):
            try:
                return int(cache.get_seq_length())
            except Exception:  # pragma: no cover - exotic cache types without a length
                return 0
        return 0

    def token_positions(self) -> tuple[torch.Tensor, torch.Tensor, int] | None:
        """``(pos [B, T], valid [B, T], past)``: each token's absolute position in its sequence,
        whether it is a real token (not a pad), and how many tokens the cache held before; None when
        the call holds no ``[B, T, ...]`` token tensor."""
        ids = self.tokens
        if ids is None:
            return None
        B, T = int(ids.shape[0]), int(ids.shape[1])
        dev = ids.device
        am = self.attention_mask
        if am is not None and am.shape[0] == B and am.shape[1] >= T:
            m = am.to(dev) != 0
            return (m.long().cumsum(1) - 1)[:, -T:], m[:, -T:], int(am.shape[1] - T)
        valid = torch.ones(B, T, dtype=torch.bool, device=dev)
        pid = self.position_ids
        if pid is not None and pid.shape[-1] == T and pid.shape[0] in (1, B) and not pid.is_floating_point():
            pos = pid.to(dev).long().expand(B, T)
            return pos, valid, int(pos[:, 0].min())
        past = self.past_length()
        return (torch.arange(T, device=dev) + past).unsqueeze(0).expand(B, T), valid, past


def read(args: tuple, kwargs: dict[str, Any]) -> CallInputs:
    """Read a causal-LM style forward's arguments: ``input_ids`` (or the first positional tensor,
    or ``inputs_embeds``), the 2-D ``attention_mask`` (keyword or second positional), 2-D
    ``position_ids``, ``cache_position`` and the KV cache under any name transformers used."""
    ids = kwargs.get("input_ids")
    if ids is None and args and isinstance(args[0], torch.Tensor):
        ids = args[0]
    if ids is None:
        ids = kwargs.get("inputs_embeds")
    if not isinstance(ids, torch.Tensor) or ids.ndim < 2:
        ids = None
    am = kwargs.get("attention_mask")
    if am is None and len(args) > 1 and isinstance(args[1], torch.Tensor):
        am = args[1]
    if not (isinstance(am, torch.Tensor) and am.ndim == 2):
        am = None
    pid = kwargs.get("position_ids")
    if not (isinstance(pid, torch.Tensor) and pid.ndim == 2):
        pid = None  # 3-D (multimodal rope) ids say nothing simple about token order
    cp = kwargs.get("cache_position")
    cache = next((kwargs[k] for k in CACHE_KEYS if kwargs.get(k) is not None), None)
    return CallInputs(ids, am, pid, cp if isinstance(cp, torch.Tensor) else None, cache)


def prompt_lengths(args: tuple, kwargs: dict[str, Any]) -> torch.Tensor | None:
    """Real (non-pad) tokens per row of the prompt a caller hands to ``generate``; None when the call
    holds no 2-D token tensor."""
    ci = read(args, kwargs)
    if ci.attention_mask is not None:
        return (ci.attention_mask != 0).sum(1)
    if ci.tokens is not None:
        return torch.full((ci.tokens.shape[0],), ci.tokens.shape[1], device=ci.tokens.device)
    return None


def valid_mask(args: tuple, kwargs: dict[str, Any], shape: tuple[int, int]) -> torch.Tensor:
    """The ``[B, T]`` real-token mask of a plain forward's inputs (all True without a matching mask)."""
    am = read(args, kwargs).attention_mask
    if am is not None and tuple(am.shape) == tuple(shape):
        return am != 0
    return torch.ones(shape, dtype=torch.bool)


def token_ids(args: tuple, kwargs: dict[str, Any]) -> torch.Tensor | None:
    """The call's ``input_ids`` (keyword or first positional), None when it passes embeddings."""
    ids = kwargs.get("input_ids", args[0] if args else None)
    return ids if isinstance(ids, torch.Tensor) and not ids.is_floating_point() else None
