"""SAELens folders: ``cfg.json`` + ``sae_weights.safetensors`` (read and write).

Facts checked against sae-lens 6.54 (``sae_lens/saes/*.py``, ``sae_lens/loading/pretrained_sae_loaders.py``):

- standard: ``relu(x' @ W_enc + b_enc)``; jumprelu: ``relu(z) * (z > threshold)``; gated: gate
  ``x' @ W_enc + b_gate > 0`` times ``relu(x' @ (W_enc * exp(r_mag)) + b_mag)``, no ``b_enc``;
  topk: top-k of ``z`` then ReLU on the kept values. ``x' = norm_in(x) - b_dec * apply_b_dec_to_input``.
- topk ``rescale_acts_by_decoder_norm``: encode multiplies ``z`` by ``n = ‖W_dec[i]‖`` before top-k,
  decode divides by ``n``; sae-lens' own ``_fold_norm_topk`` folds it as ``W_enc *= n``,
  ``b_enc *= n``, ``W_dec /= n[:, None]``, which is what we do (same feature values).
- BatchTopK / Matryoshka-BatchTopK training SAEs are saved for inference as jumprelu (the scalar
  ``topk_threshold`` broadcast to ``[F]``, after that same fold); a training checkpoint saved with
  ``save_model`` (architecture ``batchtopk`` + ``topk_threshold``) is converted the same way.
- ``normalize_activations``: ``layer_norm`` = per token ``(x-μ)/(σ+1e-5)`` with unbiased σ, undone
  on output; ``constant_norm_rescale`` = ``x·sqrt(d)/‖x‖``, undone on output;
  ``expected_average_only_in`` and ``covariance_whitening`` are the identity at inference (the trainer
  folds its scale into the weights; for hub releases sae-lens folds ``norm_scaling_factor`` from its
  pretrained list, which :mod:`hub` passes on).
- pre-6.0 configs: ``hook_point``→``hook_name``, ``activation_fn_str``→``activation_fn``,
  ``activation_fn == "topk"`` with ``activation_fn_kwargs.k`` = architecture topk; a stored
  ``scaling_factor`` (finetuning scale, multiplies features before ``W_dec``) is folded into ``W_dec``.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import torch

from saesteer.errors import SAEFormatError
from saesteer.sae.formats import build_sae, read_json, read_safetensors
from saesteer.sae.formats.fields import Fields, tensor, widths
from saesteer.sae.module import SAE, SAEConfig

NAME = "saelens"
LAYOUT = "cfg.json + sae_weights.safetensors"
CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
#: sae-lens architectures we map onto our module
_ARCH = {
    "standard": "relu", "jumprelu": "jumprelu", "topk": "topk", "gated": "gated",
    "batchtopk": "jumprelu", "matryoshka_batchtopk": "jumprelu",
}
#: sae-lens transcoder architectures -> (activation, has a skip connection)
_TRANSCODERS = {"transcoder": ("relu", False), "skip_transcoder": ("relu", True),
                "jumprelu_transcoder": ("jumprelu", False), "jumprelu_skip_transcoder": ("jumprelu", True)}
_REFUSED = {
    "temporal": "a temporal SAE (its encoding depends on earlier tokens)",
    "matching_pursuit": "a matching-pursuit SAE (iterative, not a one-layer encoder)",
    "abstopk": "an AbsTopK SAE (top-k by |z| keeping signs)",
}
_META_KEYS = ("model_name", "hook_name", "hook_head_index", "prepend_bos", "context_size",
              "dataset_path", "neuronpedia_id", "model_from_pretrained_kwargs", "seqpos_slice")


def detect(folder: Path) -> bool:
    """A folder with ``cfg.json`` and ``sae_weights.safetensors``."""
    return (folder / CFG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def upgrade_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Rename pre-6.0 keys as sae-lens' ``handle_pre_6_0_config`` does; v6 dicts pass unchanged."""
    renames = {"hook_point": "hook_name", "hook_point_head_index": "hook_head_index",
               "activation_fn_str": "activation_fn"}
    out = {renames.get(k, k): v for k, v in cfg.items()}
    kwargs = out.get("activation_fn_kwargs") or {}
    if out.get("activation_fn") == "topk" and kwargs.get("k") is not None:
        out["architecture"] = "topk"
        out["k"] = kwargs["k"]
    norm = out.get("normalize_activations")
    if isinstance(norm, bool):
        out["normalize_activations"] = "expected_average_only_in" if norm else "none"
    elif norm is None:
        out["normalize_activations"] = "none"
    out.setdefault("architecture", "standard")
    out.setdefault("apply_b_dec_to_input", True)
    return out


