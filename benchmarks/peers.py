"""How each tool in the overhead benchmark steers SmolLM2: one runner per tool, all doing the same
edit at the same layer. Imported by ``steering_overhead.py``. The sae-lens and steering-vectors
runners wrap a zero-argument model call (a whole ``generate``, or one decoding step) in their edit;
the nnsight runner is a whole ``generate`` trace.

The peers are used the way their own docs show:
- sae-lens: its ``SAE`` object inside a plain ``register_forward_hook`` on the decoder layer, with
  the error term (SAELens' ``use_error_term=True``): ``decode(f') + (x - decode(f))``.
- nnsight: the same sae-lens math inside an nnsight ``generate`` trace, ``for _ in tracer.iter[:n]`` (every
  generation step).
- steering-vectors: ``SteeringVector({layer: v}, "decoder_block").apply(model)`` for Add edits.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

Runner = Callable[[], torch.Tensor]


def saelens_sae(folder: str, dtype: torch.dtype) -> Any:
    """A sae-lens SAE object read from a SAELens-format folder."""
    from sae_lens import SAE as LensSAE

    sae = LensSAE.load_from_disk(folder, device="cpu", dtype=str(dtype).replace("torch.", ""))
    return sae.eval().requires_grad_(False)


def _lens_clamp(sae: Any, h: torch.Tensor, idx: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
    f = sae.encode(h)
    err = h - sae.decode(f)
    f[..., idx] = vals
    return sae.decode(f) + err


def nnsight_trace(lm: Any, layer_index: int, sae: Any, idx: torch.Tensor, vals: torch.Tensor,
                  gen: dict[str, Any], enc: dict[str, torch.Tensor]) -> Runner:
    """The same clamp inside an nnsight ``generate`` trace, applied at every generation step."""

    n = int(gen["max_new_tokens"])

    def run() -> torch.Tensor:
        with lm.generate(dict(enc), **gen) as tracer:
            for _ in tracer.iter[:n]:
                layer = lm.model.layers[layer_index]
                out = layer.output
                h = out[0] if isinstance(out, tuple) else out
                new = _lens_clamp(sae, h, idx, vals).to(h.dtype)
                layer.output = (new,) + tuple(out[1:]) if isinstance(out, tuple) else new
            ids = tracer.result.save()
        return ids

    return run


def saelens_hooked(layer: torch.nn.Module, sae: Any, idx: torch.Tensor, vals: torch.Tensor,
                   forward: Callable[[], Any]) -> Runner:
    """``forward`` (one model call) with the sae-lens clamp hook on ``layer`` for its duration: how SAELens
    users steer a HuggingFace model, a forward hook that clamps with the error term."""

    def hook(mod: torch.nn.Module, args: Any, out: Any) -> Any:
        h = out[0] if isinstance(out, tuple) else out
        new = _lens_clamp(sae, h, idx, vals).to(h.dtype)
        return (new,) + tuple(out[1:]) if isinstance(out, tuple) else new

    def run() -> Any:
        handle = layer.register_forward_hook(hook)
        try:
            return forward()
        finally:
            handle.remove()

    return run


def steering_vectors_applied(model: torch.nn.Module, layer_index: int, vector: torch.Tensor,
                             forward: Callable[[], Any]) -> Runner:
    """``forward`` (one model call) with steering-vectors adding ``vector`` to the output of decoder block
    ``layer_index`` for its duration."""
    from steering_vectors import SteeringVector

    sv = SteeringVector({layer_index: vector}, "decoder_block")

    def run() -> Any:
        with sv.apply(model):
            return forward()

    return run
