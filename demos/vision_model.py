"""The Vision tab's model side, with no Gradio: the shipped tiny LLaVA with its vision SAE, labels and
gallery (loaded once, on first use), the label search, and the two answers and the pictures one request
asks for. See :mod:`saesteer.demos.vision_tab` for the page.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saesteer.demos.vision_images import gallery_activations, gallery_key, heat_overlay, model_view, open_gallery_image

#: new tokens per answer (the model answers in one word; what ``saesteer.embedded.vlm.answer`` uses)
ANSWER_TOKENS = 4
#: images in the feature's top-images strip
TOP_IMAGES = 6


def missing_vision_files(folder: str | Path | None = None) -> str | None:
    """What the tab lacks in ``folder`` (default: the shipped tiny LLaVA), or None when all is there."""
    from saesteer.embedded.vlm import tiny_llava_path

    path = Path(folder) if folder is not None else tiny_llava_path(must_exist=False)
    need = ["config.json", "tower.safetensors", "projector.safetensors", "labels.json", "sae",
            "gallery/gallery.json"]
    gone = [n for n in need if not (path / n).exists()]
    return f"{path} lacks {', '.join(gone)} (rebuild with `python scripts/build_vlm.py`)" if gone else None


def search_features(labels: dict[int, dict], query: Any, top: int = 20) -> list[list[Any]]:
    """Table rows ``[feature, label, purity, top images, MS, max activation, names]`` of the live features
    (max activation > 0) whose label is ``query``, contains it, or whose top images' names contain it; a
    number finds that feature; an empty query lists the clearest features. ``top images`` is how many of
    the feature's top training images are of its label, of how many fire. Best first: exact label, then
    that count, then purity, then MS. Cost: one pass over the labels (a few thousand records)."""
    q = str(query or "").strip().lower()
    if q.isdigit():
        recs = [labels[int(q)]] if int(q) in labels else []
    else:
        found = []
        for r in labels.values():
            label = str(r.get("label") or "").lower()
            names = [str(n).lower() for n in r.get("names") or []]
            match = 2 if label == q else 1 if q and (q in label or any(q in n for n in names)) else 0 if not q else -1
            if match >= 0 and (r.get("max_activation") or 0) > 0:
                found.append((match, _agree(r), r))
        found.sort(key=lambda t: (-t[0], -t[1], -(t[2].get("purity") or 0), -(t[2].get("ms") or 0),
                                  -(t[2].get("max_activation") or 0)))
        recs = [r for _, _, r in found]
    return [[int(r["feature"]), r.get("label") or "", r.get("purity"),
             f"{_agree(r)} of {sum((r.get('votes') or {}).values())}", r.get("ms"), r.get("max_activation"),
             ", ".join(str(n) for n in (r.get("names") or [])[:5])] for r in recs[:top]]


def _agree(rec: dict) -> int:
    """How many of the feature's top training images are of its label."""
    return int((rec.get("votes") or {}).get(rec.get("label") or "", 0))


#: the clamp factor (x the feature's training max) for features the build's steering screen did not keep
DEFAULT_FACTOR = 2.0


def steering_factors(folder: str | Path) -> dict[int, float]:
    """``{feature: factor}`` for the features the build kept as steering toward their label, each with the
    factor (x its training max) it was screened at (``steering.json``; empty when the file is absent)."""
    path = Path(folder) / "steering.json"
    if not path.is_file():
        return {}
    import json

    return {int(r["feature"]): float(r["alpha"]) for r in json.loads(path.read_text()).get("features", [])
            if "alpha" in r}


def default_clamp(labels: dict[int, dict], feature: int, factors: dict[int, float] | None = None) -> float:
    """The clamp value the tab starts from: the feature's largest activation on the training images times
    its screened factor (``factors``, from :func:`steering_factors`), else ``DEFAULT_FACTOR``."""
    rec = labels.get(int(feature)) or {}
    factor = (factors or {}).get(int(feature), DEFAULT_FACTOR)
    return round(factor * float(rec.get("max_activation") or 0.0), 4)


