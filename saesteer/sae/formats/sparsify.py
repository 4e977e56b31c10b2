"""EleutherAI sparsify folders: ``cfg.json`` + ``sae.safetensors``, one folder per hookpoint.

Facts checked against eai-sparsify 1.3 (``sparsify/sparse_coder.py``, ``fused_encoder.py``,
``trainer.py``):

- ``SparseCoder.save_to_disk`` writes ``sae.safetensors`` (``encoder.weight [F,d]``,
  ``encoder.bias [F]``, ``W_dec [F,d]``, ``b_dec [d]``, ``W_skip [d,d]`` with a skip connection) and
  ``cfg.json`` (the ``SparseCoderConfig`` fields plus ``d_in``); ``num_latents == 0`` means
  ``d_in * expansion_factor``.
- Transcoders (``transcode: true``, trained on ``layers.L.mlp``) read the MLP input and write its
  output, with no ``b_dec`` subtraction and, with ``skip_connection``, ``+ x @ W_skip.T`` in the
  forward; they load as saesteer transcoders (``blocks.L.hook_mlp_in`` -> the MLP module's output).
- ``encode``: ``x - b_dec`` (not for transcoders), then ``relu(encoder(x))``, then top-k
  (``activation == "topk"``) or a max per group (``groupmax``). ``decode``: ``top_acts @ W_dec[idx]
  + b_dec``. ``W_dec`` is stored ``[F, d]`` (rows are features): no transpose.
- The trainer saves each hookpoint under ``{save_dir}/{run_name}/{hookpoint}/`` next to a run
  ``config.json`` (``model`` = the HF model name) and optimizer state files.
- Top-k of ReLU'd values and ReLU of top-k values give the same dense activations, so the SAE maps
  to our ``topk`` architecture with ``topk_relu=True``. ``multi_topk`` only changes the training loss.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from saesteer.errors import SAEFormatError
from saesteer.sae.formats import build_sae, read_json, read_safetensors
from saesteer.sae.module import SAE, SAEConfig

NAME = "sparsify"
LAYOUT = "cfg.json + sae.safetensors, or one sub-folder per hookpoint"
CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"


def _is_sae_folder(folder: Path) -> bool:
    return (folder / CFG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def hookpoints(folder: Path) -> list[str]:
    """Names of the hookpoint sub-folders of a sparsify run folder (natural order)."""
    if not folder.is_dir():
        return []
    names = [c.name for c in folder.iterdir() if c.is_dir() and _is_sae_folder(c)]
    return sorted(names, key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)])


def detect(folder: Path) -> bool:
    """A folder with ``cfg.json`` + ``sae.safetensors``."""
    return _is_sae_folder(folder)


def _pick(path: Path, hookpoint: str | None) -> tuple[Path, str]:
    folder = path.parent if path.is_file() else path
    if _is_sae_folder(folder):
        return folder, hookpoint or folder.name
    available = hookpoints(folder)
    if not available:
        raise SAEFormatError(f"{folder} is not a sparsify folder (no {CFG_FILE} + {WEIGHTS_FILE})")
    if hookpoint is None:
        raise SAEFormatError(
            f"{folder} holds sparsify SAEs for several hookpoints; pass hookpoint= one of: "
            + ", ".join(available)
        )
    if hookpoint not in available:
        raise SAEFormatError(
            f"no SAE for hookpoint {hookpoint!r} in {folder}; available: " + ", ".join(available)
        )
    return folder / hookpoint, hookpoint


def load(path: Path, *, hookpoint: str | None = None) -> SAE:
    """Read one hookpoint's sparsify SAE (``hookpoint=`` picks it from a run folder)."""
    folder, hp = _pick(path, hookpoint)
    cfg = read_json(folder / CFG_FILE)
    transcode = bool(cfg.get("transcode"))
    if cfg.get("skip_connection") and not transcode:
        raise SAEFormatError(f"{folder}: a sparsify SAE with a skip connection (not a transcoder) is not supported")
    activation = cfg.get("activation", "topk")
    if activation != "topk":
        raise SAEFormatError(
            f"{folder}: sparsify activation {activation!r} is not supported (only topk; groupmax keeps "
            "one latent per group and has no equivalent in saesteer's SAE yet)"
        )
    if cfg.get("signed"):
        raise SAEFormatError(f"{folder}: signed sparsify SAEs are not supported yet")
    t = read_safetensors(folder / WEIGHTS_FILE)
    if "W_skip" in t and not transcode:
        raise SAEFormatError(f"{folder}: sparsify SAE has W_skip (skip connection) but is no transcoder; not supported")
    missing = [k for k in ("encoder.weight", "W_dec", "b_dec") if k not in t]
    if missing:
        raise SAEFormatError(f"{folder}/{WEIGHTS_FILE} lacks {missing} (has {sorted(t)})")
    enc = t["encoder.weight"].to(torch.float32)
    F, d = enc.shape
    d_in = int(cfg.get("d_in", d))
    n_lat = int(cfg.get("num_latents") or 0) or d_in * int(cfg.get("expansion_factor", 0))
    if d_in != d or (n_lat and n_lat != F):
        raise SAEFormatError(f"{folder}: cfg says d_in={d_in}, num_latents={n_lat} but encoder is {F}x{d}")
    run_cfg = folder.parent / "config.json"
    model_name = None
    if run_cfg.is_file():
        try:
            model_name = read_json(run_cfg).get("model")
        except SAEFormatError:
            model_name = None
    m = re.fullmatch(r"(?:model\.)?layers\.(\d+)", hp)
    metadata = {"sparsify_cfg": cfg, "hookpoint": hp}
    if m:
        metadata["tl_hook_name"] = f"blocks.{m.group(1)}.hook_resid_post"
    hook, hook_out = hp, None
    if transcode:  # reads the module's input, writes its output (sparsify trains MLP transcoders on layers.L.mlp)
        mt = re.fullmatch(r"(?:model\.)?layers\.(\d+)\.mlp", hp)
        if mt is None:
            raise SAEFormatError(f"{folder}: a sparsify transcoder at {hp!r}: saesteer places transcoders of "
                                 "layers.L.mlp (MLP input -> MLP output) only")
        hook, hook_out = f"blocks.{mt.group(1)}.hook_mlp_in", hp  # the MLP module's own output (before any post norm)
    config = SAEConfig(
        d_in=d, d_sae=F, architecture="topk", k=int(cfg.get("k", 32)), apply_b_dec_to_input=not transcode,
        topk_relu=True, source_architecture="sparsify_transcoder" if transcode else "sparsify_topk",
        source_format=NAME, hook_name=hook, model_name=model_name, metadata=metadata,
        d_out=int(t["W_dec"].shape[-1]) if transcode else None, hook_name_out=hook_out, skip="W_skip" in t,
    )
    tensors = {"W_enc": enc.T, "b_enc": t.get("encoder.bias", torch.zeros(F)), "W_dec": t["W_dec"], "b_dec": t["b_dec"]}
    if "W_skip" in t:
        tensors["W_skip"] = t["W_skip"]
    return build_sae(config, tensors)
