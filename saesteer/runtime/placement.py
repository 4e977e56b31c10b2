"""Where a hooked layer computes: the device and dtype an attached SAE must sit on."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def placement(module: nn.Module, model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where the hooked layer computes: accelerate's execution device when it dispatches or
    offloads, else the first real parameter's device; its floating dtype (float32 when it has none).

    accelerate puts its hook on the module a ``device_map`` entry names (the layer itself or a
    parent such as ``model.layers``), or, for ``cpu_offload``/``disk_offload``, only on the modules
    that hold tensors (the layer's children; the top module's hook then has no device). So: the
    layer and its parents nearest first, then its children, then parameters. Cost: one module walk.
    """
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), None)
    if dtype is None:
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    path = next((n for n, m in model.named_modules() if m is module), None)
    parts = path.split(".") if path else []
    chain = ([model.get_submodule(".".join(parts[:i])) for i in range(len(parts), -1, -1)]
             if path is not None else [module, model])
    for m in (*chain, *module.modules()):
        dev = execution_device(getattr(m, "_hf_hook", None))
        if dev is not None:
            return dev, dtype
    for p in list(module.parameters()) + list(model.parameters()):
        if p.device.type != "meta":
            return p.device, dtype
    return torch.device("cpu"), dtype


def execution_device(hf_hook: Any) -> torch.device | None:
    """The ``execution_device`` of an accelerate hook (or of the first in a SequentialHook)."""
    for h in (hf_hook, *getattr(hf_hook, "hooks", ())):
        dev = getattr(h, "execution_device", None)
        if dev is not None:
            return torch.device(dev if not isinstance(dev, int) else f"cuda:{dev}")
    return None
