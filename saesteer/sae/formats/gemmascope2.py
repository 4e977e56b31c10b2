"""Gemma Scope 2 (``google/gemma-scope-2-{270m,1b,4b,12b,27b}-{pt,it}``): JumpReLU SAEs and transcoders
for Gemma 3, ``params.safetensors`` (+ optional ``config.json``) per folder.

Facts checked against sae-lens 6.54 (``get_gemma_3_config_from_hf``, ``_infer_gemma_3_raw_cfg_dict``,
``gemma_3_sae_huggingface_loader``) and its ``pretrained_saes.yaml``:

- folders are ``{kind}/layer_{L}_width_{W}_l0_{size}[_affine]`` with kind ``resid_post``, ``mlp_out``,
  ``attn_out``, ``transcoder`` (each also as ``{kind}_all``); cross-layer transcoders live under
  ``clt`` as ``{name}.safetensors`` with a 3-D ``w_dec`` that sae-lens sums over its layer dim;
- ``params.safetensors`` holds ``w_enc [d_in,F]``, ``w_dec [F,d_out]``, ``b_enc [F]``, ``b_dec
  [d_out]``, ``threshold [F]`` and, for affine transcoders, ``affine_skip_connection [d_in,d_out]``
  (sae-lens's ``W_skip`` is its transpose); no transposes otherwise;
- JumpReLU ``relu(z) * (z > threshold)``, ``z = x @ w_enc + b_enc``, ``apply_b_dec_to_input`` False,
  no normalisation; widths from the safetensors header (``w_enc``'s shape);
- the hook comes from the folder name, checked in this order: ``resid_post`` ->
  ``blocks.L.hook_resid_post``, ``attn_out`` -> ``blocks.L.attn.hook_z`` (HF ``model.layers.L.
  self_attn.o_proj.input``: the heads' outputs flattened, ``reshape_activations`` ``"none"``),
  ``mlp_out`` -> ``blocks.L.hook_mlp_out``, ``transcoder``/``clt`` -> ``blocks.L.hook_mlp_in`` with
  ``hook_name_out = blocks.L.hook_mlp_out``, ``d_out = w_dec.shape[-1]`` and architecture
  ``jumprelu_skip_transcoder`` when ``affine_connection`` (else ``jumprelu_transcoder``);
- ``config.json`` (when present) must say ``architecture: "jump_relu"``; its ``model_name`` is
  normalised to ``google/gemma-3-...`` (``-v3`` -> ``-3``, no ``-pt`` for 270m); without it the model
  comes from the repo name (``gemma-scope-2`` -> ``gemma-3``), ``affine_connection`` from ``affine``
  in the folder name and the HF hooks from the kind.

Residual-stream, mlp_out and attn_out SAEs load fully (the attention SAE reads the flattened
``hook_z``). Transcoders and CLTs are read by :func:`read` (what sae-lens records: ``hook_name``,
``hook_name_out``, ``d_out``, ``W_skip``) but :func:`load` refuses them: saesteer's SAE reads and
writes one hook with ``d_out == d_in`` and no skip connection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from saesteer.errors import SAEFormatError
from saesteer.sae.formats import build_sae, read_json, read_safetensors
from saesteer.sae.formats.fields import Fields, shaped
from saesteer.sae.module import SAE, SAEConfig

NAME = "gemmascope2"
LAYOUT = "params.safetensors with w_enc/w_dec/b_enc/b_dec/threshold [+ config.json], in <kind>/layer_<L>_... folders"
WEIGHTS_FILE = "params.safetensors"
CFG_FILE = "config.json"
KEYS = ("w_enc", "w_dec", "b_enc", "b_dec", "threshold")
_REPO = re.compile(r"gemma-scope-2-(\d+(?:m|b))-(pt|it)")


def detect(folder: Path) -> bool:
    """A folder with ``params.safetensors``."""
    return (folder / WEIGHTS_FILE).is_file()


def is_params_file(path: Path, keys: list[str]) -> bool:
    """A safetensors file of Gemma Scope 2 tensors (any name: CLT files are ``<name>.safetensors``)."""
    return path.name == WEIGHTS_FILE or {"w_enc", "w_dec", "threshold"} <= set(keys)


@dataclass
class Files:
    """One Gemma Scope 2 SAE as sae-lens describes it, from the config and the safetensors header."""

    weights: Path
    folder_name: str
    cfg: dict[str, Any]
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def transcoder(self) -> bool:
        return "transcoder" in self.cfg["architecture"]


def _header_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # noqa: BLE001
        raise SAEFormatError(f"cannot read safetensors header of {file}: {e}") from e


def _model_name(raw: dict[str, Any], path: Path) -> str | None:
    name = raw.get("model_name")
    if name is None:
        m = next((m for part in reversed(path.parts) if (m := _REPO.search(part))), None)
        if m is None:
            return None
        name = f"google/gemma-3-{m.group(1)}-{m.group(2)}"
    if not isinstance(name, str):
        raise SAEFormatError(f"{path / CFG_FILE}: field 'model_name' must be a string, got {name!r}")
    if "google" not in name:
        name = "google/" + name
    name = name.replace("-v3", "-3")
    return name.replace("-pt", "") if "270m" in name else name


def _inferred(folder_name: str, layer: int) -> dict[str, Any]:
    """sae-lens's ``_infer_gemma_3_raw_cfg_dict`` (without a config.json), less the model name."""
    raw: dict[str, Any] = {"architecture": "jump_relu"}
    if "transcoder" in folder_name or "clt" in folder_name:
        raw["hf_hook_point_in"] = f"model.layers.{layer}.pre_feedforward_layernorm.output"
        raw["hf_hook_point_out"] = f"model.layers.{layer}.post_feedforward_layernorm.output"
        raw["affine_connection"] = "affine" in folder_name
    elif "resid_post" in folder_name:
        raw["hf_hook_point_in"] = f"model.layers.{layer}.output"
    elif "attn_out" in folder_name:
        raw["hf_hook_point_in"] = f"model.layers.{layer}.self_attn.o_proj.input"
    elif "mlp_out" in folder_name:
        raw["hf_hook_point_in"] = f"model.layers.{layer}.post_feedforward_layernorm.output"
    return raw


