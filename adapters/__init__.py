"""Host-model adapters, installed as ``saesteer.adapters``; a registry keyed by ``config.model_type``.

An adapter answers one question: given this host model and this hook name, which module, which
tensor of it, and which token positions. Register a new family with :func:`register`.
"""

from __future__ import annotations

from torch import nn

from saesteer.adapters.base import Adapter, HookPoint, ImageTokens, resolve_module_path
from saesteer.adapters.causal_lm import DecoderAdapter
from saesteer.adapters.llava import LlavaAdapter
from saesteer.adapters.vision import VisionTowerAdapter

REGISTRY: dict[str, Adapter] = {}


def register(adapter: Adapter) -> Adapter:
    """Serve every ``adapter.model_types`` entry with ``adapter`` (later registrations win)."""
    for mt in adapter.model_types:
        REGISTRY[mt] = adapter
    return adapter


register(DecoderAdapter())
register(VisionTowerAdapter())
register(LlavaAdapter())


class GenericAdapter(Adapter):
    """Fallback for unknown model types: plain module paths only."""


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter registered for ``model.config.model_type`` (a generic one otherwise)."""
    mt = getattr(getattr(model, "config", None), "model_type", None)
    return REGISTRY.get(mt, GenericAdapter())


def resolve(model: nn.Module, name: str) -> HookPoint:
    """Resolve a hook name on ``model`` (raises HookError listing valid names)."""
    return adapter_for(model).resolve(model, name)


__all__ = ["Adapter", "HookPoint", "ImageTokens", "REGISTRY", "adapter_for", "register", "resolve",
           "resolve_module_path"]
