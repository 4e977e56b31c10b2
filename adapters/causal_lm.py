"""Decoder-only language models (causal LMs, and the same trunks under sequence-classification
heads): where the decoder layers live, and SAELens / sparsify hook names on them.

Names accepted (``L`` may be negative, Python-style):
``hook_embed`` (the token embedding's output), ``blocks.L.hook_resid_pre`` (input of decoder layer L), ``blocks.L.hook_resid_post`` (its output),
``blocks.L.hook_mlp_in`` (the MLP's input, what transcoders read), ``blocks.L.hook_mlp_out``,
``blocks.L.hook_attn_out``, ``blocks.L.attn.hook_z`` (the attention heads' outputs, concatenated: the
input of the attention's output projection, ``[.., n_heads * d_head]``, which is what SAELens'
``reshape_activations: hook_z`` SAEs read), sparsify's ``layers.L`` (paths under the base model), and
any plain module path.

As in TransformerLens, Gemma 2 / 3 ``hook_attn_out`` and ``hook_mlp_out`` are taken after their
post-attention / post-feedforward norms (the tensor added to the residual stream), not at the raw
attention / MLP outputs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from saesteer.adapters.base import Adapter, HookPoint
from saesteer.errors import HookError

_SAELENS = re.compile(
    r"^blocks\.(-?\d+)\.(hook_resid_pre|hook_resid_post|hook_mlp_in|hook_mlp_out|hook_attn_out|attn\.hook_z)$")


@dataclass(frozen=True)
class DecoderLayout:
    """Module paths under the base model: the layer list, and inside a layer the MLP, the attention,
    the modules whose outputs are ``hook_mlp_out`` / ``hook_attn_out`` (the MLP / attention itself, or
    the norm after it), and the attention's output projection (its input is ``attn.hook_z``)."""

    layers: str = "layers"
    mlp: str = "mlp"
    attn: str = "self_attn"
    norm: str = "norm"
    mlp_out: str | None = None
    attn_out: str | None = None
    o_proj: str = "self_attn.o_proj"
    embed: str = "embed_tokens"


_GEMMA_POST_NORMS = dict(mlp_out="post_feedforward_layernorm", attn_out="post_attention_layernorm")


LAYOUTS: dict[str, DecoderLayout] = {
    "llama": DecoderLayout(),
    "mistral": DecoderLayout(),
    "mixtral": DecoderLayout(mlp="block_sparse_moe"),
    "qwen2": DecoderLayout(),
    "qwen3": DecoderLayout(),
    "gemma": DecoderLayout(),
    "gemma2": DecoderLayout(**_GEMMA_POST_NORMS),
    "gemma3_text": DecoderLayout(**_GEMMA_POST_NORMS),
    "gemma3": DecoderLayout(layers="language_model.layers", norm="language_model.norm", **_GEMMA_POST_NORMS),
    "phi3": DecoderLayout(),
    "olmo2": DecoderLayout(),
    "gpt2": DecoderLayout(layers="h", attn="attn", norm="ln_f", o_proj="attn.c_proj", embed="wte"),
    "gpt_neox": DecoderLayout(attn="attention", norm="final_layer_norm", o_proj="attention.dense", embed="embed_in"),
}


