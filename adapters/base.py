"""What an adapter answers: given a host model and a hook name, which module, which tensor
(its input or its output) and how wide. Adapters never touch SAE weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
from torch import nn

from saesteer.errors import HookError


#: ``rows(args, kwargs)`` of the top-level call -> (image index of each row the vision tower sees, number
#: of images), or None when it cannot tell (then row i is image i)
RowsOfImages = Callable[[tuple, dict], "tuple[torch.Tensor, int] | None"]


@dataclass(frozen=True)
class ImageTokens:
    """How a vision tower's token axis is laid out, so the core can steer image positions without
    knowing the model: ``cls_tokens`` leading non-patch tokens (CLIP: 1, SigLIP: 0), then the patches
    row by row (``patches`` per crop at the configured image size, None when unknown). ``rows`` maps
    the rows the tower sees to images (several crops per image in LLaVA-NeXT). ``tower`` is the
    module to call with ``pixel_values`` alone to reach the hook (image metrics use it so the rest of
    the host, a language model say, never runs)."""

    cls_tokens: int = 1
    patches: int | None = None
    rows: RowsOfImages | None = field(default=None, repr=False)
    tower: nn.Module | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class HookPoint:
    """A resolved hook: ``module``'s ``io`` tensor (first element when it is a tuple).

    ``width`` is the size of the tensor's last dimension when the adapter knows it (None: checked
    when the first activation arrives). ``tokens`` says how the tensor's second axis maps to
    positions: ``"text"`` means it runs along the top-level call's token sequence, ``"image"`` that it
    runs along one image's tokens laid out as ``image`` says (rows are images or crops, never padded).
    """

    name: str
    path: str
    module: nn.Module
    io: Literal["output", "input"] = "output"
    width: int | None = None
    tokens: str = "text"
    image: ImageTokens | None = None


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

    def inferred_hook(self, model: nn.Module) -> str | None:
        """The hook to use when the caller names neither hook nor layer and the SAE's config names
        none (LLaVA: the vision layer its ``vision_feature_layer`` reads); None when there is none."""
        return None


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
