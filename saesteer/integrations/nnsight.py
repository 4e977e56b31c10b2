"""saesteer edits inside an `nnsight <https://nnsight.net>`_ trace: one function call on a module's
output, the same numbers as saesteer's own hooks.

>>> from saesteer.integrations.nnsight import steer
>>> with lm.trace(inputs):                        # lm = nnsight.TransformersModel(hf_model, ...)
...     am = lm.inputs[1]["attention_mask"]       # read it first: nnsight serves values in order
...     layer = lm.model.layers[12]
...     layer.output = steer(layer.output, sae, {1234: 8.0}, attention_mask=am)
...     logits = lm.output.logits.save()

nnsight >= 0.5 runs the trace body on real tensors, interleaved with the forward (0.8 in a
greenlet), so ``steer`` is an ordinary tensor function: it never imports nnsight and also works on
any tensor outside a trace. The math is saesteer's own (:func:`saesteer.runtime.hooks.run_attachment`
-> :func:`saesteer.runtime.apply.edit_activations`, positions by
:meth:`saesteer.runtime.context.CallState.mask`); nothing is re-implemented here.

Positions are absolute and left-padding aware when ``attention_mask`` is the 2-D mask the model's
top-level call receives (in a KV-cached ``generate`` step it covers past + current tokens, so the
step is steered like the same token in a full forward). Without it the ``T`` tokens of the tensor
are positions ``0..T-1`` with no padding. ``"generated"``/``"prompt"`` in a cached step need
``prompt_length`` (non-pad prompt tokens per row); in a fresh forward every token is prompt.
"""

from __future__ import annotations

import weakref
from typing import Any, Sequence

import torch
from torch import nn

from saesteer.adapters.base import HookPoint
from saesteer.edits import Edit, EditSet, EditsLike, coerce
from saesteer.errors import EditError
from saesteer.positions import PositionsLike
from saesteer.runtime.context import CallState
from saesteer.runtime.hooks import Attachment, run_attachment
from saesteer.sae.module import SAE

__all__ = ["steer", "plan"]

_NAME = "nnsight"
_POINT = HookPoint(_NAME, _NAME, nn.Identity())
# Per SAE object, its copies on other devices (made once, reused; they hold no reference to it).
_COPIES: "weakref.WeakKeyDictionary[SAE, dict[torch.device, SAE]]" = weakref.WeakKeyDictionary()


def plan(sae: SAE, edits: EditsLike | Sequence[EditsLike], *, positions: PositionsLike = None,
         mode: str = "error", zero_others: bool = False) -> EditSet | list[EditSet]:
    """Check ``edits`` against ``sae`` and return one EditSet, or one per row for per-row edits
    (``[{3: 5.0}, None]``). Raises :class:`~saesteer.errors.EditError` on a bad feature index or
    a steering vector of the wrong width. Cheap: no tensor work. A ``hook=`` on an edit is ignored:
    ``steer`` has one SAE."""
    if not isinstance(sae, SAE):
        raise TypeError(f"expected a saesteer SAE, got {type(sae).__name__}; load one with saesteer.load_sae")
    spec = coerce(edits, positions=positions, mode=mode, zero_others=zero_others)
    for es in spec if isinstance(spec, list) else [spec]:
        for e in es.edits:
            if isinstance(e, Edit) or e.feature is not None:
                sae.check_feature(e.feature)
            elif e.direction.shape[-1] != sae.d_in:
                raise EditError(f"steering vector has {e.direction.shape[-1]} entries; "
                                f"the SAE has d_in={sae.d_in}")
    return spec


def steer(output: Any, sae: SAE, edits: EditsLike | Sequence[EditsLike], *,
          positions: PositionsLike = None, mode: str = "error", zero_others: bool = False,
          attention_mask: torch.Tensor | None = None,
          prompt_length: int | torch.Tensor | None = None) -> Any:
    """Return ``output`` with ``edits`` applied by ``sae``, as saesteer's hook at that module would.

    ``output`` is the activation ``[B, T, d_in]`` (or ``[B, d_in]``) a module produced, or a
    tuple/list whose first item is it (older transformers' decoder layers); the same kind comes
    back. ``edits``, ``positions``, ``mode`` and ``zero_others`` mean what they mean in
    ``SteeredModel.generate``; per-row edits need as many rows (or a divisor of them) as ``output``.
    With nothing to do (``edits=None``, ``{}``) ``output`` itself is returned.

    The SAE is used in its own dtype (the activation is cast to it and back); when the activation
    sits on another device a copy of the SAE is made there once and reused (change the SAE's
    weights in place afterwards and that copy goes stale: pass a new SAE object). Cost: that of the
    hook — the encoder columns of the edited features (a full encode for TopK SAEs, or in
    ``mode="reconstruct"``) and one small matmul per forward.
    """
    spec = plan(sae, edits, positions=positions, mode=mode, zero_others=zero_others)
    if not (any(spec) if isinstance(spec, list) else spec):
        return output
    x = output if isinstance(output, torch.Tensor) else _first(output)
    state = CallState(plans={_NAME: spec})
    if prompt_length is not None:
        n = torch.as_tensor(prompt_length, device=x.device).reshape(-1)
        state.fixed_prompt_len = n.expand(x.shape[0]) if n.numel() == 1 else n
    shaped = x if x.ndim >= 3 else x.unsqueeze(1)  # [B, d] is one token per row
    am = attention_mask
    B, T = shaped.shape[0], shaped.shape[1]
    if am is not None and not (am.ndim == 2 and am.shape[0] == B and am.shape[1] >= T):
        raise EditError(f"attention_mask {tuple(am.shape)} does not fit an activation of {tuple(x.shape)}: "
                        "give the [batch, past + current tokens] mask of the model's call")
    state.begin_forward((), {"inputs_embeds": shaped, "attention_mask": am})
    att = Attachment(_NAME, sae, _POINT, _by_device=_COPIES.setdefault(sae, {}))
    y = run_attachment(att, state, x)
    if isinstance(output, torch.Tensor):
        return y
    return output if y is x else type(output)([y, *output[1:]])


def _first(output: Any) -> torch.Tensor:
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(
        f"steer() takes a module's output tensor (or a tuple starting with it), got "
        f"{type(output).__name__}. nnsight >= 0.5 serves real tensors inside a trace; "
        "older, proxy-based versions are not supported."
    )
