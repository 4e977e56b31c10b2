"""DeepSeek R1 SAEs (``qresearch/DeepSeek-R1-Distill-Llama-8B-SAE-l19``): a ReLU SAE in one torch file.

Facts checked against sae-lens 6.54 (``get_deepseek_r1_config_from_hf``,
``deepseek_r1_sae_huggingface_loader``):

- the file (``DeepSeek-R1-Distill-Llama-8B-SAE-l19.pt``) is a torch dict of ``encoder.weight [F,d]``,
  ``encoder.bias [F]``, ``decoder.weight [d,F]``, ``decoder.bias [d]``; sae-lens transposes both
  weights (``W_enc = encoder.weight.T``, ``W_dec = decoder.weight.T``);
- architecture ``standard`` (``relu(x @ W_enc + b_enc)``, decode ``f @ W_dec + b_dec``),
  ``apply_b_dec_to_input`` False, no normalisation; sae-lens's config claims d_in 4096 and d_sae
  65536 (LLaMA-8B, expansion 16): saesteer takes the widths from the tensors;
- hook ``blocks.{L}.hook_resid_post`` with ``L`` the first ``l(\\d+)`` in the file name (sae-lens's
  own ``re.search(r"l(\\d+)", folder_name)``), model ``deepseek-ai/DeepSeek-R1-Distill-Llama-8B``.

The keys are those of dictionary_learning's ``AutoEncoderNew`` (same math); which reader a file gets
is decided by its name (see :mod:`saesteer.sae.formats.torchfile`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from saesteer.sae.formats import build_sae, torchfile
from saesteer.sae.formats.fields import linear_pair
from saesteer.sae.module import SAE, SAEConfig

NAME = "deepseek_r1"
LAYOUT = "<...>-SAE-l<L>.pt with encoder.weight/bias + decoder.weight/bias"
MODEL = "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"


def detect(folder: Path) -> bool:
    """A folder holding a torch file named like the release with the four linear keys (pickle strings only)."""
    return bool(torchfile.candidates(folder, NAME))


def load(path: Path, *, hookpoint: str | None = None) -> SAE:
    """Read the DeepSeek R1 SAE torch file (the file, or the folder holding it)."""
    file = path if path.is_file() else torchfile.pick(path, NAME, "DeepSeek R1 SAE", hookpoint)
    return from_state_dict(torchfile.state_dict(file), file)


def from_state_dict(sd: dict[str, Any], file: Path) -> SAE:
    t = linear_pair(sd, file, "encoder.weight", "decoder.weight", "encoder.bias", "decoder.bias")
    F, d = t["W_enc"].shape[1], t["W_enc"].shape[0]
    m = re.search(r"l(\d+)", file.name)
    meta: dict[str, Any] = {"file": file.name}
    cfg = SAEConfig(
        d_in=d, d_sae=F, architecture="relu", apply_b_dec_to_input=False, source_architecture="standard",
        source_format=NAME, hook_name=f"blocks.{int(m.group(1))}.hook_resid_post" if m else None,
        model_name=MODEL if "deepseek-r1-distill-llama-8b" in file.name.lower() else None, metadata=meta,
    )
    return build_sae(cfg, t)
