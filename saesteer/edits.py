"""Edits as value objects.

At a steered position with activation ``x``, ``f = encode(x)``, ``f'`` = the edited features, and
the output is ``x + decode(f') - decode(f)``: the SAE's reconstruction error stays in place.

=============  =====================================================
``Clamp(i, v)``  ``f'_i = v``
``Erase(i)``     ``f'_i = 0``
``Scale(i, s)``  ``f'_i = s * f_i``
``Add(i, a)``    ``f'_i = f_i + a`` (adds ``a * W_dec[i]``; no encode)
``Steer(d, a)``  adds ``a * d`` (or ``a * ||x|| / ||d|| * d`` per token)
=============  =====================================================

An :class:`EditSet` groups edits with a mode: ``"error"`` (the default above) or
``"reconstruct"`` (output ``decode(f')``, optionally with every other feature zeroed first);
:func:`sae_for_vlm` builds the latter exactly as sae-for-vlm steers a VLM through its vision tower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterable, Mapping, Sequence, Union

import torch

from saesteer.errors import EditError
from saesteer.positions import Positions, PositionsLike, as_positions, whole

MODES = ("error", "reconstruct")


def _finite(name: str, v: Any) -> float:
    if isinstance(v, bool) or isinstance(v, str) or (isinstance(v, torch.Tensor) and v.numel() != 1):
        raise EditError(f"{name} must be a number, got {v!r}")
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise EditError(f"{name} must be a number, got {v!r}") from None
    if not math.isfinite(f):
        raise EditError(f"{name} must be finite, got {v!r}")
    return f


def _feature(i: Any) -> int:
    """A feature index: a whole number >= 0 (``torch.tensor(3.7)`` or 3.5 are refused, not rounded)."""
    i = whole("feature index", i)
    if i < 0:
        raise EditError(f"feature index must be >= 0, got {i}")
    return i


@dataclass(frozen=True)
class Edit:
    """Base of the feature edits. ``hook`` picks the SAE when several are attached."""

    feature: int
    positions: Positions | None = field(default=None, kw_only=True)
    hook: str | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature", _feature(self.feature))
        if self.positions is not None:
            object.__setattr__(self, "positions", as_positions(self.positions))

    needs_encode = True


@dataclass(frozen=True)
class Clamp(Edit):
    """Pin feature ``feature`` to ``value`` at every steered position."""

    value: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "value", _finite("clamp value", self.value))

    def apply(self, f: torch.Tensor) -> torch.Tensor:
        return torch.full_like(f, self.value)


@dataclass(frozen=True)
class Erase(Edit):
    """Set feature ``feature`` to 0 (FeatureEdit's erasure); the same as ``Clamp(i, 0)``."""

    def apply(self, f: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(f)


@dataclass(frozen=True)
class Scale(Edit):
    """Multiply feature ``feature`` by ``factor``."""

    factor: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "factor", _finite("scale factor", self.factor))

    def apply(self, f: torch.Tensor) -> torch.Tensor:
        return f * self.factor


@dataclass(frozen=True)
class Add(Edit):
    """Nudge feature ``feature`` by ``amount``: adds ``amount * W_dec[feature]`` (no encode)."""

    amount: float = 0.0
    needs_encode = False

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "amount", _finite("add amount", self.amount))

    def apply(self, f: torch.Tensor) -> torch.Tensor:
        return f + self.amount


@dataclass(frozen=True, eq=False)
class Steer:
    """Add ``alpha * d`` to the activation; ``d`` is a vector ``[d_in]`` or a feature index (its
    decoder row). With ``norm_scaled`` the step is ``alpha * ||x|| / ||d|| * d`` per token (G-SAE)."""

    direction: Any
    alpha: float = 1.0
    norm_scaled: bool = False
    positions: Positions | None = None
    hook: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", _finite("steer alpha", self.alpha))
        d = self.direction
        if isinstance(d, torch.Tensor) and d.ndim == 1:
            if not torch.isfinite(d).all():
                raise EditError("steering direction has non-finite entries")
            if not d.abs().sum() > 0:
                raise EditError("steering direction is all zeros")
        elif isinstance(d, torch.Tensor) and d.ndim == 0 or isinstance(d, int) and not isinstance(d, bool):
            object.__setattr__(self, "direction", _feature(d))
        elif isinstance(d, torch.Tensor):
            raise EditError(f"steering direction must be 1-D [d_in], got shape {tuple(d.shape)}")
        else:
            raise EditError(f"steering direction must be a 1-D tensor or a feature index, got {type(d).__name__}")
        if self.positions is not None:
            object.__setattr__(self, "positions", as_positions(self.positions))

    @property
    def feature(self) -> int | None:
        return self.direction if isinstance(self.direction, int) else None


AnyEdit = Union[Edit, Steer]


