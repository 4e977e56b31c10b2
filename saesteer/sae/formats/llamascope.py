"""Llama Scope (``fnlp/Llama3_1-8B-Base-LX{R,A,M}-{8,32}x``): JumpReLU SAEs of OpenMOSS, one folder each.

Facts checked against sae-lens 6.54 (``get_llama_scope_config_from_hf``,
``llama_scope_sae_huggingface_loader``, ``SAE.from_pretrained_with_cfg_and_sparsity``,
``SAE.fold_activation_norm_scaling_factor``) and its ``pretrained_saes.yaml``:

- a folder ``Llama3_1-8B-Base-L{layer}{R|A|M}-{8|32}x`` holds ``hyperparams.json`` (``d_model``,
  ``d_sae``, ``jump_relu_threshold`` (one scalar for every feature), ``dataset_average_activation_norm:
  {in, out}``, ``hook_point_in``, ...) and ``checkpoints/final.safetensors`` with ``encoder.weight
  [F,d]``, ``encoder.bias [F]``, ``decoder.weight [d,F]``, ``decoder.bias [d]``; sae-lens transposes
  both weights;
- JumpReLU ``relu(z) * (z > threshold)``, ``z = x @ W_enc + b_enc``; ``apply_b_dec_to_input`` False;
  hook ``hook_point_in``; model ``meta-llama/Llama-3.1-8B``;
- the SAE reads activations scaled by ``s = sqrt(d_model) / dataset_average_activation_norm.in``
  (``normalize_activations = "expected_average_only_in"``). sae-lens's config multiplies the threshold
  by ``s`` (``jump_relu_threshold * norm_scaling_factor``, broadcast to ``[F]``) and ``from_pretrained``
  folds ``s`` into the weights (``W_enc *= s``, ``W_dec /= s``, ``b_dec /= s``, ``b_enc`` and the
  threshold untouched), taking ``s`` from its release list, whose every Llama Scope entry is that same
  ``sqrt(4096) / in`` (e.g. 58.935 = 64 / 1.0859375 for L0R). saesteer computes ``s`` from
  ``hyperparams.json`` and does both, so the SAE reads and writes the model's own activations and
  gives sae-lens's features (``dataset_average_activation_norm.out`` is recorded, unused, as in
  sae-lens).

Refused: a ``hook_point_out`` other than ``hook_point_in`` (a transcoder: its output is for another
hook) and an ``act_fn`` other than ``jumprelu`` (sae-lens would read it as JumpReLU regardless).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from saesteer.errors import SAEFormatError
from saesteer.sae.formats import build_sae, read_json, read_safetensors
from saesteer.sae.formats.fields import Fields, shaped
from saesteer.sae.module import SAE, SAEConfig

NAME = "llamascope"
LAYOUT = "hyperparams.json + checkpoints/final.safetensors"
CFG_FILE = "hyperparams.json"
WEIGHTS_FILE = "checkpoints/final.safetensors"
MODEL = "meta-llama/Llama-3.1-8B"


def detect(folder: Path) -> bool:
    """A folder with ``hyperparams.json`` and ``checkpoints/final.safetensors``."""
    return (folder / CFG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def folder_of(path: Path) -> Path:
    """The SAE folder for ``path``: itself, or the folder above ``checkpoints/final.safetensors``."""
    if path.is_file():
        path = path.parent
    if path.name == "checkpoints" and (path.parent / CFG_FILE).is_file():
        path = path.parent
    return path


def input_scale(f: Fields, d_model: int) -> tuple[float, dict[str, Any]]:
    """``sqrt(d_model) / dataset_average_activation_norm.in`` and the norms (as metadata)."""
    norms = Fields(f.mapping("dataset_average_activation_norm"), f"{f.where} (dataset_average_activation_norm)")
    n_in = norms.number("in")
    if n_in <= 0:
        raise SAEFormatError(f"{f.where}: field 'dataset_average_activation_norm.in' must be > 0, got {n_in}")
    recorded = {"in": n_in, **({"out": norms.number("out")} if norms.has("out") else {})}
    meta = {"dataset_average_activation_norm": recorded}
    return math.sqrt(d_model) / n_in, meta


def one_hook(f: Fields, where: Path) -> str:
    """The hook an OpenMOSS (Llama Scope) config reads; one whose ``hook_point_out`` differs is a
    Llama Scope transcoder, which this reader does not read yet (refused, saying so)."""
    hook_in = f.text("hook_point_in")
    hook_out = f.text("hook_point_out", None)
    if hook_out is not None and hook_out != hook_in:
        raise SAEFormatError(f"{where}: hook_point_in {hook_in!r} but hook_point_out {hook_out!r}: a Llama Scope "
                             "transcoder (its output belongs to another hook), which saesteer does not read yet")
    return hook_in


def linear_weights(t: dict[str, torch.Tensor], wfile: Path, d: int, F: int, why: str) -> dict[str, torch.Tensor]:
    """``W_enc, W_dec, b_enc, b_dec`` from ``nn.Linear`` tensors ``encoder.* [F, d]`` / ``decoder.* [d, F]``,
    each shape-checked against what the config says (``why``)."""
    return {"W_enc": shaped(t, "encoder.weight", wfile, (F, d), why).T,
            "W_dec": shaped(t, "decoder.weight", wfile, (d, F), why).T,
            "b_enc": shaped(t, "encoder.bias", wfile, (F,), why), "b_dec": shaped(t, "decoder.bias", wfile, (d,), why)}


def load(path: Path, *, hookpoint: str | None = None) -> SAE:  # noqa: ARG001 - one SAE per folder
    """Read a Llama Scope folder (or its ``checkpoints/final.safetensors``) into an fp32 JumpReLU SAE
    in the model's own units (the dataset-norm scale folded in, as sae-lens's ``from_pretrained``)."""
    folder = folder_of(path)
    where, wfile = folder / CFG_FILE, folder / WEIGHTS_FILE
    if not where.is_file():
        raise SAEFormatError(f"{folder}: a Llama Scope SAE needs {CFG_FILE} (not found)")
    f = Fields(read_json(where), where)
    d, F = f.whole("d_model"), f.whole("d_sae")
    hook_in = one_hook(f, where)
    act = f.text("act_fn", "jumprelu")
    if act.lower().replace("_", "") != "jumprelu":
        raise SAEFormatError(f"{where}: field 'act_fn' is {act!r}; only Llama Scope's jumprelu SAEs are read")
    threshold = f.number("jump_relu_threshold")
    s, meta = input_scale(f, d)
    if not wfile.is_file():
        raise SAEFormatError(f"{folder}: a Llama Scope SAE needs {WEIGHTS_FILE} (not found)")
    t = read_safetensors(wfile)
    why = f"d_model={d}, d_sae={F} from {CFG_FILE}"
    tensors = {**linear_weights(t, wfile, d, F, why), "threshold": torch.full((F,), threshold * s)}
    meta.update({"jump_relu_threshold": threshold, "norm_scaling_factor": s, "hook_point_in": hook_in,
                 "normalize_activations": "expected_average_only_in", "scalar_threshold": True})
    cfg = SAEConfig(
        d_in=d, d_sae=F, architecture="jumprelu", apply_b_dec_to_input=False, source_architecture="jumprelu",
        source_format=NAME, hook_name=hook_in, model_name=MODEL, metadata=meta,
    )
    sae = build_sae(cfg, tensors)
    sae.fold_input_scale(s)
    return sae
