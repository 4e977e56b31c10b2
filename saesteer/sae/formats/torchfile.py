"""Which reader a torch file (``.pt`` / ``.pth``) belongs to.

Several families ship plain ``torch.save`` state dicts, so the suffix says nothing; the file name and
the keys do:

- ``layer{n}.sae.pt``, or (once loaded) exactly the keys ``W_enc``, ``W_dec``, ``b_enc``, ``b_dec``:
  Qwen Scope;
- ``encoder_linear.*`` / ``decoder_linear.*``: Goodfire;
- ``encoder.weight``, ``encoder.bias``, ``decoder.weight``, ``decoder.bias`` (some of them) and no
  key of another dictionary_learning class, in a file named like the DeepSeek R1 release
  (``...-SAE-l19.pt``, or ``deepseek`` in the name) that is not ``ae.pt`` and has no
  dictionary_learning ``config.json`` beside it: the DeepSeek R1 SAEs (the
  same keys and the same math as dictionary_learning's ``AutoEncoderNew``, which keeps every other
  such file);
- a SARM TopkSAE (``pre_bias``, ``latent_bias``, ...): SARM;
- anything else: dictionary_learning.

:func:`family` decides from the name and from the strings of the file's pickle (the ``data.pkl`` of
the zip files ``torch.save`` writes, or the leading pickles of the legacy format), read with
:mod:`pickletools` (opcodes are listed, nothing is constructed or run, no tensor data is read). :func:`family_of_state_dict` decides from the keys of a state dict
already loaded with ``torch.load(weights_only=True)``, so a renamed file still reaches its reader.
"""

from __future__ import annotations

import io
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Any

from saesteer.errors import SAEFormatError

SUFFIXES = (".pt", ".pth")
QWEN_FILE = re.compile(r"^layer(\d+)\.sae\.pt$")
QWEN_KEYS = frozenset({"W_enc", "W_dec", "b_enc", "b_dec"})
GOODFIRE_KEYS = frozenset({"encoder_linear.weight", "encoder_linear.bias", "decoder_linear.weight",
                           "decoder_linear.bias"})
LINEAR_KEYS = frozenset({"encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"})
#: keys of the other dictionary_learning classes: a file holding any of them is not a DeepSeek SAE
_DL_ONLY = frozenset({"bias", "b_dec", "k", "threshold", "decoder_bias", "r_mag", "gate_bias", "mag_bias",
                      "group_sizes", "W_enc", "W_dec"})
_DEEPSEEK_NAME = re.compile(r"(?i)deepseek|-SAE-l\d+\.pth?$")
_MAX_PICKLE = 64 << 20


def pickle_strings(path: Path) -> set[str] | None:
    """Every string in the pickle of a torch file (its keys among them), read with ``pickletools``
    without building any object; ``None`` when the file cannot be parsed this way. Cost: the pickle
    part only (a few KB for a state dict), never the tensor data."""
    out: set[str] = set()
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                members = [i for i in z.infolist() if i.filename.endswith("data.pkl")]
                if not members or members[0].file_size > _MAX_PICKLE:
                    return None
                streams = [io.BytesIO(z.read(members[0]))]
            n = 1
        else:  # legacy format: magic number, protocol, sys info, then the object, each its own pickle
            streams = [open(path, "rb")]  # noqa: SIM115 - closed below
            n = 4
        try:
            for _ in range(n):
                for _op, arg, _pos in pickletools.genops(streams[0]):
                    if isinstance(arg, str):
                        out.add(arg)
        finally:
            streams[0].close()
    except Exception:  # noqa: BLE001 - anything unparsable: undecided, the reader's torch.load decides
        return out or None
    return out


def is_deepseek_name(path: Path) -> bool:
    return path.name != "ae.pt" and bool(_DEEPSEEK_NAME.search(path.name)) and not _dl_config(path.parent)


def _dl_config(folder: Path) -> bool:
    cfg = folder / "config.json"
    if not cfg.is_file():
        return False
    try:
        return '"trainer"' in cfg.read_text()[:100_000]
    except OSError:
        return False


def _family(keys: set[str], path: Path, exact: bool) -> str:
    from saesteer.sae.formats import sarm

    if sarm.find_prefix(sorted(keys)):
        return "sarm"
    if GOODFIRE_KEYS & keys:
        return "goodfire"
    if QWEN_FILE.match(path.name) or (exact and keys == QWEN_KEYS):
        return "qwenscope"
    if LINEAR_KEYS & keys and not (_DL_ONLY & keys) and is_deepseek_name(path):  # (its reader names a missing key)
        return "deepseek_r1"
    return "dictionary_learning"


def family(path: Path) -> str:
    """The reader for the torch file ``path``, from its name and its pickle's strings (see module doc)."""
    if QWEN_FILE.match(path.name):
        return "qwenscope"
    strings = pickle_strings(path)
    if strings is None:  # undecided from the contents: the name alone
        from saesteer.sae.formats.goodfire import KNOWN

        if path.name in KNOWN:
            return "goodfire"
        return "deepseek_r1" if is_deepseek_name(path) else "dictionary_learning"
    return _family(strings, path, exact=False)


def family_of_state_dict(sd: dict[str, Any], path: Path) -> str:
    """The reader for a state dict already loaded from ``path`` (exact keys known)."""
    return _family(set(sd), path, exact=True)


def candidates(folder: Path, name: str, limit: int = 8) -> list[Path]:
    """The torch files directly in ``folder`` (at most ``limit`` looked at) that :func:`family` gives
    to the reader ``name``."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())[:limit]
    return [p for p in files if family(p) == name]


def pick(folder: Path, name: str, what: str, hookpoint: str | None) -> Path:
    """The one torch file of ``folder`` for reader ``name`` (``hookpoint`` may name it)."""
    if hookpoint and (folder / hookpoint).is_file():
        return folder / hookpoint
    found = candidates(folder, name)
    if not found:
        raise SAEFormatError(f"no {what} file in {folder}")
    if len(found) > 1:
        raise SAEFormatError(f"{folder} holds several {what} files: {', '.join(p.name for p in found)}; pass "
                             "the file's path (or hookpoint=<file name>)")
    return found[0]


def state_dict(file: Path) -> dict[str, Any]:
    """The state dict of tensors in ``file``, read with ``torch.load(weights_only=True)`` (a
    ``{"state_dict": ...}`` wrapper is unwrapped); SAEFormatError if it is anything else."""
    import torch

    from saesteer.sae.formats import torch_load_weights

    sd = torch_load_weights(file)
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise SAEFormatError(f"{file} is not a state dict of tensors")
    return sd
