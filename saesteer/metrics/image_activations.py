"""SAE feature activations of images, read at a hook that sees image tokens (a vision tower).

Only the vision tower runs, and only up to the hooked layer: the forward is cut short by a private
exception raised from a capturing hook (put first, removed before returning, also on error). The
host's other parts (a language model) never run, and no edit is applied.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

from saesteer.errors import HookError, SaesteerError
from saesteer.positions import PositionsLike, as_positions

REDUCTIONS = ("mean", "max", "sum")


class _StopForward(Exception):
    """Raised by the capturing hook once the hooked activation is in hand."""


def _pixels(item: Any) -> torch.Tensor:
    pv = item.get("pixel_values") if isinstance(item, dict) else item
    if not isinstance(pv, torch.Tensor) or pv.ndim != 4:
        raise SaesteerError("image batches must be pixel_values [n, C, H, W] tensors (or dicts holding one); "
                            "for a model that feeds its tower several crops per image, pass one crop per image")
    return pv


def hooked_tokens(steered: Any, pixel_values: torch.Tensor, hook: str | None = None) -> tuple[torch.Tensor, Any]:
    """The activation ``[n, T, d_in]`` that the SAE at ``hook`` (the only one by default) reads for
    these images, and its attachment. Cost: the vision tower up to the hooked layer."""
    name = steered._canon(hook) if hook is not None else steered._only()
    att = steered.attachments[name]
    image = att.point.image
    if image is None or image.tower is None:
        raise HookError(f"{name} does not read image tokens; image metrics need a hook on a vision tower")
    box: dict[str, torch.Tensor] = {}

    def on_output(module: Any, args: Any, output: Any) -> None:
        box["x"] = (output if isinstance(output, torch.Tensor) else output[0]).detach()
        raise _StopForward

    def on_input(module: Any, args: tuple, kwargs: dict) -> None:
        box["x"] = (args[0] if args else kwargs["hidden_states"]).detach()
        raise _StopForward

    mod = att.point.module
    if att.point.io == "input":
        handle = mod.register_forward_pre_hook(on_input, with_kwargs=True, prepend=True)
    else:
        handle = mod.register_forward_hook(on_output, prepend=True)
    param = next((p for p in image.tower.parameters() if p.is_floating_point()), None)
    if param is not None:
        pixel_values = pixel_values.to(param.device, param.dtype)
    try:
        with torch.no_grad():
            image.tower(pixel_values=pixel_values)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if "x" not in box:
        raise HookError(f"the vision tower never reached {name}")
    return box["x"], att


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
