"""LLaVA-1.5 (``LlavaForConditionalGeneration``) and LLaVA-NeXT (``LlavaNextForConditionalGeneration``),
steered through their vision tower only: no hook is ever placed on the language model.

Read from transformers 5.x (``models/llava/modeling_llava.py``, ``models/llava_next/modeling_llava_next.py``
and their configurations): the tower is ``model.vision_tower`` (an ``AutoModel`` of
``config.vision_config``: ``CLIPVisionModel`` for the llava-hf checkpoints, whose old
``vision_tower.vision_model.*`` weight names transformers renames on load), the language model
``model.language_model``, the head ``lm_head``. ``get_image_features`` runs the whole tower with
``output_hidden_states=vision_feature_layer`` and feeds the projector
``hidden_states[vision_feature_layer]`` (CLS dropped when ``vision_feature_select_strategy ==
"default"``). ``hidden_states`` has ``num_hidden_layers + 1`` entries, the first being the input of
layer 0, so llava-1.5's ``vision_feature_layer = -2`` of 24 layers reads the output of layer 22:
the default hook is ``vision.blocks.22.hook_resid_post``. transformers records ``hidden_states`` with
its own forward hooks on the layers; saesteer's hook goes first, so what is recorded is the edit.

LLaVA-NeXT feeds the tower every crop of every image (``pixel_values [n_images, n_crops, C, H, W]``,
the crop count per image from ``image_sizes`` and ``image_grid_pinpoints``); per-image edits cover
all crops of their image.
"""

from __future__ import annotations

import torch
from torch import nn

from saesteer.adapters.base import Adapter, HookPoint, RowsOfImages
from saesteer.adapters.vision import VISION_NAME, TowerHooks, argument_finder, pixel_rows
from saesteer.errors import HookError

_TOWER_PATHS = ("model.vision_tower", "vision_tower")


def crop_rows(model: nn.Module) -> RowsOfImages:
    """Rows of images for LLaVA-NeXT: image i owns ``image_size_to_num_patches(image_sizes[i])`` crops."""
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    find_pv = argument_finder(model, "pixel_values")
    find_sizes = argument_finder(model, "image_sizes")
    cfg = model.config

    def rows(args: tuple, kwargs: dict) -> tuple[torch.Tensor, int] | None:
        pv, sizes = find_pv(args, kwargs), find_sizes(args, kwargs)
        if not isinstance(pv, torch.Tensor) or sizes is None:
            return None
        counts = [image_size_to_num_patches(image_size=s, grid_pinpoints=cfg.image_grid_pinpoints,
                                            patch_size=cfg.vision_config.image_size) for s in sizes]
        return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts)), len(counts)

    return rows


class LlavaAdapter(Adapter):
    """LLaVA family: SAEs on the vision tower; the language model is never hooked."""

    model_types = ("llava", "llava_next")

    def tower(self, model: nn.Module) -> TowerHooks:
        for path in _TOWER_PATHS:
            try:
                model.get_submodule(path)
            except AttributeError:
                continue
            rows = crop_rows(model) if model.config.model_type == "llava_next" else pixel_rows(model)
            return TowerHooks(model, path, rows)
        raise HookError(f"cannot find the vision tower of {type(model).__name__} "
                        f"(looked for {', '.join(_TOWER_PATHS)})")

    def read_layers(self, model: nn.Module) -> list[int]:
        """``hidden_states`` indices (0..n_layers) LLaVA feeds its projector, from the config."""
        vfl = model.config.vision_feature_layer
        n = self.tower(model).n_layers
        out = []
        for h in [vfl] if isinstance(vfl, int) else list(vfl):
            if not -(n + 1) <= h <= n:
                raise HookError(f"vision_feature_layer={vfl} is outside the tower's hidden states (0..{n})")
            out.append(h % (n + 1))
        return out

    def inferred_hook(self, model: nn.Module) -> str | None:
        """The vision layer whose output LLaVA reads: ``hidden_states[h]`` is the output of layer
        ``h - 1`` (``h = 0``: the input of layer 0). A list ``vision_feature_layer`` reads several
        layers: no single default, so say which."""
        reads = self.read_layers(model)
        if len(reads) > 1:
            options = ", ".join(_hook_for(h) for h in reads)
            raise HookError(f"vision_feature_layer={model.config.vision_feature_layer} reads several vision "
                            f"layers; pass hook= one of {options}")
        return _hook_for(reads[0])

    def resolve_named(self, model: nn.Module, name: str) -> HookPoint | None:
        m = VISION_NAME.match(name)
        if m and m.group(1) is None:
            raise HookError(f"{name!r} is ambiguous on {type(model).__name__}: saesteer steers LLaVA through its "
                            f"vision tower, so say 'vision.{name}'. To steer the language model, wrap "
                            "model.model.language_model on its own.")
        return self.tower(model).named(name, bare_ok=False)

    def resolve(self, model: nn.Module, name: str) -> HookPoint:
        """Resolve ``name`` to a point inside the vision tower, at or before the last layer LLaVA
        reads; anything else (the language model, the projector, a layer whose output is never read)
        is refused with the reason."""
        point = super().resolve(model, name)
        tower = self.tower(model)
        if point.image is None:
            point = tower.canonical(point.module) or point
        if point.image is None:
            inside = any(m is point.module for m in tower.tower.modules())
            where = ("inside the vision tower but not a layer, its MLP or its attention" if inside else
                     "outside the vision tower")
            raise HookError(f"{name!r} ({point.path}) is {where}; saesteer hooks LLaVA only at "
                            f"{tower.describe()}")
        L = int(point.name.split(".")[2])
        last = max(self.read_layers(model))
        if not (L < last or (L == 0 and point.name.endswith("hook_resid_pre"))):
            raise HookError(f"{point.name!r} comes after what LLaVA reads (hidden_states[{last}] of the tower, "
                            f"vision_feature_layer={model.config.vision_feature_layer}): an edit there cannot "
                            f"reach the language model; use {_hook_for(last)} or an earlier layer")
        return point

    def hook_names(self, model: nn.Module) -> list[str]:
        return self.tower(model).names()

    def describe(self, model: nn.Module) -> str:
        return self.tower(model).describe()

    def default_hook(self, model: nn.Module, layer: int) -> str:
        return f"vision.blocks.{layer}.hook_resid_post"


def _hook_for(h: int) -> str:
    """The hook whose tensor is ``hidden_states[h]`` of a vision tower."""
    return "vision.blocks.0.hook_resid_pre" if h == 0 else f"vision.blocks.{h - 1}.hook_resid_post"
