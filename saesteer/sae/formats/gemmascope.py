"""Gemma Scope ``params.npz``: JumpReLU SAEs from Google DeepMind.

Facts (sae-lens 6.54 ``gemma_2_sae_huggingface_loader`` / ``get_gemma_2_config_from_hf``, and the
Gemma Scope release): ``params.npz`` holds ``W_enc [d,F]``, ``W_dec [F,d]``, ``b_enc [F]``,
``b_dec [d]``, ``threshold [F]`` (sae-lens also accepts lower-case ``w_*`` names); JumpReLU
``relu(z) * (z > threshold)`` with ``z = x @ W_enc + b_enc`` (``b_dec`` is *not* subtracted from the
input). Folders are ``layer_L/width_W/average_l0_N``; residual repos (``gemma-scope-*-res``) read
``blocks.L.hook_resid_post``, MLP repos ``blocks.L.hook_mlp_out``, attention repos
``blocks.L.attn.hook_z``. Residual repos also hold ``embedding/width_W/average_l0_N``: hook
``hook_embed``, and sae-lens's loader rescales those (``"embedding" in folder_name``) for how they were
trained: ``W_enc /= sqrt(d)``, ``W_dec *= sqrt(d)`` (``d`` the model width, the SAE's ``d_in``;
``b_enc``, ``b_dec`` and the threshold unchanged); so does saesteer.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from saesteer.errors import SAEFormatError
from saesteer.sae.formats import build_sae, read_npz
from saesteer.sae.module import SAE, SAEConfig

NAME = "gemmascope"
LAYOUT = "params.npz"
WEIGHTS_FILE = "params.npz"
_LAYOUT = re.compile(r"layer_(\d+)/width_([^/]+)/average_l0_(\d+)")
_EMBEDDING = re.compile(r"(?:^|/)embedding/width_([^/]+)/average_l0_(\d+)")
_REPO = re.compile(r"gemma-scope-(2b|9b|27b)-(pt|it)-(res|mlp|att)")


def detect(folder: Path) -> bool:
    """A folder with ``params.npz``."""
    return (folder / WEIGHTS_FILE).is_file()


def _names(path: Path) -> tuple[str | None, str | None, dict[str, object]]:
    """hook name, model name and layout facts read off the path (hub cache paths keep the repo name)."""
    s = path.as_posix()
    meta: dict[str, object] = {}
    hook = model = None
    m = _LAYOUT.search(s)
    repo = _REPO.search(s.replace("--", "/"))
    kind = repo.group(3) if repo else "res"
    if m:
        layer = int(m.group(1))
        meta.update({"layer": layer, "width": m.group(2), "average_l0": int(m.group(3))})
        hook = {"res": f"blocks.{layer}.hook_resid_post", "mlp": f"blocks.{layer}.hook_mlp_out",
                "att": f"blocks.{layer}.attn.hook_z"}[kind]
        if kind == "att":
            meta["reshape_activations"] = "hook_z"
    e = _EMBEDDING.search(s)
    if e and not m:
        meta.update({"embedding": True, "width": e.group(1), "average_l0": int(e.group(2))})
        if kind == "res":
            hook = "hook_embed"
    if repo:
        model = f"gemma-2-{repo.group(1)}" + ("-it" if repo.group(2) == "it" else "")
    return hook, model, meta


def load(path: Path, *, hookpoint: str | None = None) -> SAE:  # noqa: ARG001 - one SAE per folder
    """Read ``params.npz`` (a folder holding it, or the file) into an fp32 JumpReLU SAE."""
    file = path if path.is_file() else path / WEIGHTS_FILE
    raw = read_npz(file)
    t = {("W_" + k[2:] if k.startswith("w_") else k): v for k, v in raw.items()}
    missing = [k for k in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold") if k not in t]
    if missing:
        raise SAEFormatError(f"{file} lacks {missing} (has {sorted(raw)}); not a Gemma Scope params.npz")
    d, F = t["W_enc"].shape
    hook, model, meta = _names(file.parent)
    if "scaling_factor" in t:
        s = t.pop("scaling_factor").to(torch.float32)
        if not torch.allclose(s, torch.ones_like(s)):
            t["W_dec"] = t["W_dec"].to(torch.float32) * s.reshape(-1, 1)
            meta["folded_finetuning_scaling_factor"] = True
    if meta.get("embedding"):  # as sae-lens's gemma_2_sae_huggingface_loader for embedding/ folders
        r = float(d) ** 0.5
        t["W_enc"], t["W_dec"] = t["W_enc"].to(torch.float32) / r, t["W_dec"].to(torch.float32) * r
        meta["embedding_rescaled_by"] = r
    cfg = SAEConfig(
        d_in=int(d), d_sae=int(F), architecture="jumprelu", apply_b_dec_to_input=False,
        source_architecture="jumprelu", source_format=NAME, hook_name=hook, model_name=model, metadata=meta,
    )
    return build_sae(cfg, {k: t[k] for k in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")})
