"""What an adapter answers: given a host model and a hook name, which module, which tensor
(its input or its output) and how wide. Adapters never touch SAE weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from saesteer.errors import HookError


@dataclass(frozen=True)
class HookPoint:
    """A resolved hook: ``module``'s ``io`` tensor (first element when it is a tuple).

    ``width`` is the size of the tensor's last dimension when the adapter knows it (None: checked
    when the first activation arrives). ``tokens`` says how the tensor's second axis maps to
    positions: ``"text"`` means it runs along the top-level call's token sequence.
    """

    name: str
    path: str
    module: nn.Module
    io: Literal["output", "input"] = "output"
    width: int | None = None
    tokens: str = "text"


class Adapter:
    """Base adapter. Subclasses resolve hook names for one family of host models."""

    #: ``config.model_type`` values this adapter serves
    model_types: tuple[str, ...] = ()

    def resolve(self, model: nn.Module, name: str) -> HookPoint:
        """Resolve ``name`` on ``model``; raise HookError listing valid names when it does not."""
        point = self.resolve_named(model, name)
        if point is not None:
            return point
        point = resolve_module_path(model, name, self.base(model))
        if point is not None:
            return point
        raise HookError(f"unknown hook {name!r} on {type(model).__name__}. Valid names: {self.describe(model)}")

    def resolve_named(self, model: nn.Module, name: str) -> HookPoint | None:
        return None

    def base(self, model: nn.Module) -> nn.Module:
        prefix = getattr(model, "base_model_prefix", "")
        return getattr(model, prefix, model) if prefix else model

    def hook_names(self, model: nn.Module) -> list[str]:
        return []

    def describe(self, model: nn.Module) -> str:
        names = self.hook_names(model)
        shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
        return (shown + "; " if shown else "") + "or any module path, e.g. " + _example_path(model)

    def final_norm(self, model: nn.Module) -> nn.Module | None:
        """The module applied between the residual stream and the unembedding, if known."""
        return None

    def default_hook(self, model: nn.Module, layer: int) -> str:
        raise HookError(f"{type(self).__name__} has no default hook for layer={layer}; pass hook=")


def module_width(module: nn.Module) -> int | None:
    """Output width of common leaf modules (Linear, Embedding, norms); None when unknown."""
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.Embedding):
        return module.embedding_dim
    w = getattr(module, "weight", None)
    if isinstance(w, nn.Parameter) and w.ndim == 1 and "norm" in type(module).__name__.lower():
        return int(w.shape[0])
    return None


def resolve_module_path(model: nn.Module, name: str, base: nn.Module | None = None) -> HookPoint | None:
    """A plain module path, from the model itself or from its base model (sparsify's form)."""
    for root, prefix in ((model, ""), (base, "")):
        if root is None:
            continue
        try:
            mod = root.get_submodule(name) if name else None
        except AttributeError:
            continue
        if mod is None or mod is model:
            continue
        path = _path_of(model, mod) or name
        return HookPoint(name=name, path=path, module=mod, io="output", width=module_width(mod))
    return None


def _path_of(model: nn.Module, mod: nn.Module) -> str | None:
    for n, m in model.named_modules():
        if m is mod:
            return n
    return None


def _example_path(model: nn.Module) -> str:
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            return repr(n)
    return "'<module path>'"
