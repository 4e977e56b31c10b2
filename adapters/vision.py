"""Vision towers: CLIP and SigLIP, bare (``CLIPVisionModel``, ``CLIPVisionModelWithProjection``,
``SiglipVisionModel``) or as the vision half of ``CLIPModel`` / ``SiglipModel``.

Module paths, read from transformers 5.x (``models/clip/modeling_clip.py``,
``models/siglip/modeling_siglip.py``): the tower is the model itself or its ``vision_model``; its layers
are ``encoder.layers`` (``CLIPEncoderLayer`` / ``SiglipEncoderLayer``, each returning one tensor),
inside a layer ``self_attn`` and ``mlp``. ``hidden_states[0]`` of the tower is the input of layer 0
(CLIP: after ``pre_layrnorm``) and ``hidden_states[L + 1]`` the output of layer L. CLIP's token axis
is CLS then the patches (``embeddings.class_embedding`` exists); SigLIP has no CLS token.

Names accepted (``L`` may be negative, Python-style):
``vision.blocks.L.hook_resid_post`` (output of vision layer L), ``vision.blocks.L.hook_resid_pre``
(its input), ``vision.blocks.L.hook_mlp_out``, ``vision.blocks.L.hook_attn_out``; on a bare tower
``blocks.L.*`` too; any module path of those modules comes back under the same name.
"""

from __future__ import annotations

import inspect
import re
from typing import Any, Callable

import torch
from torch import nn

from saesteer.adapters.base import Adapter, HookPoint, ImageTokens, RowsOfImages
from saesteer.errors import HookError

VISION_NAME = re.compile(r"^(vision\.)?blocks\.(-?\d+)\.(hook_resid_pre|hook_resid_post|hook_mlp_out|hook_attn_out)$")
KINDS = ("hook_resid_pre", "hook_resid_post", "hook_mlp_out", "hook_attn_out")
_SUB = {"hook_mlp_out": "mlp", "hook_attn_out": "self_attn"}


def pixel_rows(model: nn.Module) -> RowsOfImages:
    """Rows of images for a model whose forward takes ``pixel_values [n_images, C, H, W]``: row i is
    image i (a 5-D or missing ``pixel_values`` -> None, i.e. cannot tell)."""
    find = argument_finder(model, "pixel_values")

    def rows(args: tuple, kwargs: dict) -> tuple[torch.Tensor, int] | None:
        pv = find(args, kwargs)
        if not isinstance(pv, torch.Tensor) or pv.ndim != 4:
            return None
        return torch.arange(pv.shape[0]), int(pv.shape[0])

    return rows


