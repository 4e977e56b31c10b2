"""Typed reads of an SAE file's configuration: every field is checked for what it must be, and a
wrong one raises SAEFormatError naming the file and the field — never a raw KeyError, ValueError,
TypeError or AttributeError, and never a silent coercion (``"false"`` is not True, 256.7 is not 256).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from saesteer.errors import SAEFormatError

_MISSING = object()


class Fields:
    """The fields of one configuration mapping (``data``) read from ``where`` (a file path)."""

    def __init__(self, data: Any, where: Any) -> None:
        if not isinstance(data, dict):
            raise SAEFormatError(f"{where}: the configuration must be a json object, got {type(data).__name__}")
        self.data, self.where = data, where

    def _get(self, key: str, default: Any) -> Any:
        if key in self.data and self.data[key] is not None:
            return self.data[key]
        if default is _MISSING:
            raise SAEFormatError(f"{self.where}: field {key!r} is missing (or null)")
        return default

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def whole(self, key: str, default: Any = _MISSING, *, minimum: int = 1) -> int:
        """A whole number >= ``minimum``: ints, or floats with no fractional part (json writes 1e3)."""
        v = self._get(key, default)
        ok = not isinstance(v, bool) and (isinstance(v, int) or (isinstance(v, float) and math.isfinite(v)
                                                                  and v == int(v)))
        if not ok:
            raise SAEFormatError(f"{self.where}: field {key!r} must be a whole number, got {v!r}")
        if int(v) < minimum:
            raise SAEFormatError(f"{self.where}: field {key!r} must be >= {minimum}, got {v!r}")
        return int(v)

    def flag(self, key: str, default: Any = _MISSING) -> bool:
        """A json boolean (the string "false" is refused, not read as True)."""
        v = self._get(key, default)
        if not isinstance(v, bool):
            raise SAEFormatError(f"{self.where}: field {key!r} must be true or false, got {v!r}")
        return v

    def number(self, key: str, default: Any = _MISSING) -> float:
        v = self._get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise SAEFormatError(f"{self.where}: field {key!r} must be a finite number, got {v!r}")
        return float(v)

    def text(self, key: str, default: Any = _MISSING) -> Any:
        v = self._get(key, default)
        if v is not default and not isinstance(v, str):
            raise SAEFormatError(f"{self.where}: field {key!r} must be a string, got {v!r}")
        return v

    def mapping(self, key: str) -> dict[str, Any]:
        """A json object (empty when absent)."""
        v = self._get(key, {})
        if not isinstance(v, dict):
            raise SAEFormatError(f"{self.where}: field {key!r} must be a json object, got {v!r}")
        return v


def tensor(tensors: dict[str, torch.Tensor], key: str, where: Any) -> torch.Tensor:
    """``tensors[key]``, or SAEFormatError naming the file and the missing tensor."""
    if key not in tensors:
        raise SAEFormatError(f"{where}: tensor {key!r} is missing (the file has: {', '.join(sorted(tensors)) or 'none'})")
    return tensors[key]


def widths(where: Any, d_in: int, d_sae: int, W_enc: torch.Tensor) -> None:
    """The widths a config claims must be those of its encoder ``[d_in, d_sae]``: checked before
    anything is allocated from the claim."""
    if W_enc.ndim != 2 or tuple(W_enc.shape) != (d_in, d_sae):
        raise SAEFormatError(f"{where}: the config says d_in={d_in}, d_sae={d_sae} but W_enc has shape "
                             f"{tuple(W_enc.shape)}")


def shaped(tensors: dict[str, torch.Tensor], key: str, where: Any, shape: tuple[int, ...],
           what: str = "") -> torch.Tensor:
    """``tensors[key]`` as fp32 when it has exactly ``shape``; else SAEFormatError naming the file, the
    tensor, its shape and the one expected (``what`` says where the expected widths come from)."""
    t = tensor(tensors, key, where)
    if not isinstance(t, torch.Tensor):
        raise SAEFormatError(f"{where}: {key!r} is not a tensor ({type(t).__name__})")
    if tuple(t.shape) != tuple(shape):
        raise SAEFormatError(f"{where}: tensor {key!r} has shape {tuple(t.shape)}, expected {tuple(shape)}"
                             + (f" ({what})" if what else ""))
    return t.to(torch.float32) if t.is_floating_point() else t


def linear_pair(tensors: dict[str, torch.Tensor], where: Any, enc: str, dec: str, b_enc: str,
                b_dec: str) -> dict[str, torch.Tensor]:
    """``W_enc [d, F]``, ``W_dec [F, d]``, ``b_enc``, ``b_dec`` from an encoder stored ``[F, d]`` and a
    decoder stored ``[d, F]`` (``nn.Linear`` layout, or Qwen Scope's), the widths read off the encoder
    and every other tensor shape-checked against them."""
    W = tensor(tensors, enc, where)
    if not isinstance(W, torch.Tensor) or W.ndim != 2:
        raise SAEFormatError(f"{where}: tensor {enc!r} must be 2-D [d_sae, d_in], got "
                             f"{tuple(getattr(W, 'shape', ()))}")
    F, d = (int(n) for n in W.shape)
    return {"W_enc": W.float().T, "W_dec": shaped(tensors, dec, where, (d, F), f"[d_in, d_sae] from {enc}").T,
            "b_enc": shaped(tensors, b_enc, where, (F,), f"d_sae from {enc}"),
            "b_dec": shaped(tensors, b_dec, where, (d,), f"d_in from {enc}")}
