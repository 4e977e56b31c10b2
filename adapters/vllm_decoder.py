"""Hook points on vLLM's decoder models (Llama, Qwen2, Mistral and the others built the same way).

vLLM keeps the residual stream in two tensors: a decoder layer is called as ``layer(positions, hidden,
residual)`` and returns ``(hidden, residual)``, the next layer's fused add-norm summing them. So:

- ``blocks.L.hook_resid_post`` is ``hidden + residual`` of layer L's output, written back as
  ``(edited, 0)`` on steered rows (the next add-norm then sees ``edited`` exactly) and untouched
  elsewhere;
- ``blocks.L.hook_resid_pre`` is layer L's input the same way (layer 0: ``hidden`` alone, the
  embeddings, ``residual`` being None);
- ``blocks.L.hook_mlp_out`` / ``blocks.L.hook_attn_out`` are the outputs of ``mlp`` / ``self_attn``
  (after the tensor-parallel all-reduce, so every rank sees the whole activation).

The names are the HF path's (:mod:`saesteer.adapters.causal_lm`), so an SAE's ``hook_name`` means the
same place in both. Layers a pipeline-parallel rank does not hold are refused by name. Adapters do no
SAE math: :class:`VllmPoint` only reads the activation out of a call and puts an edited one back.

vLLM internals read here: ``model.model.layers`` (a ``ModuleList``), ``model.model.start_layer`` /
``end_layer``, the decoder layer's ``(positions, hidden, residual)`` arguments and ``(hidden, residual)``
output, the ``mlp`` and ``self_attn`` submodules, ``model.config.hidden_size``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from saesteer.errors import HookError

_NAME = re.compile(r"^blocks\.(-?\d+)\.(hook_resid_pre|hook_resid_post|hook_mlp_out|hook_attn_out)$")
KINDS = ("hook_resid_pre", "hook_resid_post", "hook_mlp_out", "hook_attn_out")


@dataclass(frozen=True)
class VllmPoint:
    """A resolved hook on a vLLM model: ``module``'s ``io`` (``"input"``: a forward pre-hook) and how the
    activation sits there (``"pair"``: the ``hidden + residual`` split, ``"tensor"``: one tensor)."""

    name: str
    path: str
    module: nn.Module
    io: Literal["input", "output"]
    layout: Literal["pair", "tensor"]
    width: int | None

    def read(self, args: tuple, output: Any = None) -> torch.Tensor:
        """The activation ``[num_tokens, d]`` in this call (``args`` for an input hook, else ``output``)."""
        if self.io == "input":
            hidden, residual = args[1], args[2] if len(args) > 2 else None
        elif self.layout == "pair":
            if not (isinstance(output, tuple) and len(output) == 2 and isinstance(output[0], torch.Tensor)):
                raise HookError(f"{self.name}: vLLM's layer returned {type(output).__name__}, not the "
                                "(hidden, residual) pair saesteer reads the residual stream from")
            hidden, residual = output
        else:
            return output
        return hidden if residual is None else hidden + residual

    def write(self, args: tuple, output: Any, edited: torch.Tensor, touched: torch.Tensor) -> Any:
        """The call's arguments (input hook) or output with ``edited`` on the ``touched [num_tokens]``
        rows and every other row exactly as it was."""
        m = touched.unsqueeze(-1)
        if self.layout == "tensor":
            return torch.where(m, edited.to(output.dtype), output)
        hidden, residual = (args[1], args[2] if len(args) > 2 else None) if self.io == "input" else output
        new_h = torch.where(m, edited.to(hidden.dtype), hidden)
        new_r = None if residual is None else torch.where(m, torch.zeros_like(residual), residual)
        if self.io == "input":
            return (args[0], new_h, new_r, *args[3:])
        return (new_h, new_r)


def canonical(name: str, n_layers: int) -> str:
    """``name`` with its layer index made non-negative (``blocks.-1.hook_resid_post`` ->
    ``blocks.{n-1}.hook_resid_post``), as :func:`resolve` names the point; other names unchanged."""
    m = _NAME.match(name)
    if not m or not -n_layers <= int(m.group(1)) < n_layers:
        return name
    return f"blocks.{int(m.group(1)) % n_layers}.{m.group(2)}"


def _layers(model: nn.Module) -> tuple[nn.ModuleList, int, int]:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise HookError(f"{type(model).__name__}: saesteer's vLLM hooks need a decoder model with "
                        "`model.layers` (Llama, Qwen2, Mistral, ...); this one has none")
    start = int(getattr(inner, "start_layer", 0))
    end = int(getattr(inner, "end_layer", len(layers)))
    return layers, start, end


def resolve(model: nn.Module, name: str) -> VllmPoint:
    """Resolve ``name`` (``blocks.L.hook_resid_post`` and the other :data:`KINDS`) on a vLLM model;
    HookError naming the valid names when it does not resolve."""
    layers, start, end = _layers(model)
    n = len(layers)
    m = _NAME.match(name)
    if not m:
        raise HookError(f"unknown hook {name!r} on vLLM's {type(model).__name__}. Valid names: "
                        f"blocks.L.{{{', '.join(KINDS)}}} for L in 0..{n - 1}")
    L, kind = int(m.group(1)), m.group(2)
    if not -n <= L < n:
        raise HookError(f"{name!r}: layer {L} is past the last layer (the model has {n}: 0..{n - 1})")
    L %= n
    if not start <= L < end:
        raise HookError(f"{name!r}: layer {L} is not on this pipeline-parallel rank (it holds {start}..{end - 1})")
    cfg = getattr(model, "config", None)
    width = getattr(cfg, "hidden_size", None)
    canon = f"blocks.{L}.{kind}"
    layer = layers[L]
    if kind in ("hook_resid_pre", "hook_resid_post"):
        io = "input" if kind == "hook_resid_pre" else "output"
        return VllmPoint(canon, f"model.layers.{L}", layer, io, "pair", width)
    sub = "mlp" if kind == "hook_mlp_out" else "self_attn"
    mod = getattr(layer, sub, None)
    if not isinstance(mod, nn.Module):
        raise HookError(f"{name!r}: vLLM's layer {L} ({type(layer).__name__}) has no '{sub}' module")
    return VllmPoint(canon, f"model.layers.{L}.{sub}", mod, "output", "tensor", width)
