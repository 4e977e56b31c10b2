"""Which images a feature fires on most, and where in an image it fires: what a feature browser shows.

>>> acts = image_activations(vlm, batches)                 # [N_images, d_sae]
>>> top = top_images(acts, features=[123, 456], k=16)      # top.indices[i] index the image set
>>> heat = patch_activation_map(vlm, pixel_values, 123)    # [n, grid, grid] per-patch activation
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from saesteer.errors import EditError, SaesteerError
from saesteer.metrics.image_activations import hooked_tokens


@dataclass
class TopImages:
    """``indices [n_features, k]`` (rows of the image set, best first) and their ``values``, for
    ``features`` (the feature ids, one per row)."""

    features: list[int]
    values: torch.Tensor
    indices: torch.Tensor

    def of(self, feature: int) -> list[tuple[int, float]]:
        """``[(image index, activation), ...]`` of one feature, best first, zero activations left out."""
        row = self.features.index(feature)
        return [(int(i), float(v)) for i, v in zip(self.indices[row], self.values[row]) if v > 0]


def top_images(
    activations: torch.Tensor,
    features: int | Sequence[int] | None = None,
    k: int = 16,
) -> TopImages:
    """The ``k`` images (rows of ``activations [N_images, d_sae]``) with the highest activation of each
    of ``features`` (every feature when None). Cost: one top-k over the image axis per feature."""
    if activations.ndim != 2:
        raise SaesteerError(f"need activations [N_images, d_sae]; got {tuple(activations.shape)}")
    N, F = activations.shape
    feats = list(range(F)) if features is None else [features] if isinstance(features, int) else list(features)
    bad = [f for f in feats if not 0 <= int(f) < F]
    if bad:
        raise EditError(f"feature {bad[0]} is out of range for {F} features")
    k = min(k, N)
    cols = activations[:, feats].float()
    values, indices = cols.topk(k, dim=0)
    return TopImages([int(f) for f in feats], values.T.contiguous().cpu(), indices.T.contiguous().cpu())


def patch_activation_map(steered: Any, pixel_values: torch.Tensor, feature: int, *,
                         hook: str | None = None) -> torch.Tensor:
    """Activation of ``feature`` at every patch of each image: ``[n, rows, cols]`` for a square patch
    grid (``[n, n_patches]`` otherwise), float32 on the CPU; CLS tokens left out. Cost: the vision
    tower up to the hook and an encode of one feature per token (full encode for TopK SAEs)."""
    x, att = hooked_tokens(steered, pixel_values, hook)
    sae = att.sae_for(x.device)
    sae.check_feature(feature)
    patches = x[:, att.point.image.cls_tokens:]
    with torch.no_grad():
        f = sae.encode_subset(patches.to(sae.dtype), torch.tensor([int(feature)], device=x.device))[..., 0]
    side = math.isqrt(f.shape[1])
    f = f.float().cpu()
    return f.reshape(f.shape[0], side, side) if side * side == f.shape[1] else f
