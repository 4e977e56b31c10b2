"""Random views of an image for training (torch only: no torchvision), all ``[3, 224, 224]`` in [0, 1].

* ``heavy_view`` (tower distillation): a stamp is scaled (35-95 % of the canvas), maybe rotated
  (+-25 degrees), placed anywhere (slightly off-canvas allowed) on white, a random colour, a two-colour
  gradient or a random crop of a photo, sometimes with a second stamp; a photo gets a random resized crop
  (20-100 % of its area). Then a flip, colour jitter (brightness, contrast, saturation) and sometimes grey.
* ``mild_view`` (projector training): a stamp at 60-92 % of the canvas near the centre on white or a
  light colour, maybe a small rotation; a photo gets a 55-100 % crop; flip and light jitter.

Every view is a function of the image and a ``torch.Generator``, so a seed reproduces it.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from saesteer.embedded.vlm import image_tensor

SIZE = 224


def load_image(path: Path) -> torch.Tensor:
    """``[3|4, H, W]`` float in [0, 1] (4 channels when the PNG has transparency)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGBA" if im.mode in ("RGBA", "LA", "PA", "P") else "RGB"))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return F.interpolate(x[None], size=(max(1, h), max(1, w)), mode="bilinear", antialias=True,
                         align_corners=False)[0]


