"""SARM (schrieffer-z/sarm): the TopK SAE inside a sparse-autoencoder reward model.

Facts checked against schrieffer-z/sarm (``src/sae.py``, ``src/modeling_sarm_llama.py``,
``src/apply.py``):

- ``TopkSAE``: ``pre_bias [d]``, ``latent_bias [F]``, ``encoder.weight [F,d]`` and
  ``decoder.weight [d,F]`` (an older version names it ``_decoder``), both bias-free ``nn.Linear``.
  ``pre_acts = encoder(x - pre_bias) + latent_bias``; ``get_latents`` keeps the top-k
  pre-activations *as they are* (no ReLU); ``decode = decoder(z) + pre_bias``.
- ``pre_process`` standardises each token before the SAE: ``(h - mean) / (std + 1e-6)`` with
  ``torch.std`` (unbiased) over the hidden dim, no affine; our ``layer_norm`` with ``norm_eps=1e-6``
  is exactly that (and un-normalises the reconstruction, which SARM itself never needs).
- The reward model (``LlamaSARM``) holds it as ``self.sae`` (keys ``sae.pre_bias`` ...) next to
  ``score.weight [1, F]`` and ``model.layers.*``; its ``config.json`` has ``sarm_param`` with
  ``sae_latent_size``, ``sae_k``, ``sae_source_layer`` (layers kept; default half the model, the SAE
  reads the output of the last one, no final norm) and ``sarm_use_activation`` (whether the head
  reads the top-k latents or the raw pre-activations). Stand-alone SAE files are named like
  ``..._Latent16384_Layer8_K144_...`` and SARM parses F, layer and k from that name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from saesteer.errors import SAEFormatError
from saesteer.sae.formats import build_sae, read_json, read_safetensors, safetensors_keys
from saesteer.sae.module import SAE, SAEConfig

NAME = "sarm"
LAYOUT = "safetensors or .pt with pre_bias/latent_bias/encoder/decoder"
INDEX_FILE = "model.safetensors.index.json"
_SKIP = ("sae_weights.safetensors", "sae.safetensors")


def _candidate_files(folder: Path) -> list[Path]:
    """Safetensors files that may hold the SAE: from the shard index when there is one."""
    index = folder / INDEX_FILE
    if index.is_file():
        wm = read_json(index).get("weight_map") or {}
        shards = sorted({v for k, v in wm.items() if k.endswith(("pre_bias", "latent_bias"))})
        return [folder / s for s in shards if (folder / s).is_file()]
    return sorted(p for p in folder.glob("*.safetensors") if p.name not in _SKIP)


def find_prefix(keys: list[str]) -> list[str]:
    """Key prefixes ('', 'sae.', 'sae_', ...) under which a complete SARM TopkSAE is stored."""
    ks = set(keys)
    out = []
    for key in keys:
        if key.endswith("pre_bias"):
            p = key[: -len("pre_bias")]
            dec = p + "decoder.weight" in ks or p + "_decoder.weight" in ks
            if p + "latent_bias" in ks and p + "encoder.weight" in ks and dec:
                out.append(p)
    return out


def detect(path: Path) -> bool:
    """A folder whose config.json has ``sarm_param`` or whose safetensors hold a SARM SAE (reads
    safetensors headers only), or such a safetensors file."""
    if path.is_file():
        return path.suffix == ".safetensors" and bool(find_prefix(safetensors_keys(path)))
    cfg = path / "config.json"
    if cfg.is_file():
        try:
            if "sarm_param" in read_json(cfg):
                return True
        except SAEFormatError:
            pass
    return any(find_prefix(safetensors_keys(f)) for f in _candidate_files(path)[:4])


def _int_from_name(pattern: str, s: str) -> int | None:
    m = re.search(pattern, s)
    return int(m.group(1)) if m else None


def load(path: Path, *, hookpoint: str | None = None) -> SAE:  # noqa: ARG001 - one SAE per checkpoint
    """Read the SARM SAE from a safetensors file, or a folder (a reward-model checkpoint, sharded
    or not): only the four SAE tensors are read. The key prefix is found from the keys."""
    if path.is_file() and path.suffix.lower() in (".pt", ".pth"):  # a .pt state dict (SARM's merge step)
        from saesteer.sae.formats import torchfile

        return from_state_dict(torchfile.state_dict(path), path)
    files = [path] if path.is_file() else _candidate_files(path)
    found: list[tuple[Path, str]] = []
    keys_of: dict[Path, list[str]] = {}
    for f in files:
        keys_of[f] = safetensors_keys(f)
        found += [(f, p) for p in find_prefix(keys_of[f])]
    if not found:
        raise SAEFormatError(f"no SARM SAE (pre_bias, latent_bias, encoder.weight, decoder.weight) in {path}")
    if len(found) > 1:
        raise SAEFormatError(f"several SARM SAEs in {path}: " + ", ".join(f"{f.name}:{p!r}" for f, p in found))
    file, prefix = found[0]
    dec = prefix + ("decoder.weight" if prefix + "decoder.weight" in keys_of[file] else "_decoder.weight")
    names = [prefix + "pre_bias", prefix + "latent_bias", prefix + "encoder.weight", dec]
    return _build(path, file, prefix, read_safetensors(file, names), keys_of[file], _file_meta_int(file, "k"))


def from_state_dict(sd: dict[str, Any], path: Path) -> SAE:
    """The SARM SAE in a ``.pt`` state dict (what SARM's own merge step reads), already loaded with
    ``torch.load(weights_only=True)``; ``k`` and the layer come from ``config.json`` beside it or
    from the file name, as for safetensors."""
    found = find_prefix(list(sd))
    if len(found) != 1:
        raise SAEFormatError(f"{path}: expected one SARM SAE (pre_bias, latent_bias, encoder.weight, "
                             f"decoder.weight), found {len(found)}")
    return _build(path, path, found[0], sd, list(sd), None)


def _build(path: Path, file: Path, prefix: str, t: dict[str, Any], keys: list[str], k_meta: int | None) -> SAE:
    folder = path.parent if path.is_file() else path
    dec = prefix + ("decoder.weight" if prefix + "decoder.weight" in keys else "_decoder.weight")
    enc, W = t[prefix + "encoder.weight"], t[dec]
    F, d = enc.shape
    sarm_param: dict[str, Any] = {}
    cfg_file = folder / "config.json"
    if cfg_file.is_file():
        sarm_param = dict(read_json(cfg_file).get("sarm_param") or {})
    name = path.as_posix()
    k = sarm_param.get("sae_k") or k_meta or _int_from_name(r"_K(\d+)(?:[_./-]|$)", name)
    if k is None:
        raise SAEFormatError(
            f"{path}: cannot find SARM's k (no config.json sarm_param.sae_k, no 'k' in the safetensors "
            "metadata, no _K<k>_ in the name)"
        )
    layer = sarm_param.get("sae_source_layer") or sarm_param.get("sae_hidden_state_source_layer") or \
        _int_from_name(r"_Layer(\d+)(?:[_./-]|$)", name)
    meta: dict[str, Any] = {"key_prefix": prefix, "sarm_param": sarm_param}
    if layer is not None:
        meta["sae_source_layer"] = int(layer)
    score = [key for key in keys if key == "score.weight" or key.endswith(".score.weight")]
    if score:
        meta["score_key"], meta["score_file"] = score[0], file.name
    cfg = SAEConfig(
        d_in=int(d), d_sae=int(F), architecture="topk", k=int(k), topk_relu=False,
        apply_b_dec_to_input=True, normalize="layer_norm", norm_eps=1e-6,
        source_architecture="sarm_topk", source_format=NAME,
        hook_name=f"blocks.{int(layer) - 1}.hook_resid_post" if layer else None, metadata=meta,
    )
    return build_sae(cfg, {
        "W_enc": enc.T, "b_enc": t[prefix + "latent_bias"], "W_dec": W.T, "b_dec": t[prefix + "pre_bias"],
    })


def _file_meta_int(file: Path, key: str) -> int | None:
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            v = (f.metadata() or {}).get(key)
        return int(v) if v is not None else None
    except Exception:  # noqa: BLE001 - metadata is optional
        return None
