"""SAE families in their exact hub layouts, written small and random, and sae-lens's own loader for
each (its ``hf_hub_download`` / ``get_safetensors_tensor_shapes`` pointed at the local files), for
tests/test_parity_families.py and scripts/sae_family_parity.py.

``write(family, root)`` writes one family's files under ``root`` (named as the hub cache names them:
``models--<owner>--<repo>/snapshots/<rev>/<folder>``) and returns a :class:`Case`; ``reference(case)``
builds sae-lens's SAE from its loader's (cfg, state dict) as ``SAE.from_pretrained`` does (config
defaulting, ``from_dict``, ``process_state_dict_for_loading``, ``load_state_dict``, and the fold of
the release list's ``norm_scaling_factor`` for ``expected_average_only_in``); ``compare(case)``
loads the same files with ``saesteer.load_sae`` and measures the differences.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from unittest import mock

import numpy as np
import torch
from safetensors.torch import save_file

D, F = 16, 64
REV = "snapshots/0123abc"


@dataclass
class Case:
    family: str  # saesteer's reader
    layout: str  # the files, as the README quotes them
    local: Path  # what the user passes to load_sae
    repo_id: str
    folder_name: str
    loader: str  # name of sae-lens's loader in pretrained_sae_loaders
    files: dict[str, Path]  # repo path -> local file (what hf_hub_download returns)
    weights: Path  # the file holding the tensors
    fold: float | None = None  # the release list's norm_scaling_factor that from_pretrained folds
    overrides: dict[str, Any] = field(default_factory=dict)  # cfg_overrides beyond device/dtype
    load_kw: dict[str, Any] = field(default_factory=dict)  # keywords for saesteer.load_sae
    x_scale: float = 2.0
    model_in_files: bool = True  # False: only the repo id names the model, and the local path lacks it


def _repo_dir(root: Path, repo_id: str) -> Path:
    return root / f"models--{repo_id.replace('/', '--')}" / REV


def _rand(*shape: int, scale: float = 1.0, g: torch.Generator) -> torch.Tensor:
    return torch.randn(*shape, generator=g) * scale


def _linear(g: torch.Generator, d: int = D, n: int = F, enc: str = "encoder", dec: str = "decoder") -> dict:
    return {f"{enc}.weight": _rand(n, d, scale=0.4, g=g), f"{enc}.bias": _rand(n, scale=0.3, g=g) - 0.2,
            f"{dec}.weight": _rand(d, n, scale=0.3, g=g), f"{dec}.bias": _rand(d, scale=0.5, g=g)}


def write(family: str, root: Path, variant: str = "", seed: int = 0) -> Case:
    """Write ``family``'s files (``variant`` picks a sub-layout) under ``root``; returns the Case."""
    g = torch.Generator().manual_seed(seed)
    return WRITERS[(family, variant)](root, g)