def _kind(folder_name: str, raw: dict[str, Any], file: Path) -> str:
    """The SAE's kind from the folder name, in sae-lens's order; for a renamed local copy, from the
    config's HF hooks (saesteer's fallback: sae-lens would refuse the name)."""
    for kind in ("resid_post", "attn_out", "mlp_out", "transcoder", "clt"):
        if kind in folder_name:
            return kind
    hf_in, hf_out = str(raw.get("hf_hook_point_in") or ""), raw.get("hf_hook_point_out")
    if hf_out or "pre_feedforward_layernorm" in hf_in:
        return "transcoder"
    for kind, tail in (("resid_post", r"\.\d+\.output$"), ("attn_out", r"o_proj\.input$"),
                       ("mlp_out", r"post_feedforward_layernorm\.output$")):
        if re.search(tail, hf_in):
            return kind
    raise SAEFormatError(f"{file}: cannot tell the hook from the folder name {folder_name!r}: Gemma Scope 2 "
                         "folders are <kind>/layer_<L>_... with kind resid_post, mlp_out, attn_out or transcoder")


def _hooks(kind: str, layer: int) -> tuple[str, str | None]:
    return {
        "resid_post": (f"blocks.{layer}.hook_resid_post", None),
        "attn_out": (f"blocks.{layer}.attn.hook_z", None),
        "mlp_out": (f"blocks.{layer}.hook_mlp_out", None),
    }.get(kind, (f"blocks.{layer}.hook_mlp_in", f"blocks.{layer}.hook_mlp_out"))