def _rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate a premultiplied RGBA image about its centre into a canvas big enough to hold it."""
    c, h, w = x.shape
    side = int(math.ceil(math.hypot(h, w)))
    pad = torch.zeros(c, side, side)
    top, left = (side - h) // 2, (side - w) // 2
    pad[:, top:top + h, left:left + w] = x
    a = math.radians(degrees)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]])[None]
    grid = F.affine_grid(theta, [1, c, side, side], align_corners=False)
    return F.grid_sample(pad[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


def _paste(canvas: torch.Tensor, rgba: torch.Tensor, top: int, left: int) -> None:
    """Alpha-composite a premultiplied ``rgba`` onto ``canvas`` (in place), clipped to the canvas."""
    _, h, w = rgba.shape
    t0, l0, t1, l1 = max(top, 0), max(left, 0), min(top + h, SIZE), min(left + w, SIZE)
    if t1 <= t0 or l1 <= l0:
        return
    patch = rgba[:, t0 - top:t1 - top, l0 - left:l1 - left]
    region = canvas[:, t0:t1, l0:l1]
    canvas[:, t0:t1, l0:l1] = patch[:3] + region * (1 - patch[3:])


def _stamp(x: torch.Tensor, g: torch.Generator, frac: tuple[float, float], max_deg: float, p_rot: float,
           centre_jitter: float) -> tuple[torch.Tensor, int, int]:
    """A stamp scaled, maybe rotated, premultiplied; with its top-left position on the canvas."""
    rgba = x if x.shape[0] == 4 else torch.cat([x, torch.ones_like(x[:1])])
    ys, xs = torch.nonzero(rgba[3] > 0.02, as_tuple=True)
    if len(ys):
        rgba = rgba[:, int(ys.min()):int(ys.max()) + 1, int(xs.min()):int(xs.max()) + 1]
    h, w = rgba.shape[1:]
    s = _u(g, *frac) * SIZE / max(h, w)
    aspect = _u(g, 0.85, 1.15)
    rgba = _resize(rgba, round(h * s * aspect), round(w * s / aspect)).clamp(0, 1)
    rgba = torch.cat([rgba[:3] * rgba[3:], rgba[3:]])
    if _u(g, 0, 1) < p_rot:
        rgba = _rotate(rgba, _u(g, -max_deg, max_deg))
    h, w = rgba.shape[1:]
    top = round((SIZE - h) / 2 + _u(g, -centre_jitter, centre_jitter) * SIZE)
    left = round((SIZE - w) / 2 + _u(g, -centre_jitter, centre_jitter) * SIZE)
    return rgba, top, left


def _crop(x: torch.Tensor, g: torch.Generator, area: tuple[float, float]) -> torch.Tensor:
    """A random resized crop (area fraction in ``area``, aspect 3/4..4/3) of an opaque image."""
    rgb = x[:3] * x[3:] + (1 - x[3:]) if x.shape[0] == 4 else x
    h, w = rgb.shape[1:]
    for _ in range(10):
        a = _u(g, *area) * h * w
        r = math.exp(_u(g, math.log(3 / 4), math.log(4 / 3)))
        ch, cw = round(math.sqrt(a / r)), round(math.sqrt(a * r))
        if 0 < ch <= h and 0 < cw <= w:
            top, left = int(_u(g, 0, h - ch + 1)), int(_u(g, 0, w - cw + 1))
            return _resize(rgb[:, top:top + ch, left:left + cw], SIZE, SIZE)
    return image_tensor(rgb)


def _background(g: torch.Generator, photos: list[torch.Tensor]) -> torch.Tensor:
    k = _u(g, 0, 1)
    if k < 0.3:
        return torch.ones(3, SIZE, SIZE)
    if k < 0.5:
        return torch.rand(3, 1, 1, generator=g).expand(3, SIZE, SIZE).clone()
    if k < 0.65 or not photos:
        c0, c1 = torch.rand(3, 1, 1, generator=g), torch.rand(3, 1, 1, generator=g)
        ramp = torch.linspace(0, 1, SIZE).view(1, 1, SIZE) if _u(g, 0, 1) < 0.5 else torch.linspace(0, 1, SIZE).view(1, SIZE, 1)
        return (c0 + (c1 - c0) * ramp).expand(3, SIZE, SIZE).clone()
    return _crop(photos[int(_u(g, 0, len(photos)))], g, (0.1, 1.0))


def _jitter(x: torch.Tensor, g: torch.Generator, strength: float, p_gray: float) -> torch.Tensor:
    if _u(g, 0, 1) < 0.5:
        x = x.flip(-1)
    x = x * _u(g, 1 - 0.3 * strength, 1 + 0.3 * strength)
    mean = x.mean()
    x = (x - mean) * _u(g, 1 - 0.3 * strength, 1 + 0.3 * strength) + mean
    gray = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
    x = gray + (x - gray) * _u(g, 1 - 0.4 * strength, 1 + 0.4 * strength)
    if _u(g, 0, 1) < p_gray:
        x = gray.expand(3, -1, -1)
    return x.clamp(0, 1)


def heavy_view(x: torch.Tensor, g: torch.Generator, photos: list[torch.Tensor],
               others: list[torch.Tensor]) -> torch.Tensor:
    """A heavily augmented view (see the module docstring); ``others`` are stamps for a second object."""
    if x.shape[0] == 3:
        return _jitter(_crop(x, g, (0.2, 1.0)), g, 1.0, 0.1)
    canvas = _background(g, photos)
    if others and _u(g, 0, 1) < 0.15:
        rgba, top, left = _stamp(others[int(_u(g, 0, len(others)))], g, (0.25, 0.5), 25, 0.3, 0.35)
        _paste(canvas, rgba, top, left)
    rgba, top, left = _stamp(x, g, (0.35, 0.95), 25, 0.5, 0.2)
    _paste(canvas, rgba, top, left)
    return _jitter(canvas, g, 1.0, 0.1)


def mild_view(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A lightly augmented view for the projector (see the module docstring)."""
    if x.shape[0] == 3:
        return _jitter(_crop(x, g, (0.55, 1.0)), g, 0.4, 0.0)
    canvas = torch.ones(3, SIZE, SIZE) if _u(g, 0, 1) < 0.6 else \
        (0.75 + 0.25 * torch.rand(3, 1, 1, generator=g)).expand(3, SIZE, SIZE).clone()
    rgba, top, left = _stamp(x, g, (0.6, 0.92), 10, 0.3, 0.05)
    _paste(canvas, rgba, top, left)
    return _jitter(canvas, g, 0.4, 0.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """``[3, H, W]`` float in [0, 1] -> ``[H, W, 3]`` uint8 (how views are cached)."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()


def from_uint8(x: torch.Tensor) -> torch.Tensor:
    """Inverse of ``to_uint8`` for a batch: ``[B, H, W, 3]`` uint8 -> ``[B, 3, H, W]`` float in [0, 1]."""
    return x.permute(0, 3, 1, 2).float() / 255.0