def _refuse(arch: str, cfg: dict[str, Any], tensors: dict[str, torch.Tensor], path: Path) -> None:
    if arch in _REFUSED:
        raise SAEFormatError(f"{path}: architecture {arch!r} is {_REFUSED[arch]}; not supported yet")
    if arch not in _TRANSCODERS and ("W_skip" in tensors or ("d_out" in cfg and cfg["d_out"] != cfg.get("d_in"))):
        raise SAEFormatError(f"{path}: {arch!r} with W_skip / d_out != d_in: a transcoder must say so in its "
                             f"architecture ({', '.join(_TRANSCODERS)})")
    if arch not in _ARCH and arch not in _TRANSCODERS:
        raise SAEFormatError(f"{path}: unknown sae-lens architecture {arch!r}; known: {', '.join(_ARCH)}")
    act = cfg.get("activation_fn")
    if arch == "standard" and act not in (None, "relu"):
        raise SAEFormatError(f"{path}: activation_fn {act!r} is not supported (relu or topk only)")


def _decoder_norms(W_dec: torch.Tensor) -> torch.Tensor:
    return W_dec.norm(dim=-1).clamp(min=1e-8)


def load(path: Path, *, hookpoint: str | None = None) -> SAE:  # noqa: ARG001 - one SAE per folder
    """Read a SAELens folder (or its ``sae_weights.safetensors``) into an fp32 SAE."""
    folder = path.parent if path.is_file() else path
    where = folder / CFG_FILE
    cfg = upgrade_config(read_json(where))
    f = Fields(cfg, where)
    tensors = read_safetensors(folder / WEIGHTS_FILE)
    tensors = {k: v.to(torch.float32) for k, v in tensors.items()}
    src_arch = f.text("architecture")
    _refuse(src_arch, cfg, tensors, folder)
    arch, skip = _TRANSCODERS.get(src_arch, (_ARCH.get(src_arch), False))
    transcoder = src_arch in _TRANSCODERS
    meta_in = f.mapping("metadata")
    ours = f.mapping("saesteer")
    metadata: dict[str, Any] = {k: v for k, v in meta_in.items() if k not in ("hook_name", "model_name")}
    for k in _META_KEYS:
        if k in cfg and k not in ("hook_name", "model_name") and cfg[k] is not None:
            metadata.setdefault(k, cfg[k])
    if cfg.get("reshape_activations", "none") != "none":
        metadata["reshape_activations"] = cfg["reshape_activations"]

    wfile = folder / WEIGHTS_FILE
    W_enc, W_dec = tensor(tensors, "W_enc", wfile), tensor(tensors, "W_dec", wfile)
    if W_enc.ndim != 2:
        raise SAEFormatError(f"{wfile}: W_enc must be 2-D [d_in, d_sae], got shape {tuple(W_enc.shape)}")
    d_in = f.whole("d_in", int(W_enc.shape[0]))
    d_sae = f.whole("d_sae", int(W_enc.shape[1]))
    widths(where, d_in, d_sae, W_enc)
    out: dict[str, torch.Tensor] = {"W_enc": W_enc, "W_dec": W_dec, "b_dec": tensor(tensors, "b_dec", wfile)}
    k = None
    if arch == "gated":
        for name in ("b_gate", "b_mag", "r_mag"):
            out[name] = tensor(tensors, name, wfile)
    else:
        out["b_enc"] = tensors.get("b_enc", torch.zeros(d_sae))
    if skip:
        out["W_skip"] = tensor(tensors, "W_skip", wfile)
    rescale = f.flag("rescale_acts_by_decoder_norm", src_arch in ("batchtopk", "matryoshka_batchtopk"))
    if src_arch in ("topk", "batchtopk", "matryoshka_batchtopk") and rescale:
        if tuple(W_dec.shape) != (d_sae, d_in):
            raise SAEFormatError(f"{wfile}: W_dec has shape {tuple(W_dec.shape)}, expected {(d_sae, d_in)}")
        n = _decoder_norms(W_dec)
        out["W_enc"], out["b_enc"], out["W_dec"] = W_enc * n[None, :], out["b_enc"] * n, W_dec / n[:, None]
        metadata["folded_decoder_norm"] = True
    if arch == "topk":
        k = f.whole("k")
    if arch == "jumprelu":
        if "threshold" in tensors:
            out["threshold"] = tensors["threshold"]
        elif "log_threshold" in tensors:
            out["threshold"] = tensors["log_threshold"].exp()
        elif "topk_threshold" in tensors:
            out["threshold"] = tensors["topk_threshold"].reshape(()).expand(d_sae)
        else:
            raise SAEFormatError(f"{folder}: a {src_arch} SAE needs a threshold tensor")
    if cfg.get("finetuning_scaling_factor") and "scaling_factor" in tensors:
        s = tensors["scaling_factor"]
        if not torch.allclose(s, torch.ones_like(s)):
            out["W_dec"] = out["W_dec"] * s[:, None]
            metadata["folded_finetuning_scaling_factor"] = True

    norm = f.text("normalize_activations", "none")
    normalize = norm if norm in ("layer_norm", "constant_norm_rescale") else "none"
    if norm not in ("none", "layer_norm", "constant_norm_rescale", "expected_average_only_in",
                    "covariance_whitening"):
        raise SAEFormatError(f"{folder}: unknown normalize_activations {norm!r}")
    if norm in ("expected_average_only_in", "covariance_whitening"):
        metadata["normalize_activations"] = norm  # identity at inference, as in sae-lens

    training_arch = meta_in.get("training_architecture")
    o = Fields(ours, f"{where} (saesteer section)")
    config = SAEConfig(
        d_in=d_in, d_sae=d_sae, architecture=arch, k=k,
        apply_b_dec_to_input=f.flag("apply_b_dec_to_input", True),
        normalize=normalize, norm_eps=o.number("norm_eps", 1e-5),
        topk_relu=o.flag("topk_relu", True),
        source_architecture=ours.get("source_architecture") or training_arch or src_arch,
        source_format=ours.get("source_format") or NAME,
        hook_name=meta_in.get("hook_name", cfg.get("hook_name")),
        model_name=meta_in.get("model_name", cfg.get("model_name")),
        metadata=metadata,
        d_out=f.whole("d_out", int(W_dec.shape[-1])) if transcoder else None,
        hook_name_out=(meta_in.get("hook_name_out") or cfg.get("hook_name_out")) if transcoder else None,
        skip=skip,
    )
    sae = build_sae(config, out)
    scale = _stored_scale(cfg, meta_in)
    if norm == "expected_average_only_in" and scale is not None and "folded_input_scale" not in metadata:
        sae.fold_input_scale(scale)
    return sae


