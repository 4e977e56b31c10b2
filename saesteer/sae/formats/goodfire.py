"""Goodfire SAEs (``Goodfire/Llama-3.1-8B-Instruct-SAE-l19``, ``Goodfire/Llama-3.3-70B-Instruct-SAE-l50``).

Facts checked against sae-lens 6.54 (``get_goodfire_config_from_hf``,
``get_goodfire_huggingface_loader``):

- the file is a torch dict of ``encoder_linear.weight [F,d]``, ``encoder_linear.bias [F]``,
  ``decoder_linear.weight [d,F]``, ``decoder_linear.bias [d]``; sae-lens transposes both weights;
- architecture ``standard``: ``relu(x @ W_enc + b_enc)``, decode ``f @ W_dec + b_dec``,
  ``apply_b_dec_to_input`` False, no normalisation;
- sae-lens knows two files and nothing else (table below): their widths, model and hook. saesteer
  takes the widths from the tensors (the table's are recorded in the metadata), the model and hook of
  a known file from the table, and for another file name the hook from a ``-SAE-l<L>`` in the name
  (``blocks.L.hook_resid_post``), if any.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from saesteer.sae.formats import build_sae, torchfile
from saesteer.sae.formats.fields import linear_pair
from saesteer.sae.module import SAE, SAEConfig

NAME = "goodfire"
LAYOUT = "a .pt/.pth with encoder_linear.* + decoder_linear.*"
#: sae-lens's get_goodfire_config_from_hf: file name -> (d_in, d_sae, model, hook)
KNOWN: dict[str, tuple[int, int, str, str]] = {
    "Llama-3.3-70B-Instruct-SAE-l50.pt":
        (8192, 65536, "meta-llama/Llama-3.3-70B-Instruct", "blocks.50.hook_resid_post"),
    "Llama-3.1-8B-Instruct-SAE-l19.pth":
        (4096, 65536, "meta-llama/Llama-3.1-8B-Instruct", "blocks.19.hook_resid_post"),
}


def detect(folder: Path) -> bool:
    """A folder holding a torch file with ``encoder_linear.*`` keys (pickle strings only)."""
    return bool(torchfile.candidates(folder, NAME))


def load(path: Path, *, hookpoint: str | None = None) -> SAE:
    """Read a Goodfire SAE torch file (the file, or the folder holding it)."""
    file = path if path.is_file() else torchfile.pick(path, NAME, "Goodfire SAE", hookpoint)
    return from_state_dict(torchfile.state_dict(file), file)


def from_state_dict(sd: dict[str, Any], file: Path) -> SAE:
    t = linear_pair(sd, file, "encoder_linear.weight", "decoder_linear.weight", "encoder_linear.bias",
                    "decoder_linear.bias")
    F, d = t["W_enc"].shape[1], t["W_enc"].shape[0]
    known = KNOWN.get(file.name)
    if known is not None:
        model, hook = known[2], known[3]
    else:
        m = re.search(r"-SAE-l(\d+)\.pth?$", file.name)
        model, hook = None, (f"blocks.{m.group(1)}.hook_resid_post" if m else None)
    cfg = SAEConfig(
        d_in=d, d_sae=F, architecture="relu", apply_b_dec_to_input=False, source_architecture="standard",
        source_format=NAME, hook_name=hook, model_name=model,
        metadata={"file": file.name, **({"table_widths": list(known[:2])} if known else {})},
    )
    return build_sae(cfg, t)