@dataclass
class LoadedVision:
    """The steered tiny LLaVA with its processor, feature labels and gallery. ``lock`` serialises its
    model calls (reading activations adds a temporary hook to the shared tower)."""

    steered: Any
    proc: Any
    labels: dict[int, dict]
    gallery: list[dict]
    key: tuple[str, str]
    factors: dict[int, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def d_sae(self) -> int:
        return int(self.steered.sae.d_sae)


class VisionModels:
    """The tab's model, loaded from ``folder`` (default: the shipped tiny LLaVA) on first use and kept."""

    def __init__(self, folder: str | Path | None = None, dtype: str = "bfloat16") -> None:
        from saesteer.demos.models import DTYPES
        from saesteer.embedded.vlm import tiny_llava_gallery, tiny_llava_path

        self.folder = Path(folder) if folder is not None else tiny_llava_path(must_exist=False)
        self.dtype = DTYPES[dtype]
        self.gallery = tiny_llava_gallery(self.folder)  # the page shows it before the model loads
        self._loaded: LoadedVision | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the model is loaded already (the next request does not wait for it)."""
        return self._loaded is not None

    def get(self) -> LoadedVision:
        """The loaded model (about 5 s the first time: SmolLM2 plus ~8 MB of tower, projector and SAE)."""
        from saesteer.embedded.vlm import load_tiny_llava_steered, tiny_llava_labels

        with self._lock:
            if self._loaded is None:
                steered, proc = load_tiny_llava_steered(dtype=self.dtype, folder=self.folder)
                self._loaded = LoadedVision(steered, proc, tiny_llava_labels(self.folder), self.gallery,
                                            gallery_key(self.folder, self.dtype), steering_factors(self.folder))
            return self._loaded


def answer_pair(v: LoadedVision, image: Any, feature: int, value: float,
                max_new_tokens: int = ANSWER_TOKENS) -> tuple[str, str]:
    """``(unsteered, steered)`` answers to ``QUESTION`` about ``image``: one batched greedy ``generate``
    of the same image twice, the second row with ``feature`` clamped to ``value`` at saesteer's default
    positions (every token of the tower's layer: the patches and CLS). Cost: a tower forward and ``max_new_tokens``
    language-model steps for a batch of two."""
    import saesteer

    inputs = v.proc([image, image])
    with v.lock:
        out = v.steered.generate(**inputs, edits=[None, [saesteer.Clamp(feature, value)]],
                                 max_new_tokens=max_new_tokens, do_sample=False)
    plain, steered = v.proc.decode(out, inputs)
    return plain, steered


def feature_pictures(v: LoadedVision, image: Any, feature: int) -> tuple[list, Any, str, int]:
    """``(strip, heat map, its caption, n)``: the feature's top gallery images with their activations,
    its activation over ``image``'s patches drawn on the image, and on how many gallery images it fires.
    Cost: the tower up to the SAE's layer for one image (plus, once per process, for the whole gallery)."""
    from saesteer.metrics import patch_activation_map, top_images

    with v.lock:
        acts = gallery_activations(v.steered, v.proc, v.gallery, v.key)
        amap = patch_activation_map(v.steered, v.proc.pixel_values([image]), feature)[0]
    strip = []
    for i, val in top_images(acts, [feature], k=TOP_IMAGES).of(feature):
        row = v.gallery[i]
        strip.append((open_gallery_image(row), f"{val:.2f} | {row['kind']}: {row['name']}"
                      + (" (held out)" if row.get("split") == "heldout" else "")))
    train_max = float((v.labels.get(feature) or {}).get("max_activation") or 0.0)
    here = float(amap.max())
    scale = max(train_max, here, 1e-6)
    grid = "x".join(str(n) for n in amap.shape)
    caption = (f"feature {feature} over this image's {grid} patches: max {here:.2f} here (colour scale 0 to "
               f"{scale:.2f}" + (", its largest activation on the training images)" if scale == train_max else ")"))
    return strip, heat_overlay(model_view(v.proc, image), amap, scale), caption, int((acts[:, feature] > 0).sum())
