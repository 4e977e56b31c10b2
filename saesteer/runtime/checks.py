"""The checks a steered call makes before the model runs: per-row edits fit the batch, an SAE sits at
the hook it was trained at, edit values fit the dtype, positions fit the tokens the hook reads."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from saesteer import adapters
from saesteer.edits import Edit, EditSet, Steer
from saesteer.errors import EditError, HookError
from saesteer.runtime import call_inputs
from saesteer.runtime.context import Plan
from saesteer.runtime.hooks import Attachment
from saesteer.sae.module import SAE


def check_rows(plans: dict[str, Plan], args: tuple, kwargs: dict, attachments: dict[str, Attachment]) -> None:
    """Per-row edit lists must divide the batch: text rows, or images on hooks that read image tokens."""
    rows = call_inputs.read(args, kwargs).rows
    for n, p in plans.items():
        if not isinstance(p, list):
            continue
        image = attachments[n].point.image if n in attachments else None
        if image is not None:
            got = image.rows(args, kwargs) if image.rows is not None else None
            if got is not None and got[1] % len(p):
                raise EditError(f"{len(p)} per-image edit sets but the call has {got[1]} images")
        elif rows is not None and rows % len(p):
            raise EditError(f"{len(p)} per-row edit sets but the batch has {rows} rows")


def check_trained_hook(model: nn.Module, adapter: Any, sae: SAE, point: Any, force: bool) -> None:
    """Refuse (or, forced, warn about) an SAE placed at a hook other than the one it records."""
    trained = sae.cfg.hook_name
    if not trained:
        return
    try:
        home = adapter.resolve(model, trained)
    except HookError:  # recorded in another model's naming: nothing to compare with here
        return
    if home.module is point.module and home.io == point.io:
        return
    msg = (f"this SAE was trained at {trained} ({home.path}) but would read {point.name} ({point.path}): its "
           "features mean nothing there and steering gives garbage")
    if not force:
        raise HookError(msg + ". Leave out hook=/layer= to use its own hook, or pass force_hook=True "
                              "(CLI: --force-hook) if you know it fits")
    import warnings

    warnings.warn(msg + " (force_hook=True)", stacklevel=4)


def check_fits(e: Edit | Steer, sae: SAE, layer_dtype: torch.dtype, name: str) -> None:
    """Refuse an edit whose value cannot be represented where it is computed: a clamp of 1e5 on a
    float16 model overflows to inf (and NaN logits) inside the hook. The bound is the largest finite
    number of the SAE's and the layer's dtypes: ``|value|`` and ``|value| * max |decoder row|`` (what
    the edit adds per unit of feature) must both stay below half of it. Steer(norm_scaled=True) is
    bounded assuming activation norms below 1e4. Cost: one max over a decoder row."""
    dtypes = [d for d in (sae.dtype, layer_dtype) if d.is_floating_point]
    limit = min(torch.finfo(d).max for d in dtypes) / 2 if dtypes else float("inf")
    if isinstance(e, Steer):
        value, what = e.alpha, "steer alpha"
        row = sae.W_dec[e.feature] if e.feature is not None else e.direction
        if e.norm_scaled:
            row = row / row.norm().clamp_min(1e-30) * 1e4
    else:
        value = {"Clamp": "value", "Scale": "factor", "Add": "amount"}.get(type(e).__name__)
        if value is None:  # Erase: writes 0
            return
        what = f"{type(e).__name__.lower()} {value}"
        value = getattr(e, value)
        row = sae.W_dec[e.feature]
    step = abs(value) * float(row.detach().abs().max().float())
    if abs(value) >= limit or step >= limit:
        kind = min(dtypes, key=lambda d: torch.finfo(d).max) if dtypes else None
        raise EditError(f"{what} {value:g} overflows {str(kind).replace('torch.', '')} at {name} "
                        f"(the edit would write {max(abs(value), step):.3g}; the dtype's largest finite value is "
                        f"{2 * limit:.3g}); use a smaller value")


def check_positions(point: adapters.HookPoint, es: EditSet) -> None:
    """Every position spec of ``es`` must fit the tokens the hook reads (text or image)."""
    image = point.image
    for spec in {es.positions, *(e.positions for e in es.edits if e.positions is not None)}:
        if image is None:
            spec.check(point.tokens)
        else:
            spec.check("image", image.cls_tokens, image.patches)


def transcoder_output(model: nn.Module, adapter: Any, sae: SAE, point: Any, hook_out: str | None) -> Any:
    """Where a transcoder writes (None for an SAE): ``hook_out``, else the SAE's ``hook_name_out``, else
    ``blocks.L.hook_mlp_out`` for a transcoder reading ``blocks.L.hook_mlp_in``; its width must be
    ``d_out``. HookError when it cannot be told or does not fit."""
    import re

    if not sae.cfg.transcoder:
        if hook_out is not None:
            raise HookError("hook_out= is for transcoders; this SAE writes back where it reads")
        return None
    target = hook_out or sae.cfg.hook_name_out
    if target is None:
        m = re.match(r"^blocks\.(\d+)\.hook_mlp_in$", point.name)
        if m is None:
            raise HookError(f"say where this transcoder writes: hook_out=... (it reads {point.name})")
        target = f"blocks.{m.group(1)}.hook_mlp_out"
    out = adapter.resolve(model, target)
    if out.width is not None and out.width != sae.d_out:
        raise HookError(f"transcoder output width d_out={sae.d_out} does not match the width {out.width} of "
                        f"{out.name} ({out.path})")
    if out.tokens != point.tokens:
        raise HookError(f"a transcoder reads and writes along the same tokens; {point.name} and {out.name} differ")
    return out