def _llamascope(root: Path, g: torch.Generator) -> Case:
    repo, folder = "fnlp/Llama3_1-8B-Base-LXR-8x", "Llama3_1-8B-Base-L15R-8x"
    here = _repo_dir(root, repo) / folder
    (here / "checkpoints").mkdir(parents=True)
    hp = {"d_model": D, "d_sae": F, "jump_relu_threshold": 0.3, "hook_point_in": "blocks.15.hook_resid_post",
          "hook_point_out": "blocks.15.hook_resid_post", "dataset_average_activation_norm": {"in": 2.5, "out": 2.75},
          "act_fn": "jumprelu", "expansion_factor": F // D}
    (here / "hyperparams.json").write_text(json.dumps(hp))
    save_file(_linear(g), str(here / "checkpoints" / "final.safetensors"))
    return Case("llamascope", "hyperparams.json + checkpoints/final.safetensors", here, repo, folder,
                "llama_scope_sae_huggingface_loader",
                {f"{folder}/hyperparams.json": here / "hyperparams.json",
                 f"{folder}/checkpoints/final.safetensors": here / "checkpoints" / "final.safetensors"},
                here / "checkpoints" / "final.safetensors", fold=math.sqrt(D) / 2.5)


def _r1(root: Path, g: torch.Generator, norms: bool = True) -> Case:
    repo, folder = "fnlp/Llama-Scope-R1-Distill", "800M-Slimpajama-0-OpenR1-Math-220k/L15R"
    here = _repo_dir(root, repo) / folder
    here.mkdir(parents=True)
    cfg: dict[str, Any] = {"d_model": D, "expansion_factor": F // D, "hook_point_in": "blocks.15.hook_resid_post",
                           "hook_point_out": "blocks.15.hook_resid_post", "act_fn": "jumprelu"}
    if norms:
        cfg["dataset_average_activation_norm"] = {"in": 1.7, "out": 1.7}
    (here / "config.json").write_text(json.dumps(cfg))
    t = _linear(g)
    t["log_jumprelu_threshold"] = torch.log(torch.rand(F, generator=g) * 0.5 + 0.05)
    save_file(t, str(here / "sae_weights.safetensors"))
    layout = "config.json + sae_weights.safetensors (encoder.*, decoder.*, log_jumprelu_threshold)" + (
        "; dataset norm in config.json" if norms else
        "; no dataset norm: unscaled, as sae-lens without its list's factor")
    return Case("llamascope_r1", layout,
                here, repo, folder, "llama_scope_r1_distill_sae_huggingface_loader",
                {f"{folder}/config.json": here / "config.json",
                 f"{folder}/sae_weights.safetensors": here / "sae_weights.safetensors"},
                here / "sae_weights.safetensors", fold=math.sqrt(D) / 1.7 if norms else None)


def _gemma3(root: Path, g: torch.Generator, kind: str = "resid_post", config: bool = False,
            affine: bool = False, d: int = D) -> Case:
    repo = "google/gemma-scope-2-1b-pt"
    folder = f"{kind}/layer_12_width_16k_l0_big" + ("_affine" if affine else "")
    here = _repo_dir(root, repo) / folder
    here.mkdir(parents=True)
    t = {"w_enc": _rand(d, F, scale=0.4, g=g), "w_dec": _rand(F, D if kind == "transcoder" else d, scale=0.3, g=g),
         "b_enc": _rand(F, scale=0.3, g=g), "b_dec": _rand(D if kind == "transcoder" else d, scale=0.5, g=g),
         "threshold": torch.rand(F, generator=g) * 0.6}
    if affine:
        t["affine_skip_connection"] = _rand(d, D, scale=0.2, g=g)
    save_file(t, str(here / "params.safetensors"))
    files = {f"{folder}/params.safetensors": here / "params.safetensors"}
    if config:
        hooks = {"mlp_out": "model.layers.12.post_feedforward_layernorm.output", "resid_post": "model.layers.12.output"}
        (here / "config.json").write_text(json.dumps({"architecture": "jump_relu", "model_name": "gemma-v3-1b-pt",
                                                      "hf_hook_point_in": hooks.get(kind, "x"), "width": F}))
        files[f"{folder}/config.json"] = here / "config.json"
    layout = "params.safetensors (w_enc, w_dec, b_enc, b_dec, threshold)" + (" + config.json" if config else "")
    return Case("gemmascope2", f"{kind}/layer_L_...: {layout}", here, repo, folder, "gemma_3_sae_huggingface_loader",
                files, here / "params.safetensors")


def _qwen(root: Path, g: torch.Generator, in_repo: bool = True) -> Case:
    # Qwen3-1.7B-Base is 2048 wide in sae-lens's table; W1K keeps the file at 8 MiB a matrix
    repo, name, d, n = "Qwen/SAE-Res-Qwen3-1.7B-Base-W1K-L0_8", "layer3.sae.pt", 2048, 1024
    here = _repo_dir(root, repo) if in_repo else root / "downloads"
    here.mkdir(parents=True)
    sd = {"W_enc": _rand(n, d, scale=0.05, g=g), "W_dec": _rand(d, n, scale=0.05, g=g),
          "b_enc": _rand(n, scale=0.1, g=g), "b_dec": _rand(d, scale=0.1, g=g)}
    torch.save(sd, here / name)
    how_k = "k from the SAE-Res-...-L0_<k> folder" if in_repo else "outside its repo folder, k= passed"
    return Case("qwenscope", f"layer<n>.sae.pt (W_enc [F,d], W_dec [d,F], b_enc, b_dec); {how_k}",
                here / name, repo, name, "qwen_scope_sae_huggingface_loader", {name: here / name}, here / name,
                load_kw={} if in_repo else {"k": 8}, x_scale=1.0, model_in_files=in_repo)


def _deepseek(root: Path, g: torch.Generator) -> Case:
    repo, name = "qresearch/DeepSeek-R1-Distill-Llama-8B-SAE-l19", "DeepSeek-R1-Distill-Llama-8B-SAE-l19.pt"
    here = _repo_dir(root, repo)
    here.mkdir(parents=True)
    torch.save(_linear(g), here / name)
    return Case("deepseek_r1", "<model>-SAE-l<L>.pt (encoder.weight/bias, decoder.weight/bias)", here / name, repo,
                name, "deepseek_r1_sae_huggingface_loader", {name: here / name}, here / name,
                overrides={"d_in": D, "d_sae": F})


def _goodfire(root: Path, g: torch.Generator, big: bool = False) -> Case:
    repo, name = (("Goodfire/Llama-3.3-70B-Instruct-SAE-l50", "Llama-3.3-70B-Instruct-SAE-l50.pt") if big else
                  ("Goodfire/Llama-3.1-8B-Instruct-SAE-l19", "Llama-3.1-8B-Instruct-SAE-l19.pth"))
    here = _repo_dir(root, repo)
    here.mkdir(parents=True)
    torch.save(_linear(g, enc="encoder_linear", dec="decoder_linear"), here / name)
    return Case("goodfire", f"{name} (encoder_linear.*, decoder_linear.*)", here / name, repo, name,
                "get_goodfire_huggingface_loader", {name: here / name}, here / name, overrides={"d_in": D, "d_sae": F})


def _gemma2_embedding(root: Path, g: torch.Generator) -> Case:
    # sae-lens rescales by sqrt of its table's d_in (2304 for gemma-2-2b): the file must be that wide
    repo, folder, d = "google/gemma-scope-2b-pt-res", "embedding/width_4k/average_l0_6", 2304
    here = _repo_dir(root, repo) / folder
    here.mkdir(parents=True)
    t = {"W_enc": _rand(d, F, scale=0.5, g=g), "W_dec": _rand(F, d, scale=0.02, g=g), "b_enc": _rand(F, scale=0.1, g=g),
         "b_dec": _rand(d, scale=0.01, g=g), "threshold": torch.rand(F, generator=g) * 0.5}
    np.savez(here / "params.npz", **{k: v.numpy() for k, v in t.items()})
    return Case("gemmascope", "embedding/width_W/average_l0_N/params.npz (Gemma Scope v1, hook_embed)", here, repo,
                folder, "gemma_2_sae_huggingface_loader", {f"{folder}/params.npz": here / "params.npz"},
                here / "params.npz", overrides={"d_sae": F}, x_scale=0.05)


WRITERS: dict[tuple[str, str], Callable[[Path, torch.Generator], Case]] = {
    ("llamascope", ""): _llamascope,
    ("llamascope_r1", ""): _r1,
    ("llamascope_r1", "no_norms"): lambda r, g: _r1(r, g, norms=False),
    ("gemmascope2", ""): _gemma3,
    ("gemmascope2", "mlp_out_config"): lambda r, g: _gemma3(r, g, "mlp_out", config=True),
    ("gemmascope2", "attn_out"): lambda r, g: _gemma3(r, g, "attn_out", d=2 * D),
    ("gemmascope2", "transcoder"): lambda r, g: _gemma3(r, g, "transcoder"),
    ("gemmascope2", "transcoder_affine"): lambda r, g: _gemma3(r, g, "transcoder", affine=True),
    ("qwenscope", ""): _qwen,
    ("qwenscope", "outside_repo"): lambda r, g: _qwen(r, g, in_repo=False),
    ("deepseek_r1", ""): _deepseek,
    ("goodfire", ""): _goodfire,
    ("goodfire", "70b"): lambda r, g: _goodfire(r, g, big=True),
    ("gemmascope", "embedding"): _gemma2_embedding,
}
#: the variants compared with sae-lens (every one that loads; Gemma Scope 2 per-layer transcoders included)
PARITY = list(WRITERS)


@contextlib.contextmanager
def sae_lens_hub(case: Case):
    """sae-lens's loaders see ``case.files`` as the hub repo ``case.repo_id``."""
    from huggingface_hub.utils import EntryNotFoundError
    from safetensors import safe_open

    import sae_lens.loading.pretrained_sae_loaders as L

    def download(repo_id: str, filename: str, *, subfolder: str | None = None, **_: Any) -> str:
        key = f"{subfolder}/{filename}" if subfolder else filename
        if repo_id != case.repo_id or key not in case.files:
            raise EntryNotFoundError(f"{repo_id}/{key} not in the fake hub")
        return str(case.files[key])

    def shapes(repo_id: str, filename: str) -> dict[str, list[int]]:
        with safe_open(download(repo_id, filename), framework="pt") as f:
            return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}

    with mock.patch.object(L, "hf_hub_download", download), \
            mock.patch.object(L, "get_safetensors_tensor_shapes", shapes):
        yield L