def _stored_scale(cfg: dict[str, Any], meta: dict[str, Any]) -> float | None:
    for src in (cfg, meta):
        for key in ("norm_scaling_factor", "activation_normalization_factor"):
            v = src.get(key)
            if isinstance(v, (int, float)) and math.isfinite(v) and v > 0:
                return float(v)
    return None


# -------------------------------------------------------------------------------------- writer
def _json_safe(v: Any) -> Any:
    try:
        json.dumps(v)
        return v
    except (TypeError, ValueError):
        if isinstance(v, torch.Tensor):
            return v.tolist()
        return None


def save(sae: SAE, folder: Path) -> Path:
    """Write ``sae`` as a SAELens v6 folder; sae-lens' ``SAE.load_from_disk`` gives the same outputs
    except where sae-lens has no equivalent (then a warning says so): TopK without ReLU on the kept
    values (SARM), and layer-norm eps other than 1e-5. Those facts are kept under ``cfg["saesteer"]``
    so saesteer reads them back exactly."""
    c = sae.cfg
    folder.mkdir(parents=True, exist_ok=True)
    arch = {"relu": "standard", "jumprelu": "jumprelu", "topk": "topk", "gated": "gated"}[c.architecture]
    if c.transcoder:
        if c.architecture not in ("relu", "jumprelu"):
            raise SAEFormatError(f"sae-lens has no {c.architecture} transcoder to save this one as")
        arch = {("relu", False): "transcoder", ("relu", True): "skip_transcoder", ("jumprelu", False):
                "jumprelu_transcoder", ("jumprelu", True): "jumprelu_skip_transcoder"}[(c.architecture, c.skip)]
    dtype = sae.dtype if sae.dtype in (torch.float16, torch.bfloat16, torch.float32) else torch.float32
    sd = {n: p.detach().to("cpu", dtype).contiguous() for n, p in sae.named_parameters()}
    names = ["W_enc", "W_dec", "b_dec"] + {
        "standard": ["b_enc"], "jumprelu": ["b_enc", "threshold"], "topk": ["b_enc"],
        "gated": ["b_gate", "b_mag", "r_mag"], "transcoder": ["b_enc"], "skip_transcoder": ["b_enc", "W_skip"],
        "jumprelu_transcoder": ["b_enc", "threshold"], "jumprelu_skip_transcoder": ["b_enc", "threshold", "W_skip"],
    }[arch]
    if c.architecture == "topk" and not c.topk_relu:
        warnings.warn("sae-lens TopK always applies ReLU to the kept values; this SAE (topk_relu=False) "
                      "will differ in sae-lens where a kept pre-activation is negative", stacklevel=3)
    if c.normalize == "layer_norm" and not math.isclose(c.norm_eps, 1e-5):
        warnings.warn(f"sae-lens layer_norm uses eps=1e-5; this SAE uses {c.norm_eps}", stacklevel=3)
    try:  # the installed sae-lens version (metadata only: importing sae-lens takes seconds)
        from importlib.metadata import version as _version

        version = _version("sae-lens")
    except Exception:  # noqa: BLE001 - sae-lens is optional
        version = "6.0.0"
    metadata = {k: _json_safe(v) for k, v in c.metadata.items() if _json_safe(v) is not None}
    metadata.pop("normalize_activations", None)
    metadata.update({"sae_lens_version": version, "sae_lens_training_version": version,
                     "hook_name": c.hook_name, "model_name": c.model_name})
    cfg: dict[str, Any] = {
        "d_in": c.d_in, "d_sae": c.d_sae, "dtype": str(dtype).removeprefix("torch."), "device": "cpu",
        "apply_b_dec_to_input": c.apply_b_dec_to_input, "normalize_activations": c.normalize,
        "reshape_activations": c.metadata.get("reshape_activations", "none"),
        "metadata": metadata, "architecture": arch,
    }
    if arch == "topk":
        cfg.update({"k": int(c.k), "rescale_acts_by_decoder_norm": False})  # type: ignore[arg-type]
    if c.transcoder:
        cfg["d_out"] = sae.d_out
        metadata["hook_name_out"] = c.hook_name_out
    cfg["saesteer"] = {"architecture": c.architecture, "topk_relu": c.topk_relu, "norm_eps": c.norm_eps,
                       "source_architecture": c.source_architecture, "source_format": c.source_format}
    from safetensors.torch import save_file

    save_file({n: sd[n] for n in names}, str(folder / WEIGHTS_FILE))
    (folder / CFG_FILE).write_text(json.dumps(cfg, indent=1))
    return folder