class DecoderAdapter(Adapter):
    """One adapter for every decoder-only trunk listed in :data:`LAYOUTS`."""

    model_types = tuple(LAYOUTS)

    def layout(self, model: nn.Module) -> DecoderLayout:
        mt = getattr(getattr(model, "config", None), "model_type", None)
        return LAYOUTS.get(mt, DecoderLayout())

    def layers(self, model: nn.Module) -> tuple[str, nn.ModuleList]:
        """The decoder layer list and its path from the top model."""
        lay = self.layout(model)
        for root in (self.base(model), model):
            try:
                mods = root.get_submodule(lay.layers)
            except AttributeError:
                continue
            if isinstance(mods, nn.ModuleList):
                for n, m in model.named_modules():
                    if m is mods:
                        return n, mods
        raise HookError(f"cannot find the decoder layers ({lay.layers!r}) of {type(model).__name__}")

    def final_norm(self, model: nn.Module) -> nn.Module | None:
        """The norm between the last layer and the unembedding (None when there is none)."""
        return _sub(self.base(model), self.layout(model).norm)

    def width(self, model: nn.Module) -> int | None:
        cfg = getattr(model, "config", None)
        if cfg is None:
            return None
        text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        return getattr(text, "hidden_size", None)

    def resolve_named(self, model: nn.Module, name: str) -> HookPoint | None:
        if name == "hook_embed":  # the token embedding's output (GPT-2: wte only, not the position embedding)
            lay = self.layout(model)
            mod = _sub(self.base(model), lay.embed)
            if mod is None:
                raise HookError(f"'hook_embed': {type(model).__name__} has no '{lay.embed}' module")
            path = next((n for n, m in model.named_modules() if m is mod), lay.embed)
            return HookPoint("hook_embed", path, mod, io="output", width=self.width(model))
        m = _SAELENS.match(name)
        if not m:
            return None
        path, layers = self.layers(model)
        n = len(layers)
        L = int(m.group(1))
        if not -n <= L < n:
            raise HookError(f"{name!r}: layer {L} is past the last layer (the model has {n}: 0..{n - 1})")
        L %= n
        kind = m.group(2)
        lay = self.layout(model)
        layer = layers[L]
        canon = f"blocks.{L}.{kind}"
        width = self.width(model)
        if kind in ("hook_resid_pre", "hook_resid_post"):
            io = "input" if kind == "hook_resid_pre" else "output"
            return HookPoint(canon, f"{path}.{L}", layer, io=io, width=width)
        sub, io = {"hook_mlp_in": (lay.mlp, "input"), "hook_mlp_out": (lay.mlp_out or lay.mlp, "output"),
                   "hook_attn_out": (lay.attn_out or lay.attn, "output"),
                   "attn.hook_z": (lay.o_proj, "input")}[kind]
        try:
            mod = layer.get_submodule(sub)
        except AttributeError:
            raise HookError(f"{name!r}: layer {L} has no '{sub}' module") from None
        if kind == "attn.hook_z":
            width = self.heads_width(model)
        return HookPoint(canon, f"{path}.{L}.{sub}", mod, io=io, width=width)

    def heads_width(self, model: nn.Module) -> int | None:
        """``n_heads * d_head``: the width of ``attn.hook_z`` (the concatenated heads)."""
        cfg = getattr(model, "config", None)
        text = cfg.get_text_config() if cfg is not None and hasattr(cfg, "get_text_config") else cfg
        heads = getattr(text, "num_attention_heads", None) or getattr(text, "n_head", None)
        if heads is None:
            return None
        d_head = getattr(text, "head_dim", None) or self.width(model) // heads  # type: ignore[operator]
        return int(heads) * int(d_head)

    def resolve(self, model: nn.Module, name: str) -> HookPoint:
        """As :meth:`Adapter.resolve`; a module path that is a layer, its MLP or its attention
        (sparsify's ``layers.L`` too) comes back under its SAELens name, so the forms agree."""
        point = super().resolve(model, name)
        if _SAELENS.match(point.name):
            return point
        try:
            _, layers = self.layers(model)
        except HookError:
            return point
        lay = self.layout(model)
        for L, layer in enumerate(layers):
            for kind, mod in (("hook_resid_post", layer), ("hook_mlp_out", _sub(layer, lay.mlp_out or lay.mlp)),
                              ("hook_attn_out", _sub(layer, lay.attn_out or lay.attn))):
                if mod is point.module:
                    return self.resolve_named(model, f"blocks.{L}.{kind}")  # type: ignore[return-value]
        return point

    def hook_names(self, model: nn.Module) -> list[str]:
        try:
            _, layers = self.layers(model)
        except HookError:
            return []
        n = len(layers)
        return [f"blocks.{L}.{k}" for L in range(n) for k in ("hook_resid_pre", "hook_resid_post")] + [
            f"blocks.{{0..{n - 1}}}.hook_mlp_in",
            f"blocks.{{0..{n - 1}}}.hook_mlp_out",
            f"blocks.{{0..{n - 1}}}.hook_attn_out",
            f"blocks.{{0..{n - 1}}}.attn.hook_z",
            f"{self.layout(model).layers}.{{0..{n - 1}}} (sparsify)",
        ]

    def describe(self, model: nn.Module) -> str:
        try:
            _, layers = self.layers(model)
        except HookError:
            return super().describe(model)
        n = len(layers)
        lay = self.layout(model)
        return (
            f"blocks.L.hook_resid_pre, blocks.L.hook_resid_post, blocks.L.hook_mlp_in, blocks.L.hook_mlp_out, "
            f"blocks.L.hook_attn_out, blocks.L.attn.hook_z for L in 0..{n - 1}; sparsify names {lay.layers}.L; "
            f"or a module path such as {lay.layers}.0.{lay.mlp}"
        )

    def default_hook(self, model: nn.Module, layer: int) -> str:
        return f"blocks.{layer}.hook_resid_post"


def _sub(module: nn.Module, path: str) -> nn.Module | None:
    try:
        return module.get_submodule(path)
    except AttributeError:
        return None