def describe(path: Path) -> Files:
    """What sae-lens's ``get_gemma_3_config_from_hf`` records for the SAE at ``path`` (its folder, or
    its safetensors file), from ``config.json`` and the safetensors header only."""
    file = path if path.is_file() else path / WEIGHTS_FILE
    folder = file.parent
    if file.name == WEIGHTS_FILE:  # sae-lens's folder_name: "<kind>/layer_<L>_..."
        leaf, folder_name = folder.name, f"{folder.parent.name}/{folder.name}"
    else:  # a CLT file: "clt/.../<name>" + ".safetensors"
        leaf, folder_name = file.stem, "/".join([*folder.parts[-2:], file.stem])
    m = re.search(r"layer_(\d+)", leaf) or re.search(r"layer_(\d+)", folder_name)
    if m is None:
        raise SAEFormatError(f"{file}: Gemma Scope 2 SAEs are named by their folder, <kind>/layer_<L>_width_..."
                             f" (kind resid_post, mlp_out, attn_out, transcoder); {folder_name!r} names no layer")
    layer = int(m.group(1))
    cfg_file = folder / CFG_FILE
    raw = read_json(cfg_file) if cfg_file.is_file() and file.name == WEIGHTS_FILE else _inferred(folder_name, layer)
    where = cfg_file if cfg_file.is_file() and file.name == WEIGHTS_FILE else f"{folder_name} (inferred)"
    f = Fields(raw, where)
    if f.text("architecture", None) != "jump_relu":
        raise SAEFormatError(f"{where}: field 'architecture' must be 'jump_relu' for Gemma Scope 2, got "
                             f"{raw.get('architecture')!r}")
    hook, hook_out = _hooks(_kind(folder_name, raw, file), layer)
    shapes = _header_shapes(file)
    if "w_enc" not in shapes or len(shapes["w_enc"]) != 2:
        raise SAEFormatError(f"{file}: tensor 'w_enc' [d_in, d_sae] is missing or not 2-D (the file has: "
                             f"{', '.join(f'{k}{list(v)}' for k, v in sorted(shapes.items())) or 'none'})")
    d_in, d_sae = shapes["w_enc"]
    cfg: dict[str, Any] = {
        "architecture": "jumprelu", "d_in": d_in, "d_sae": d_sae, "model_name": _model_name(raw, folder),
        "hook_name": hook, "apply_b_dec_to_input": False, "normalize_activations": "none",
        "reshape_activations": "none", "hf_hook_name": f.text("hf_hook_point_in", None),
    }
    if hook_out is not None:
        cfg["hook_name_out"], cfg["hf_hook_name_out"] = hook_out, f.text("hf_hook_point_out", None)
        affine = f.flag("affine_connection", False)
        cfg["architecture"] = "jumprelu_skip_transcoder" if affine else "jumprelu_transcoder"
        if "w_dec" not in shapes:
            raise SAEFormatError(f"{file}: tensor 'w_dec' is missing")
        cfg["d_out"] = shapes["w_dec"][-1]
    return Files(weights=file, folder_name=folder_name, cfg=cfg, shapes=shapes)