@dataclass(frozen=True)
class EditSet:
    """Edits applied together at one call, with the positions they default to and the mode.

    ``mode="error"`` (default) keeps the SAE error: output ``x + decode(f') - decode(f)``.
    ``mode="reconstruct"`` outputs ``decode(f')`` at ``positions`` (sae-for-vlm's semantics);
    with ``zero_others=True`` every feature not named by an edit is zeroed first.
    """

    edits: tuple[AnyEdit, ...] = ()
    positions: Positions = field(default_factory=Positions.all)
    mode: str = "error"
    zero_others: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "positions", as_positions(self.positions))
        object.__setattr__(self, "edits", tuple(self.edits))
        for e in self.edits:
            if not isinstance(e, (Edit, Steer)):
                raise EditError(f"not an edit: {e!r}")
        if self.mode not in MODES:
            raise EditError(f"unknown edit mode {self.mode!r}; choose 'error' or 'reconstruct'")
        if self.zero_others and self.mode != "reconstruct":
            raise EditError("zero_others only applies to mode='reconstruct'")

    def __bool__(self) -> bool:
        return bool(self.edits) or self.mode == "reconstruct"

    @cached_property
    def split(self) -> tuple[tuple[Edit, ...], tuple[Steer, ...], tuple[int, ...]]:
        """``(feature edits, steers, sorted distinct edited features)``, derived once per set rather
        than at every forward the set is applied to."""
        feats = tuple(e for e in self.edits if isinstance(e, Edit))
        steers = tuple(e for e in self.edits if isinstance(e, Steer))
        return feats, steers, tuple(sorted({e.feature for e in feats}))

    def for_hook(self, hook: str, only: bool) -> "EditSet":
        """The edits aimed at attachment ``hook`` (edits with no hook go to the only attachment)."""
        keep = tuple(e for e in self.edits if e.hook == hook or (e.hook is None and only))
        if len(keep) == len(self.edits):
            return self
        return EditSet(keep, self.positions, self.mode, self.zero_others)

    def __add__(self, other: "EditSet") -> "EditSet":
        if (self.mode, self.zero_others) != (other.mode, other.zero_others) and self.edits and other.edits:
            raise EditError("cannot combine edit sets with different modes")
        base = other if other.mode == "reconstruct" else self
        return EditSet(self.edits + other.edits, base.positions, base.mode, base.zero_others)


def sae_for_vlm(values: Mapping[int, float], *, zero_others: bool = False,
                positions: PositionsLike = "all") -> EditSet:
    """sae-for-vlm's steering semantics, by name (Pach et al. 2025: a VLM steered
    through an SAE inside its vision encoder).

    At every steered token (``positions``, all by default, as they do) the activation is REPLACED by
    the SAE's reconstruction ``decode(f')``, no error term, with ``f' = encode(x)``, ``f'_i = value``
    for each ``{i: value}`` (an absolute activation, e.g. 30-100 on their SAE) and, with
    ``zero_others``, every other latent zeroed first (their ``pre_zero``). An empty dict gives their
    plain reconstruction. saesteer's default edit instead keeps the error:
    ``x + decode(f') - decode(f)``. Cost: a full encode and decode per steered token.
    """
    edits = tuple(Clamp(_feature(i), v) for i, v in values.items())
    return EditSet(edits, as_positions(positions), "reconstruct", zero_others)


EditsLike = Union[None, EditSet, AnyEdit, Mapping[int, float], Sequence[Any]]


def _one_set(spec: Any, positions: PositionsLike, mode: str, zero_others: bool) -> EditSet:
    if isinstance(spec, EditSet):
        return spec
    if hasattr(spec, "__saesteer_edits__"):  # FeatureEdit and other recipes
        return _one_set(spec.__saesteer_edits__(), positions, mode, zero_others)
    if spec is None:
        items: list[AnyEdit] = []
    elif isinstance(spec, (Edit, Steer)):
        items = [spec]
    elif isinstance(spec, Mapping):
        items = [Clamp(_feature(k), v) for k, v in spec.items()]
    elif isinstance(spec, (str, bytes)) or not isinstance(spec, Iterable):
        raise EditError(f"expected edits: an edit (Clamp, Erase, Scale, Add, Steer), a {{feature: value}} dict, a list "
                        f"of edits, an EditSet or one of those per row; got {type(spec).__name__} {spec!r}")
    else:
        items = []
        for e in spec:
            if not isinstance(e, (Edit, Steer)):
                raise EditError(f"expected edits (Clamp, Erase, Scale, Add, Steer), got {e!r}")
            items.append(e)
    return EditSet(tuple(items), as_positions(positions), mode, zero_others)


def is_per_row(spec: Any) -> bool:
    """A list whose items are themselves edit specs (dict, list, EditSet, None) is per-row."""
    if not isinstance(spec, (list, tuple)) or not spec:
        return False
    flags = [isinstance(e, (Edit, Steer)) for e in spec]
    if all(flags):
        return False
    if any(flags):
        raise EditError("mix of single edits and per-row edit lists; give one list per row")
    return True


def coerce(
    spec: EditsLike | Iterable[EditsLike],
    *,
    positions: PositionsLike = None,
    mode: str = "error",
    zero_others: bool = False,
) -> EditSet | list[EditSet]:
    """Turn what a user passes as ``edits=`` into one EditSet, or one per row."""
    if is_per_row(spec):
        return [_one_set(s, positions, mode, zero_others) for s in spec]  # type: ignore[union-attr]
    return _one_set(spec, positions, mode, zero_others)
