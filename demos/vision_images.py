"""The Vision tab's pictures: images from the gallery or an upload, as the model sees them; a feature's
activation over an image's patches drawn as a heat map on the image; and every gallery image's
activation of every feature, read once per process and kept.

Numpy and PIL only (no plotting library): the heat map is the image in grey with each patch tinted
from dark red to yellow by the feature's activation there, on the patch grid the tower reads.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from saesteer.demos.limits import DemoInputError

#: an upload larger than this (in pixels) is refused before it is converted (the model sees 224 px)
MAX_UPLOAD_PIXELS = 4096 * 4096
#: the heat map's colours from no activation to the scale's top: dark red, red, orange, yellow
_HEAT = np.array([[90, 0, 0], [200, 20, 0], [255, 130, 0], [255, 235, 60]], dtype=np.float32)

_gallery_cache: dict[tuple, torch.Tensor] = {}
_gallery_lock = threading.Lock()


def open_gallery_image(row: dict) -> Any:
    """The gallery image ``row`` names, decoded into memory (a PIL image, file closed)."""
    from PIL import Image

    with Image.open(row["path"]) as im:
        im.load()
        return im.copy()


def checked_upload(image: Any) -> Any:
    """An uploaded image (a PIL image or an ``H x W x C`` array) if the tab can take it; a
    :class:`DemoInputError` otherwise (nothing uploaded, too large, not 3 or 4 channels)."""
    if image is None:
        raise DemoInputError("pick an image from the gallery or upload one first")
    if hasattr(image, "size") and hasattr(image, "mode"):
        w, h = image.size
    else:
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
            raise DemoInputError(f"an image is H x W x 3 (RGB) or x 4 (RGBA); got shape {arr.shape}")
        h, w = arr.shape[:2]
    if w * h > MAX_UPLOAD_PIXELS:
        raise DemoInputError(f"the image has {w} x {h} pixels; this demo takes at most {MAX_UPLOAD_PIXELS:,} "
                             "(the model sees 224 x 224)")
    if w < 1 or h < 1:
        raise DemoInputError("the image is empty")
    return image


def model_view(proc: Any, image: Any) -> np.ndarray:
    """``[S, S, 3]`` uint8: the image as the model sees it (cut-outs on white, photos centre-cropped)."""
    from saesteer.embedded.vlm import image_tensor

    x = image_tensor(image, proc.image_size, proc.object_fraction)
    return (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def heat_colors(level: np.ndarray) -> np.ndarray:
    """``level`` in [0, 1] (any shape) -> RGB float colours ``[..., 3]`` along the heat scale."""
    pos = np.clip(level, 0.0, 1.0) * (len(_HEAT) - 1)
    lo = np.minimum(np.floor(pos).astype(int), len(_HEAT) - 2)
    frac = (pos - lo)[..., None]
    return _HEAT[lo] * (1 - frac) + _HEAT[lo + 1] * frac


def heat_overlay(view: np.ndarray, amap: torch.Tensor | np.ndarray, scale: float, zoom: int = 2) -> np.ndarray:
    """The image ``view [S, S, 3]`` uint8 in grey, each patch of the grid ``amap [rows, cols]`` tinted by
    its activation / ``scale`` (0: plain grey, ``scale`` or more: fully yellow), with the patch grid
    drawn faintly; enlarged ``zoom`` times (nearest neighbour: each patch stays a square).
    Returns ``[S * zoom, S * zoom, 3]`` uint8. Cost: a few array operations on the image."""
    amap = np.asarray(amap, dtype=np.float32)
    if amap.ndim != 2:
        raise DemoInputError(f"an activation map is a [rows, cols] grid; got shape {amap.shape}")
    if not (np.isfinite(scale) and scale > 0):
        raise DemoInputError(f"the heat map's scale must be a positive number, got {scale!r}")
    size = view.shape[0]
    rows, cols = amap.shape
    if view.shape[:2] != (size, size) or size % rows or size % cols:
        raise DemoInputError(f"a {rows} x {cols} patch grid does not tile a {view.shape[0]} x {view.shape[1]} image")
    level = np.clip(amap / scale, 0.0, 1.0)
    cell = np.kron(level, np.ones((size // rows, size // cols), dtype=np.float32))
    grey = view.astype(np.float32).mean(-1, keepdims=True) * np.ones(3, dtype=np.float32)
    alpha = np.where(cell > 0, 0.35 + 0.55 * cell, 0.0)[..., None]
    out = grey * (1 - alpha) + heat_colors(cell) * alpha
    out[:: size // rows] = out[:: size // rows] * 0.6 + 160 * 0.4       # the patch grid
    out[:, :: size // cols] = out[:, :: size // cols] * 0.6 + 160 * 0.4
    out = np.clip(out, 0, 255).round().astype(np.uint8)
    return np.repeat(np.repeat(out, zoom, axis=0), zoom, axis=1) if zoom > 1 else out


def gallery_activations(steered: Any, proc: Any, gallery: Sequence[dict], key: Any, batch: int = 16) -> torch.Tensor:
    """``[len(gallery), d_sae]``: each gallery image's largest activation of each feature over its
    patches (CLS token left out), read once per process for each ``key`` and kept (``key`` names the
    model: its folder and dtype). The caller serialises model calls (the read runs the tower with a
    temporary hook). Cost, first call: the tower up to the SAE's layer and an encode per image
    (about a second per hundred images on a laptop CPU); later calls: a dictionary look-up."""
    from saesteer.metrics.image_activations import image_activations

    with _gallery_lock:
        if key not in _gallery_cache:
            batches = (proc.pixel_values([open_gallery_image(r) for r in gallery[s:s + batch]])
                       for s in range(0, len(gallery), batch))
            _gallery_cache[key] = image_activations(steered, batches, positions="patches", reduce="max")
        return _gallery_cache[key]


def gallery_key(folder: Path, dtype: Any) -> tuple[str, str]:
    """The cache key of one loaded model: its folder (resolved) and dtype."""
    return str(Path(folder).resolve()), str(dtype)
