"""Read SAEs from the common file formats, write them as SAELens folders.

``load_sae(path_or_id)`` finds the format from the files (or takes ``format=``), hands the folder to
that format's reader and returns a :class:`~saesteer.sae.module.SAE` in eval mode. Readers never run
code from a file: tensors come from safetensors, ``numpy.load(..., allow_pickle=False)`` or
``torch.load(..., weights_only=True)``; a pickle file is refused before it is opened.

The registry is thin: a reader is a module with ``NAME``, ``detect(folder) -> bool`` (cheap: file
names and at most a json or a safetensors header) and ``load(path, hookpoint=...) -> SAE``
(reads the tensors once, builds an fp32 SAE on the CPU). The shared helpers below are what the
readers use to read files safely and to build the SAE.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from saesteer.errors import SAEFormatError
from saesteer.sae.module import SAE, SAEConfig

#: format name -> reader module (imported on first use)
READERS: dict[str, str] = {
    "saelens": "saesteer.sae.formats.saelens",
    "sparsify": "saesteer.sae.formats.sparsify",
    "gemmascope": "saesteer.sae.formats.gemmascope",
    "dictionary_learning": "saesteer.sae.formats.dictionary_learning",
    "sarm": "saesteer.sae.formats.sarm",
    "llamascope": "saesteer.sae.formats.llamascope",
    "llamascope_r1": "saesteer.sae.formats.llamascope_r1",
    "gemmascope2": "saesteer.sae.formats.gemmascope2",
    "qwenscope": "saesteer.sae.formats.qwenscope",
    "deepseek_r1": "saesteer.sae.formats.deepseek_r1",
    "goodfire": "saesteer.sae.formats.goodfire",
}
_ALIASES = {
    "sae_lens": "saelens", "sae-lens": "saelens", "gemma_scope": "gemmascope", "gemma-scope": "gemmascope",
    "eai-sparsify": "sparsify", "eleuther": "sparsify", "dictionary-learning": "dictionary_learning",
    "dictlearn": "dictionary_learning",
    # sae-lens's conversion_func names, and spellings of the family names
    "gemma_2": "gemmascope", "dictionary_learning_1": "dictionary_learning", "llama_scope": "llamascope",
    "llama-scope": "llamascope", "llama_scope_r1_distill": "llamascope_r1", "gemma_3": "gemmascope2",
    "gemma_scope_2": "gemmascope2", "gemma-scope-2": "gemmascope2", "qwen_scope": "qwenscope",
    "qwen-scope": "qwenscope", "deepseek": "deepseek_r1", "deepseek-r1": "deepseek_r1",
}
#: file suffixes that can only be read by unpickling (running code from the file)
PICKLE_SUFFIXES = (".pkl", ".pickle")


# ---------------------------------------------------------------------------------------- helpers
def refuse_pickle(path: Path) -> None:
    """Raise if ``path`` is a pickle file: unpickling can run arbitrary code, so it is never read."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise SAEFormatError(
            f"{path} is a pickle file; unpickling can execute code from the file, so saesteer refuses "
            "to read it (unsafe). Convert it to safetensors (or a torch state dict of plain tensors)."
        )


def read_json(path: Path) -> dict[str, Any]:
    """Parse a json file into a dict (SAEFormatError if it is not one)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise SAEFormatError(f"cannot read json {path}: {e}") from e
    if not isinstance(data, dict):
        raise SAEFormatError(f"{path} does not hold a json object")
    return data


def safetensors_keys(path: Path) -> list[str]:
    """Tensor names in a safetensors file (reads the header only)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return list(f.keys())
    except Exception as e:  # noqa: BLE001 - any parse failure is a format error
        raise SAEFormatError(f"cannot read safetensors header of {path}: {e}") from e