def read(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config, state dict) as sae-lens's ``gemma_3_sae_huggingface_loader`` returns them, for any
    Gemma Scope 2 SAE or transcoder: ``W_enc``, ``W_dec`` (a CLT's summed over its layer dim),
    ``b_enc``, ``b_dec``, ``threshold`` and, with an affine skip connection, ``W_skip [d_out, d_in]``."""
    info = describe(path)
    t = read_safetensors(info.weights)
    for k in KEYS:
        if k not in t:
            raise SAEFormatError(f"{info.weights}: tensor {k!r} is missing (the file has: {', '.join(sorted(t))})")
    w_dec = t["w_dec"].to(torch.float32)
    if "clt" in info.folder_name:
        w_dec = w_dec.sum(dim=1)
    sd = {"W_enc": t["w_enc"].to(torch.float32), "W_dec": w_dec, "b_enc": t["b_enc"].to(torch.float32),
          "b_dec": t["b_dec"].to(torch.float32), "threshold": t["threshold"].to(torch.float32)}
    if "affine_skip_connection" in t:
        sd["W_skip"] = t["affine_skip_connection"].to(torch.float32).T.contiguous()
    return info.cfg, sd


def _refuse_clt(info: Files) -> None:
    """A cross-layer transcoder writes every later layer (a 3-D ``w_dec``); sae-lens sums those writes
    into one, which is not what the model computed with it: refused, naming what would be needed."""
    s = info.shapes
    if "clt" in info.folder_name or len(s.get("w_dec", ())) == 3:
        raise SAEFormatError(
            f"{info.weights}: a Gemma Scope 2 cross-layer transcoder (CLT): its decoder writes layer "
            f"{info.cfg['hook_name']} and every layer after it (w_dec {tuple(s.get('w_dec', ()))}). saesteer steers "
            "a transcoder's own layer only and will not sum the cross-layer writes into one as sae-lens does; "
            "per-layer transcoders (transcoder/...) load")


def load(path: Path, *, hookpoint: str | None = None) -> SAE:  # noqa: ARG001 - one SAE per folder
    """Read a Gemma Scope 2 SAE folder (or its safetensors file) into an fp32 JumpReLU SAE or, for
    ``transcoder/`` folders, a JumpReLU transcoder (skip connection included for affine ones); a
    cross-layer transcoder is refused after reading only its config and header."""
    info = describe(path)
    _refuse_clt(info)
    c, file = info.cfg, info.weights
    meta: dict[str, Any] = {"folder_name": info.folder_name, "hf_hook_name": c["hf_hook_name"]}
    m = re.search(r"width_(\w+?)_l0_(\w+?)(?:_affine)?$", info.folder_name)
    if m:
        meta.update({"width": m.group(1), "l0": m.group(2)})
    if info.transcoder:  # reads the MLP input, writes the MLP output (after Gemma's post-feedforward norm)
        _, sd = read(path)
        d, F, d_out = c["d_in"], c["d_sae"], c.get("d_out") or int(sd["W_dec"].shape[-1])
        cfg = SAEConfig(
            d_in=d, d_sae=F, architecture="jumprelu", apply_b_dec_to_input=False, source_architecture=c["architecture"],
            source_format=NAME, hook_name=c["hook_name"], model_name=c["model_name"], metadata=meta,
            d_out=d_out, hook_name_out=c.get("hook_name_out"), skip="W_skip" in sd,
        )
        return build_sae(cfg, sd)
    shapes = info.shapes
    skip, d_out = "affine_skip_connection" in shapes, (shapes.get("w_dec") or [None])[-1]
    if skip or d_out != c["d_in"]:
        raise SAEFormatError(f"{file}: a {info.folder_name.split('/')[0]} SAE of Gemma Scope 2 reads and writes one hook, "
                             f"but this file has d_in={c['d_in']}, d_out={d_out}, W_skip {'yes' if skip else 'no'}: only "
                             "transcoder/ folders hold transcoders")
    t = read_safetensors(info.weights)
    d, F = c["d_in"], c["d_sae"]
    why = f"d_in={d}, d_sae={F} from w_enc"
    tensors = {"W_enc": shaped(t, "w_enc", file, (d, F), why), "W_dec": shaped(t, "w_dec", file, (F, d), why),
               "b_enc": shaped(t, "b_enc", file, (F,), why), "b_dec": shaped(t, "b_dec", file, (d,), why),
               "threshold": shaped(t, "threshold", file, (F,), why)}
    cfg = SAEConfig(
        d_in=d, d_sae=F, architecture="jumprelu", apply_b_dec_to_input=False, source_architecture="jumprelu",
        source_format=NAME, hook_name=c["hook_name"], model_name=c["model_name"], metadata=meta,
    )
    return build_sae(cfg, tensors)
