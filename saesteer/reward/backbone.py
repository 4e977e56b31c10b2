"""A host model run only up to the output of one decoder layer: SARM's truncated backbone, made
without modifying or copying the user's model.

SARM keeps the first ``L`` decoder layers and reads the output of the last one, with no final
norm. Here the whole model stays as it is; a forward hook on decoder layer ``L-1`` (the adapter's
``blocks.{L-1}.hook_resid_post``) takes that layer's output and ends the forward at once, so the
layers after it, the final norm and the LM or classification head never run.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from saesteer import adapters
from saesteer.adapters.base import HookPoint
from saesteer.errors import HookError, RewardError
from saesteer.reward.conversation import position_ids
from saesteer.runtime.taps import require, tap


def hook_for(model: nn.Module, layer: int | None, hook: str | None, sae_hook: str | None) -> HookPoint:
    """Where the SAE reads: ``hook`` as given, else the output of the ``layer``-th decoder layer
    (SARM counts layers kept: ``layer=16`` reads ``blocks.15.hook_resid_post``), else the SAE's own
    hook. Raises HookError for a layer outside ``1..n_layers``."""
    adapter = adapters.adapter_for(model)
    if hook is None and layer is not None:
        if isinstance(layer, bool) or not isinstance(layer, int) or layer < 1:
            raise HookError(f"layer counts decoder layers kept (SARM's sae_source_layer): an int >= 1, got {layer!r}")
        hook = adapter.default_hook(model, layer - 1)
    if hook is None:
        hook = sae_hook
    if hook is None:
        raise HookError("say where the SAE reads: layer=16 (layers kept, as SARM) or hook='blocks.15.hook_resid_post'")
    return adapter.resolve(model, hook)


class TruncatedBackbone:
    """``model`` cut after the module a hook point names. The model is not modified: the capturing
    hook exists only during :meth:`hidden_states` and is removed after, also on error.

    Cost of one call: the layers up to the hook on the batch; nothing after it runs.
    """

    def __init__(self, model: nn.Module, point: HookPoint) -> None:
        if point.io != "output":
            raise HookError(f"a reward backbone reads a layer output; {point.name} is a module input")
        self.model = model
        self.point = point

    @property
    def hook(self) -> str:
        return self.point.name

    @property
    def layers_kept(self) -> int | None:
        """SARM's ``sae_source_layer`` (decoder layers that run) when the hook is a residual output."""
        m = re.match(r"^blocks\.(\d+)\.hook_resid_post$", self.point.name)
        return int(m.group(1)) + 1 if m else None

    @property
    def width(self) -> int | None:
        return self.point.width

    @property
    def device(self) -> torch.device:
        for p in self.point.module.parameters():
            if p.device.type != "meta":
                return p.device
        for p in self.model.parameters():
            if p.device.type != "meta":
                return p.device
        return torch.device("cpu")

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The activation ``[B, T, d]`` at the hook (float32, no gradient). Positions come from the
        attention mask, so a left-padded row reads exactly as the same row right-padded."""
        if input_ids.ndim != 2:
            raise RewardError(f"input_ids must be [batch, tokens], got shape {tuple(input_ids.shape)}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        dev = self.device
        kwargs: dict[str, Any] = {
            "input_ids": input_ids.to(dev), "attention_mask": attention_mask.to(dev),
            "position_ids": position_ids(attention_mask).to(dev),
        }
        if hasattr(getattr(self.model, "config", None), "use_cache"):
            kwargs["use_cache"] = False
        with tap(self.point, stop=True, prepend=True) as caught, torch.no_grad():
            self.model(**kwargs)
        return require(caught, f"{self.hook} ({self.point.path})").float()