def read_safetensors(path: Path, keys: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Load tensors from a safetensors file (all, or only ``keys``: a huge shard is not read whole)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            names = list(f.keys()) if keys is None else keys
            return {k: f.get_tensor(k) for k in names}
    except SAEFormatError:
        raise
    except Exception as e:  # noqa: BLE001
        raise SAEFormatError(f"cannot read safetensors file {path}: {e}") from e


def read_npz(path: Path) -> dict[str, torch.Tensor]:
    """Load an ``.npz`` archive without pickle (object arrays are refused as unsafe)."""
    try:
        with np.load(str(path), allow_pickle=False) as data:
            out = {}
            for k in data.files:
                a = np.array(data[k])
                if a.dtype.kind not in "biuf":
                    raise SAEFormatError(f"{path}: member {k!r} is not a numeric array (dtype {a.dtype})")
                out[k] = torch.from_numpy(a)
            return out
    except SAEFormatError:
        raise
    except (ValueError, TypeError) as e:
        raise SAEFormatError(
            f"{path} needs pickle to load (object arrays); refusing to read it (unsafe): {e}"
        ) from e
    except OSError as e:
        raise SAEFormatError(f"cannot read npz file {path}: {e}") from e


def torch_load_weights(path: Path) -> Any:
    """``torch.load(path, weights_only=True)``: plain tensors and containers only, never code."""
    refuse_pickle(path)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError, RuntimeError, ...
        raise SAEFormatError(
            f"{path} cannot be read as plain tensors with torch.load(weights_only=True); it needs pickle "
            f"code execution (e.g. a whole pickled module), which saesteer refuses as unsafe. "
            f"Save a state dict of tensors instead. ({type(e).__name__}: {str(e)[:200]})"
        ) from e


def build_sae(cfg: SAEConfig, tensors: dict[str, torch.Tensor]) -> SAE:
    """An fp32 CPU SAE with ``tensors`` (internal names: W_enc [d,F], W_dec [F,d], b_enc, b_dec,
    threshold, b_gate, b_mag, r_mag) copied in; missing biases stay zero.

    Checked BEFORE anything is allocated from what the config claims: every tensor's shape against
    the shapes ``cfg`` implies (read from an SAE built on the meta device, which allocates nothing),
    so a 200-byte config claiming ``d_sae: 4000000`` costs nothing. Then every value must be finite:
    NaN or inf in a weight is refused, naming the tensor and the first bad index."""
    for need in ("W_enc", "W_dec"):
        if need not in tensors:
            raise SAEFormatError(f"internal: no {need} given for the SAE")
    with torch.device("meta"):
        shapes = {n: tuple(p.shape) for n, p in SAE(cfg).named_parameters()}
    ready: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if name not in shapes:
            raise SAEFormatError(f"internal: SAE ({cfg.architecture}) has no parameter {name!r}")
        t = torch.as_tensor(t)
        want = shapes[name]
        if t.ndim == 0 and name == "threshold":
            t = t.expand(want)
        if tuple(t.shape) != want:
            raise SAEFormatError(
                f"tensor {name!r} has shape {tuple(t.shape)}, expected {want} "
                f"for d_in={cfg.d_in}, d_sae={cfg.d_sae}"
            )
        if not t.is_floating_point() and t.dtype != torch.bool:
            t = t.to(torch.float32)
        bad = ~torch.isfinite(t)
        if bad.any():
            first = tuple(int(i) for i in bad.nonzero()[0])
            raise SAEFormatError(f"tensor {name!r} holds {int(bad.sum())} non-finite values (NaN or inf), the "
                                 f"first at index {first}: {float(t[first])}; refusing an SAE that would "
                                 "give NaN outputs")
        ready[name] = t
    sae = SAE(cfg)
    params = dict(sae.named_parameters())
    with torch.no_grad():
        for name, t in ready.items():
            params[name].copy_(t.to(torch.float32))
    return sae


# ---------------------------------------------------------------------------------------- registry
def _reader(name: str) -> ModuleType:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in READERS:
        raise SAEFormatError(f"unknown SAE format {name!r}; known formats: {', '.join(READERS)}")
    return importlib.import_module(READERS[key])


def _detect_here(folder: Path) -> str | None:
    for name in READERS:
        if _reader(name).detect(folder):
            return name
    return None


def _describe(folder: Path) -> str:
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    except OSError:
        return "(unreadable)"
    shown = ", ".join(names[:20]) + (f", ... ({len(names)} entries)" if len(names) > 20 else "")
    return shown or "(empty)"


def looked_for() -> str:
    """Every format :func:`detect_format` looks for, with the files that make it (for error messages)."""
    return "; ".join(f"{name} ({getattr(_reader(name), 'LAYOUT', '?')})" for name in READERS)


def _detect_file(p: Path) -> str | None:
    suffix = p.suffix.lower()
    if p.name == "sae_weights.safetensors":  # SAELens (cfg.json) or Llama Scope R1-Distill (config.json)
        return "llamascope_r1" if _reader("llamascope_r1").detect(p.parent) else "saelens"
    if p.name == "sae.safetensors":
        return "sparsify"
    if p.name == "final.safetensors" and p.parent.name == "checkpoints":  # Llama Scope
        return "llamascope" if _reader("llamascope").detect(p.parent.parent) else None
    if suffix == ".npz":
        return "gemmascope"
    if suffix in (".pt", ".pth"):
        from saesteer.sae.formats import torchfile

        return torchfile.family(p)
    if suffix == ".safetensors":
        if _reader("sarm").detect(p):
            return "sarm"
        if _reader("gemmascope2").is_params_file(p, safetensors_keys(p)):
            return "gemmascope2"
    return None


def detect_format(path: str | os.PathLike, *, hookpoint: str | None = None) -> str:
    """Name of the format of the SAE at ``path`` (a folder, or one weights file).

    Looks at file names and, where needed, a json, a safetensors header or the strings of a torch
    file's pickle (read without unpickling); never loads tensors. Returns a name of :data:`READERS`.
    A folder that only holds SAEs in sub-folders is reported with their names (pass ``subfolder=``
    or ``hookpoint=``); a sparsify parent folder is returned as ``sparsify`` (its reader picks the
    hookpoint).
    """
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise SAEFormatError(f"no such file or folder: {p}")
    if p.is_file():
        refuse_pickle(p)
        found = _detect_file(p)
        if found:
            return found
        raise SAEFormatError(
            f"cannot tell the SAE format of the file {p}; looked for: {looked_for()} "
            "(pass the folder holding it, or format=...)"
        )
    if hookpoint and (p / hookpoint).is_dir():
        found = _detect_here(p / hookpoint)
        if found:
            return found
    found = _detect_here(p)
    if found:
        return found
    children = sorted(c for c in p.iterdir() if c.is_dir() and not c.name.startswith("."))
    child_formats = {c.name: f for c in children if (f := _detect_here(c))}
    if child_formats:
        formats = set(child_formats.values())
        if formats == {"sparsify"}:
            return "sparsify"
        raise SAEFormatError(
            f"{p} holds no SAE itself but its sub-folders do: "
            + ", ".join(f"{n} ({f})" for n, f in child_formats.items())
            + "; pass subfolder= (or hookpoint=) to pick one"
        )
    pickles = [c.name for c in p.iterdir() if c.suffix.lower() in PICKLE_SUFFIXES]
    if pickles:
        raise SAEFormatError(
            f"{p} only holds pickle files ({', '.join(pickles)}); unpickling can execute code, so "
            "saesteer refuses to read them (unsafe)"
        )
    raise SAEFormatError(f"cannot recognise an SAE in {p}; found: {_describe(p)}. Looked for: {looked_for()}")


def _looks_local(s: str) -> bool:
    """True for strings that can only be local paths (absolute, relative, home, drive letter)."""
    return s.startswith(("/", ".", "~", "\\")) or (len(s) > 1 and s[1] == ":")


def load_sae(
    path_or_id: str | os.PathLike,
    sae_id: str | None = None,
    *,
    hookpoint: str | None = None,
    subfolder: str | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    format: str | None = None,  # noqa: A002 - the public keyword the docs use
    k: int | None = None,
) -> SAE:
    """Load an SAE from a local folder/file or a HuggingFace hub id, in eval mode.

    ``path_or_id``: a folder (or weights file) in any known format, or, when it is not an existing
    local path, a hub id (``owner/repo``, ``owner/repo/sub/folder``) or a SAELens release name with
    ``sae_id`` (``load_sae("gemma-scope-2b-pt-res-canonical", "layer_12/width_16k/canonical")``, or
    ``"release/sae_id"`` as one string; see :mod:`saesteer.sae.formats.releases`). ``sae_id`` is the
    same as ``subfolder=`` for paths and hub repos. ``subfolder`` is joined to the path;
    ``hookpoint`` picks one SAE of a folder holding several (sparsify layout). ``dtype`` defaults to
    float32 whatever the file stores. ``k``: the TopK k of a file that does not record it (a Qwen
    Scope ``layer<n>.sae.pt`` outside a folder named like its repo). Cost: reads the weights once (for
    sharded reward-model checkpoints, only the SAE tensors); a hub id may download the files first.
    """
    extra: dict[str, Any] = {}
    if sae_id is not None:
        if subfolder is not None:
            raise SAEFormatError("give the SAE id once: as the second argument or as subfolder=")
        subfolder = sae_id
    s = os.fspath(path_or_id)
    p = Path(s).expanduser()
    if not p.exists():
        if isinstance(path_or_id, os.PathLike) or _looks_local(str(s)):
            raise SAEFormatError(f"no such file or folder: {p}")
        from saesteer.sae.formats import hub

        target = hub.resolve(str(s), subfolder=subfolder, hookpoint=hookpoint)
        p, extra, subfolder = target.path, target.extra, None
    if subfolder:
        p = p / subfolder
        if not p.exists():
            raise SAEFormatError(f"no such sub-folder: {p}")
    name = format or detect_format(p, hookpoint=hookpoint)
    reader = _reader(name)
    if hookpoint and p.is_dir() and (p / hookpoint).is_dir() and reader.NAME != "sparsify":
        p = p / hookpoint
    opts: dict[str, Any] = {}
    if k is not None:
        import inspect

        if "k" not in inspect.signature(reader.load).parameters:
            raise SAEFormatError(f"k= is only for SAE files that do not record their TopK k (Qwen Scope); {p} is "
                                 f"a {reader.NAME} SAE")
        opts["k"] = k
    try:
        sae = reader.load(p, hookpoint=hookpoint, **opts)
    except SAEFormatError:
        raise
    except (KeyError, ValueError, TypeError, AttributeError, IndexError) as e:  # a reader that missed a case
        raise SAEFormatError(f"{p}: malformed {reader.NAME} SAE ({type(e).__name__}: {e})") from e
    _apply_extra(sae, extra)
    if sae.cfg.metadata.get("input_scale_unknown"):
        import warnings

        warnings.warn(f"{p}: this SAE reads activations multiplied by a dataset-wide norm scaling factor that its "
                      "files do not hold (sae-lens keeps it in its release list); it is left unscaled. Load it by "
                      "its SAELens release name to fold the factor in, or call sae.fold_input_scale(s)", stacklevel=2)
    from saesteer.labels import FeatureLabels

    from saesteer.explain import store as explanations

    folder = p if p.is_dir() else p.parent
    sae.labels = explanations.apply(FeatureLabels.find(folder), folder)
    sae = sae.to(device=device, dtype=dtype or torch.float32)
    return sae.eval()


def _apply_extra(sae: SAE, extra: dict[str, Any]) -> None:
    """Apply what a hub directory (sae-lens' pretrained list) knows beyond the files."""
    if not extra:
        return
    md = sae.cfg.metadata
    scale = extra.get("norm_scaling_factor")
    if scale is not None and md.get("normalize_activations") == "expected_average_only_in":
        if "folded_input_scale" not in md:
            sae.fold_input_scale(float(scale))
            md.pop("input_scale_unknown", None)
    for key in ("model_name", "hook_name"):
        if extra.get(key) and not getattr(sae.cfg, key):
            setattr(sae.cfg, key, extra[key])
    md.update({k: v for k, v in extra.items() if k not in ("norm_scaling_factor", "model_name", "hook_name")})


def save_sae(sae: SAE, folder: str | os.PathLike) -> Path:
    """Write ``sae`` as a SAELens v6 folder (``cfg.json`` + ``sae_weights.safetensors``) that
    ``sae_lens.SAE.load_from_disk`` loads; returns the folder. Cost: one copy of the weights."""
    from saesteer.sae.formats import saelens

    return saelens.save(sae, Path(os.fspath(folder)))


__all__ = [
    "READERS", "load_sae", "save_sae", "detect_format",
    "build_sae", "read_json", "read_safetensors", "read_npz", "torch_load_weights", "refuse_pickle",
    "safetensors_keys",
]
