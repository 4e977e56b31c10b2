"""Which token positions an edit touches.

Positions are absolute: position ``p`` of a row is its ``p``-th non-pad token, counted from the
start of the sequence, whether the token arrives in a full forward or in a KV-cached decoding step.
Padding is never steered.

On a hook that reads image tokens (a vision tower), positions count along one image's tokens:
``"all"`` (every token), ``"patches"`` (every patch token), ``"cls"`` (the leading CLS token, for towers
that have one), ``Positions.patches(3, 17)`` (those patches only: row-major index in the patch grid,
CLS not counted) or token ranges (``Positions.range((0, 5))``: raw indices, CLS included). Where the
CLS token sits comes from the adapter, never from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Union

import torch

from saesteer.errors import EditError

KINDS = ("all", "prompt", "generated", "ranges", "patches", "cls")
#: kinds that only make sense on text tokens / on image tokens
TEXT_KINDS = ("prompt", "generated")
IMAGE_KINDS = ("patches", "cls")


@dataclass(frozen=True)
class Positions:
    """A set of absolute token positions.

    ``Positions.all()``, ``Positions.prompt()``, ``Positions.generated()`` or
    ``Positions.ranges((0, 4), (10, 12))`` (half-open ``[start, stop)``; ``stop=None`` means open).
    """

    kind: str = "all"
    ranges: tuple[tuple[int, int | None], ...] = ()
    patch_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise EditError(f"unknown positions {self.kind!r}; choose one of {', '.join(KINDS)}")
        for start, stop in self.ranges:
            if start < 0 or (stop is not None and stop < start):
                raise EditError(f"bad position range [{start}, {stop}): need 0 <= start <= stop")
        if self.patch_ids and self.kind != "patches":
            raise EditError("patch indices belong to Positions.patches(...)")
        if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in self.patch_ids):
            raise EditError(f"patch indices must be ints >= 0, got {self.patch_ids}")

    @classmethod
    def all(cls) -> "Positions":
        return cls("all")

    @classmethod
    def prompt(cls) -> "Positions":
        return cls("prompt")

    @classmethod
    def generated(cls) -> "Positions":
        return cls("generated")

    @classmethod
    def range(cls, *spans: tuple[int, int | None] | int) -> "Positions":
        """Half-open ``[start, stop)`` spans (``stop=None``: open) or single positions. Positions are
        whole numbers: ``(1.5, 3)`` is refused, never rounded."""
        out: list[tuple[int, int | None]] = []
        for s in spans:
            if isinstance(s, (tuple, list)) and len(s) == 2:
                a, b = s
                out.append((whole("position", a), None if b is None else whole("position", b)))
            elif isinstance(s, (tuple, list)):
                raise EditError(f"a position range is (start, stop), got {s!r}")
            else:
                i = whole("position", s)
                out.append((i, i + 1))
        return cls("ranges", tuple(out))

    @classmethod
    def patches(cls, *ids: int | Iterable[int]) -> "Positions":
        """Image patch tokens: every patch with no argument, else those patches (row-major index in
        the patch grid, CLS not counted), e.g. ``Positions.patches(0, 1, 24)`` or ``patches(range(5))``."""
        flat: list[int] = []
        for i in ids:
            flat.extend(whole("patch index", j) for j in ([i] if not isinstance(i, Iterable) else list(i)))
        return cls("patches", patch_ids=tuple(sorted(set(flat))))

    @classmethod
    def cls_token(cls) -> "Positions":
        """The CLS token of each image (an error on towers that have none)."""
        return cls("cls")

    def check(self, tokens: str, cls_tokens: int = 0, n_patches: int | None = None) -> None:
        """Raise EditError unless these positions fit a hook whose tokens are ``tokens``
        (``"text"`` or ``"image"``, with ``cls_tokens`` leading CLS tokens and ``n_patches`` patches)."""
        if tokens != "image":
            if self.kind in IMAGE_KINDS:
                raise EditError(f"positions {self.kind!r} address image tokens, but this hook reads text tokens; "
                                "use 'all', 'prompt', 'generated' or ranges")
            return
        if self.kind in TEXT_KINDS:
            raise EditError(f"positions {self.kind!r} address text tokens, but this hook reads image tokens; "
                            "use 'all', 'patches', 'cls', Positions.patches(...) or token ranges")
        if self.kind == "cls" and cls_tokens == 0:
            raise EditError("positions 'cls': this vision tower has no CLS token (every token is a patch)")
        if self.patch_ids and n_patches is not None and self.patch_ids[-1] >= n_patches:
            raise EditError(f"patch index {self.patch_ids[-1]} is out of range: the image has {n_patches} "
                            f"patches (0..{n_patches - 1})")

    def image_mask(self, n_rows: int, n_tokens: int, cls_tokens: int, device) -> torch.Tensor:
        """Boolean ``[n_rows, n_tokens]`` mask over image tokens (``cls_tokens`` CLS tokens first,
        then the patches); the same for every row, since images are never padded."""
        t = torch.arange(n_tokens, device=device)
        n_patches = n_tokens - cls_tokens
        self.check("image", cls_tokens, n_patches)
        if self.kind == "all":
            m = torch.ones_like(t, dtype=torch.bool)
        elif self.kind == "cls":
            m = t < cls_tokens
        elif self.kind == "patches":
            m = t >= cls_tokens
            if self.patch_ids:
                ids = torch.tensor(self.patch_ids, device=device) + cls_tokens
                m = torch.isin(t, ids)
        else:
            m = torch.zeros_like(t, dtype=torch.bool)
            for start, stop in self.ranges:
                m = m | ((t >= start) & (t < (n_tokens if stop is None else stop)))
        return m.unsqueeze(0).expand(n_rows, n_tokens)

    def mask(self, pos: torch.Tensor, valid: torch.Tensor, prompt_len: torch.Tensor | None) -> torch.Tensor:
        """Boolean ``[B, T]`` mask of the steered tokens, given absolute positions ``pos [B, T]``,
        the non-pad mask ``valid [B, T]`` and the per-row prompt length ``[B]``."""
        self.check("text")
        if self.kind == "all":
            return valid
        if self.kind in ("prompt", "generated"):
            if prompt_len is None:  # a plain forward: every token is prompt
                m = torch.ones_like(valid) if self.kind == "prompt" else torch.zeros_like(valid)
            else:
                gen = pos >= prompt_len.to(pos.device).unsqueeze(1)
                m = gen if self.kind == "generated" else ~gen
            return m & valid
        m = torch.zeros_like(valid)
        for start, stop in self.ranges:
            r = pos >= start
            if stop is not None:
                r = r & (pos < stop)
            m = m | r
        return m & valid


PositionsLike = Union[Positions, str, int, range, Iterable, None]


def as_positions(spec: PositionsLike, default: Positions | None = None) -> Positions:
    """Coerce ``"all" | "prompt" | "generated" | "patches" | "cls" | int | range | [(a, b), ...] |
    Positions``."""
    if spec is None:
        return default if default is not None else Positions.all()
    if isinstance(spec, Positions):
        return spec
    if isinstance(spec, str):
        if spec not in ("all", "prompt", "generated", "patches", "cls"):
            raise EditError(f"unknown positions {spec!r}; use 'all', 'prompt', 'generated', 'patches', 'cls' "
                            "or ranges")
        return Positions(spec)
    if isinstance(spec, bool):
        raise EditError(f"positions must not be a bool, got {spec!r}")
    if isinstance(spec, int) or _is_number(spec):
        return Positions.range(spec)
    if isinstance(spec, range):
        if spec.step != 1:
            raise EditError("position ranges must have step 1")
        return Positions.range((spec.start, spec.stop))
    if not isinstance(spec, Iterable):
        raise EditError(f"positions must be 'all', 'prompt', 'generated', a position or (start, stop) ranges, "
                        f"got {type(spec).__name__} {spec!r}")
    return Positions.range(*list(spec))  # type: ignore[arg-type]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) or (isinstance(v, torch.Tensor) and v.numel() == 1) or hasattr(v, "__index__")


def whole(what: str, v: Any) -> int:
    """``v`` as an int when it is a whole number (int, numpy integer, integral float, one-element
    tensor holding one); EditError for anything else: a bool, 3.7, ``torch.tensor(3.7)``, "3", None.
    Non-integral values are refused, never rounded or truncated."""
    if isinstance(v, bool) or isinstance(v, str) or v is None:
        raise EditError(f"{what} must be a whole number, got {v!r}")
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise EditError(f"{what} must be one number, got a tensor of shape {tuple(v.shape)}")
        v = v.item()
    if hasattr(v, "__index__") and not isinstance(v, float):
        return int(v.__index__())
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise EditError(f"{what} must be a whole number, got {type(v).__name__} {v!r}") from None
    if not math.isfinite(f) or f != int(f):
        raise EditError(f"{what} must be a whole number, got {v!r} (refused, not rounded)")
    return int(f)
