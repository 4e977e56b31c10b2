"""SAE feature activations of images, read at a hook that sees image tokens (a vision tower).

Only the vision tower runs, and only up to the hooked layer: the forward is cut short by a tap with
``stop=True`` (:func:`saesteer.runtime.taps.tap`: put first, removed before returning, also on error). The
host's other parts (a language model) never run, and no edit is applied.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

from saesteer.errors import HookError, SaesteerError
from saesteer.positions import PositionsLike, as_positions
from saesteer.runtime.taps import tap

REDUCTIONS = ("mean", "max", "sum")


def _pixels(item: Any) -> torch.Tensor:
    pv = item.get("pixel_values") if isinstance(item, dict) else item
    if not isinstance(pv, torch.Tensor) or pv.ndim != 4:
        raise SaesteerError("image batches must be pixel_values [n, C, H, W] tensors (or dicts holding one); "
                            "for a model that feeds its tower several crops per image, pass one crop per image")
    return pv


def hooked_tokens(steered: Any, pixel_values: torch.Tensor, hook: str | None = None) -> tuple[torch.Tensor, Any]:
    """The activation ``[n, T, d_in]`` that the SAE at ``hook`` (the only one by default) reads for
    these images, and its attachment. Cost: the vision tower up to the hooked layer."""
    att = steered.attachment(hook)
    name = att.name
    image = att.point.image
    if image is None or image.tower is None:
        raise HookError(f"{name} does not read image tokens; image metrics need a hook on a vision tower")
    param = next((p for p in image.tower.parameters() if p.is_floating_point()), None)
    if param is not None:
        pixel_values = pixel_values.to(param.device, param.dtype)
    with tap(att.point, stop=True, prepend=True) as caught, torch.no_grad():
        image.tower(pixel_values=pixel_values)
    if caught.x is None:
        raise HookError(f"the vision tower never reached {name}")
    return caught.x, att


def image_activations(
    steered: Any,
    images: Iterable[Any],
    *,
    hook: str | None = None,
    positions: PositionsLike = "all",
    reduce: str = "mean",
) -> torch.Tensor:
    """One activation per image and feature, ``[N_images, d_sae]`` float32 on the CPU: the SAE's
    features at every selected token (``positions``: ``"all"``, ``"patches"``, ``"cls"``, ...) reduced
    over the tokens (``reduce``: ``"mean"``, ``"max"`` or ``"sum"``). ``images`` yields pixel_values
    batches. Cost: the tower up to the hook plus a full encode per token, one image at a time
    (memory ``T x d_sae`` floats).
    """
    if reduce not in REDUCTIONS:
        raise SaesteerError(f"unknown reduction {reduce!r}; choose one of {', '.join(REDUCTIONS)}")
    pos = as_positions(positions)
    rows: list[torch.Tensor] = []
    for item in images:
        x, att = hooked_tokens(steered, _pixels(item), hook)
        image, sae = att.point.image, att.sae_for(x.device)
        pos.check("image", image.cls_tokens, x.shape[1] - image.cls_tokens)
        keep = pos.image_mask(1, x.shape[1], image.cls_tokens, x.device)[0]
        with torch.no_grad():
            for xi in x[:, keep]:
                f = sae.encode(xi.to(sae.dtype)).float()
                rows.append((f.mean(0) if reduce == "mean" else f.amax(0) if reduce == "max" else f.sum(0)).cpu())
    if not rows:
        raise SaesteerError("no images given")
    return torch.stack(rows)
