"""Which token positions an edit touches.

Positions are absolute: position ``p`` of a row is its ``p``-th non-pad token, counted from the
start of the sequence, whether the token arrives in a full forward or in a KV-cached decoding step.
Padding is never steered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Union

import torch

from saesteer.errors import EditError

KINDS = ("all", "prompt", "generated", "ranges")


@dataclass(frozen=True)
class Positions:
    """A set of absolute token positions.

    ``Positions.all()``, ``Positions.prompt()``, ``Positions.generated()`` or
    ``Positions.ranges((0, 4), (10, 12))`` (half-open ``[start, stop)``; ``stop=None`` means open).
    """

    kind: str = "all"
    ranges: tuple[tuple[int, int | None], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise EditError(f"unknown positions {self.kind!r}; choose one of {', '.join(KINDS)}")
        for start, stop in self.ranges:
            if start < 0 or (stop is not None and stop < start):
                raise EditError(f"bad position range [{start}, {stop}): need 0 <= start <= stop")

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
        out: list[tuple[int, int | None]] = []
        for s in spans:
            if isinstance(s, int):
                out.append((s, s + 1))
            else:
                a, b = s
                out.append((int(a), None if b is None else int(b)))
        return cls("ranges", tuple(out))

    def mask(self, pos: torch.Tensor, valid: torch.Tensor, prompt_len: torch.Tensor | None) -> torch.Tensor:
        """Boolean ``[B, T]`` mask of the steered tokens, given absolute positions ``pos [B, T]``,
        the non-pad mask ``valid [B, T]`` and the per-row prompt length ``[B]``."""
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
    """Coerce ``"all" | "prompt" | "generated" | int | range | [(a, b), ...] | Positions``."""
    if spec is None:
        return default if default is not None else Positions.all()
    if isinstance(spec, Positions):
        return spec
    if isinstance(spec, str):
        if spec not in ("all", "prompt", "generated"):
            raise EditError(f"unknown positions {spec!r}; use 'all', 'prompt', 'generated' or ranges")
        return Positions(spec)
    if isinstance(spec, bool):
        raise EditError(f"positions must not be a bool, got {spec!r}")
    if isinstance(spec, int):
        return Positions.range(spec)
    if isinstance(spec, range):
        if spec.step != 1:
            raise EditError("position ranges must have step 1")
        return Positions.range((spec.start, spec.stop))
    try:
        return Positions.range(*list(spec))  # type: ignore[arg-type]
    except (TypeError, ValueError) as e:
        raise EditError(f"cannot read positions from {spec!r}: {e}") from None