def sae_lens_load(case: Case) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """What sae-lens's loader for the family returns (cfg after config defaulting, state dict)."""
    with sae_lens_hub(case) as L:
        overrides = {"device": "cpu", "dtype": "float32", **case.overrides}  # as from_pretrained passes them
        cfg, sd, _ = getattr(L, case.loader)(repo_id=case.repo_id, folder_name=case.folder_name, device="cpu",
                                             force_download=False, cfg_overrides=overrides)
        return L.handle_config_defaulting(cfg), sd


def reference(case: Case):
    """sae-lens's SAE for ``case``, built from its loader's output as ``SAE.from_pretrained`` builds it."""
    from sae_lens import SAE as SaeLensSAE

    cfg, sd = sae_lens_load(case)
    sae = SaeLensSAE.from_dict(cfg)
    sae.process_state_dict_for_loading(sd)
    sae.load_state_dict(sd)
    if cfg.get("normalize_activations") == "expected_average_only_in" and case.fold is not None:
        sae.fold_activation_norm_scaling_factor(case.fold)
    return sae.eval(), cfg


def compare(case: Case, n: int = 256, seed: int = 1) -> dict[str, Any]:
    """Load ``case`` in sae-lens and saesteer; max |differences| of encode and decode on random inputs."""
    import warnings

    from saesteer.sae import load_sae

    sl, cfg = reference(case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = load_sae(case.local, **case.load_kw)
    x = torch.randn(n, ours.d_in, generator=torch.Generator().manual_seed(seed)) * case.x_scale
    with torch.no_grad():
        f_sl = sl.encode(x)
        xh_sl = sl(x)  # decode(encode(x)), a skip transcoder's skip connection included
        f, xh = ours.encode(x), ours(x)
    return {
        "family": case.family, "layout": case.layout, "encode": float((f - f_sl).abs().max()),
        "decode": float((xh - xh_sl).abs().max()), "active": float((f_sl != 0).float().mean()),
        "hook_sae_lens": sl.cfg.metadata.hook_name, "hook": ours.cfg.hook_name,
        "norm_sae_lens": sl.cfg.normalize_activations, "norm": ours.cfg.normalize, "ours": ours, "sae_lens": sl,
        "f": f, "f_sl": f_sl, "xh": xh, "xh_sl": xh_sl, "cfg": cfg,
    }