def argument_finder(model: nn.Module, name: str) -> Callable[[tuple, dict], Any]:
    """A function reading argument ``name`` of ``model.forward`` from a call's ``(args, kwargs)``."""
    try:
        params = list(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        params = []
    index = params.index(name) if name in params else None

    def find(args: tuple, kwargs: dict) -> Any:
        if name in kwargs:
            return kwargs[name]
        return args[index] if index is not None and len(args) > index else None

    return find


class TowerHooks:
    """Hook points on one CLIP/SigLIP-style vision tower sitting at ``path`` inside ``model``.

    Cost: a module lookup; nothing is cached across models.
    """

    def __init__(self, model: nn.Module, path: str, rows: RowsOfImages | None) -> None:
        self.model = model
        self.path = path
        self.tower = model.get_submodule(path) if path else model
        try:
            self.layers = self.tower.get_submodule("encoder.layers")
        except AttributeError:
            raise HookError(f"{type(self.tower).__name__} has no encoder.layers: "
                            "not a CLIP/SigLIP vision tower") from None
        self.layers_path = f"{path}.encoder.layers" if path else "encoder.layers"
        cfg = self.tower.config
        self.width: int = cfg.hidden_size
        embeddings = getattr(self.tower, "embeddings", None)
        self.image = ImageTokens(
            cls_tokens=1 if hasattr(embeddings, "class_embedding") else 0,
            patches=(cfg.image_size // cfg.patch_size) ** 2,
            rows=rows,
            tower=self.tower,
        )

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def layer_index(self, L: int, name: str) -> int:
        n = self.n_layers
        if not -n <= L < n:
            raise HookError(f"{name!r}: vision layer {L} is past the last layer (the tower has {n}: 0..{n - 1})")
        return L % n

    def point(self, L: int, kind: str) -> HookPoint:
        """The hook point ``vision.blocks.L.<kind>`` (``L`` already in range)."""
        layer = self.layers[L]
        canon = f"vision.blocks.{L}.{kind}"
        path = f"{self.layers_path}.{L}"
        if kind in _SUB:
            return HookPoint(canon, f"{path}.{_SUB[kind]}", layer.get_submodule(_SUB[kind]), io="output",
                             width=self.width, tokens="image", image=self.image)
        io = "input" if kind == "hook_resid_pre" else "output"
        return HookPoint(canon, path, layer, io=io, width=self.width, tokens="image", image=self.image)

    def named(self, name: str, *, bare_ok: bool) -> HookPoint | None:
        """Resolve ``vision.blocks.L.kind`` (and ``blocks.L.kind`` when ``bare_ok``); None otherwise."""
        m = VISION_NAME.match(name)
        if not m or (m.group(1) is None and not bare_ok):
            return None
        return self.point(self.layer_index(int(m.group(2)), name), m.group(3))

    def canonical(self, module: nn.Module) -> HookPoint | None:
        """The named point whose module is ``module`` (a layer -> its resid_post), or None."""
        for L, layer in enumerate(self.layers):
            if module is layer:
                return self.point(L, "hook_resid_post")
            for kind, sub in _SUB.items():
                if module is getattr(layer, sub, None):
                    return self.point(L, kind)
        return None

    def names(self) -> list[str]:
        n = self.n_layers
        return [f"vision.blocks.{L}.hook_resid_post" for L in range(n)] + [
            f"vision.blocks.{{0..{n - 1}}}.{k}" for k in ("hook_resid_pre", "hook_mlp_out", "hook_attn_out")]

    def describe(self) -> str:
        n = self.n_layers
        return (f"vision.blocks.L.hook_resid_pre, vision.blocks.L.hook_resid_post, vision.blocks.L.hook_mlp_out, "
                f"vision.blocks.L.hook_attn_out for L in 0..{n - 1}; or a module path such as "
                f"{self.layers_path}.0")


def tower_path(model: nn.Module) -> str:
    """Where the vision tower sits: ``vision_model`` of CLIPModel / SiglipModel / *WithProjection, or
    the model itself for a bare tower."""
    sub = getattr(model, "vision_model", None)
    if isinstance(sub, nn.Module):
        return "vision_model"
    return ""


class VisionTowerAdapter(Adapter):
    """CLIP and SigLIP vision towers (and the vision half of the dual encoders)."""

    model_types = ("clip_vision_model", "clip", "siglip_vision_model", "siglip")

    def tower(self, model: nn.Module) -> TowerHooks:
        return TowerHooks(model, tower_path(model), pixel_rows(model))

    def resolve_named(self, model: nn.Module, name: str) -> HookPoint | None:
        tower = self.tower(model)
        return tower.named(name, bare_ok=getattr(model, "text_model", None) is None)

    def resolve(self, model: nn.Module, name: str) -> HookPoint:
        """As :meth:`Adapter.resolve`; module paths of a vision layer, its MLP or its attention come
        back under their ``vision.blocks`` name, so every form of one place agrees. Other modules
        (CLIPModel's text tower, say) resolve as plain paths reading text tokens."""
        point = super().resolve(model, name)
        if point.image is not None:
            return point
        return self.tower(model).canonical(point.module) or point

    def hook_names(self, model: nn.Module) -> list[str]:
        return self.tower(model).names()

    def describe(self, model: nn.Module) -> str:
        return self.tower(model).describe()

    def default_hook(self, model: nn.Module, layer: int) -> str:
        return f"vision.blocks.{layer}.hook_resid_post"
