"""The Monosemanticity Score (MS) of sae-for-vlm (Pach et al. 2025), for every feature at once.

Each feature's activations over N images are min-max scaled to ``ã`` in [0, 1]; with image embeddings
``E`` from a separate encoder (any: pass the embeddings, or build them with :func:`embed_images`),

    MS_k = sum_{n<m} ã_nk ã_mk cos(E_n, E_m) / sum_{n<m} ã_nk ã_mk

i.e. the activation-weighted mean similarity of the image pairs a feature fires on. Undefined (NaN)
for a feature constant over the images (dead) or active on a single image.

Computed without any loop over image pairs: with unit rows ``Ê`` (so ``cos = Ê Êᵀ``),
``sum_{n,m} ã_n ã_m cos_nm = ||Êᵀ ã||²``, and the ``n<m`` sums are half of the full sums minus the
diagonal: numerator ``(||Êᵀ ã||² - sum_n ã_n² ||Ê_n||²) / 2``, denominator
``((sum_n ã_n)² - sum_n ã_n²) / 2``. Cost: one ``[D x N] @ [N x F]`` product in float64, done in
feature chunks that bound memory; no ``N x N`` matrix.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from saesteer.errors import SaesteerError

#: bytes of float64 work space per feature chunk when ``chunk`` is not given
_CHUNK_BYTES = 256 * 2**20


def min_max_scale(activations: torch.Tensor) -> torch.Tensor:
    """Per-feature min-max scaling over images (dim 0) to [0, 1], float64; constant features -> NaN."""
    a = activations.double()
    lo, hi = a.amin(0), a.amax(0)
    span = hi - lo
    return torch.where(span > 0, (a - lo) / torch.where(span > 0, span, 1.0), torch.nan)


def monosemanticity_score(
    activations: torch.Tensor,
    embeddings: torch.Tensor,
    *,
    chunk: int | None = None,
) -> torch.Tensor:
    """MS of every feature: ``activations [N_images, F]`` (one value per image and feature, e.g. the
    mean over the image's tokens), ``embeddings [N_images, D]`` from any image encoder.

    Returns ``[F]`` float64, NaN where the score is undefined (dead or single-image features).
    Cost: O(N·D·F) multiply-adds, memory O(N·chunk + D·chunk) besides the inputs.
    """
    if activations.ndim != 2 or embeddings.ndim != 2:
        raise SaesteerError(f"need activations [N, F] and embeddings [N, D]; got {tuple(activations.shape)} "
                            f"and {tuple(embeddings.shape)}")
    N, F = activations.shape
    if embeddings.shape[0] != N:
        raise SaesteerError(f"{N} images of activations but {embeddings.shape[0]} embeddings")
    if N < 2:
        raise SaesteerError("the Monosemanticity Score needs at least 2 images")
    E = embeddings.detach().to(torch.float64)
    norms = E.norm(dim=1, keepdim=True)
    E = E / norms.clamp_min(1e-8)
    diag = (E * E).sum(1, keepdim=True)  # cos(E_n, E_n): 1, or 0 for an all-zero embedding
    step = chunk or max(1, _CHUNK_BYTES // (8 * (N + E.shape[1])))
    out = torch.empty(F, dtype=torch.float64)
    for f0 in range(0, F, step):
        a = min_max_scale(activations[:, f0:f0 + step].detach())
        dead = torch.isnan(a[0])
        a = torch.nan_to_num(a, nan=0.0).to(E.device)
        proj = E.T @ a  # [D, c]
        num = (proj * proj).sum(0) - (a * a * diag).sum(0)
        s1, s2 = a.sum(0), (a * a).sum(0)
        den = s1 * s1 - s2
        ms = torch.where(den > 0, num / torch.where(den > 0, den, 1.0), torch.nan)
        ms[dead.to(ms.device)] = torch.nan
        out[f0:f0 + step] = ms.cpu()
    return out


def embed_images(embed: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """Embeddings ``[N, D]`` of image batches under any image encoder ``embed`` (pixel batch ->
    ``[n, D]``), concatenated on the CPU, without gradients. Cost: one ``embed`` call per batch."""
    out = []
    with torch.no_grad():
        for b in batches:
            e = embed(b)
            if not isinstance(e, torch.Tensor) or e.ndim != 2:
                raise SaesteerError(f"the embedding function must return [n, D]; got {type(e).__name__}")
            out.append(e.detach().float().cpu())
    if not out:
        raise SaesteerError("no image batches to embed")
    return torch.cat(out)


def image_features_embedder(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """An ``embed`` for :func:`embed_images` from a transformers model with ``get_image_features``
    (a dual image-text encoder, say): pixel values -> its image embedding (the ``pooler_output`` of
    what transformers 5 returns, or the tensor itself)."""
    get = getattr(model, "get_image_features", None)
    if get is None:
        raise SaesteerError(f"{type(model).__name__} has no get_image_features; pass your own embed function")
    param = next((p for p in model.parameters() if p.is_floating_point()), None)

    def embed(pixel_values: torch.Tensor) -> torch.Tensor:
        if param is not None:
            pixel_values = pixel_values.to(param.device, param.dtype)
        out = get(pixel_values=pixel_values)
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    return embed
