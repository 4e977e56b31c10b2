"""Rewards explained feature by feature, and SARM's steering JSON.

A SARM reward is ``r = sum_i w_i f_i`` over the features of one token, so ``w_i f_i`` is feature
i's exact share: :class:`RewardExplanation` lists the largest shares with their labels, and the
shares it does not list are summed in ``rest``, so ``sum(shares) + rest == reward``.

SARM's steering JSON, ``{"16720": ["*", 2], "12222": ["+", 3]}``, maps to saesteer edits:
``"*"`` is :class:`~saesteer.Scale`, ``"+"`` is :class:`~saesteer.Add`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from saesteer.edits import Add, Edit, EditSet, Scale, coerce
from saesteer.errors import EditError

#: what ``steer=`` accepts: SARM's JSON (a dict or a path to a .json file), or saesteer edits
SteeringLike = Any


@dataclass(frozen=True)
class FeatureContribution:
    """One feature's share of a reward: ``contribution = weight * activation``."""

    feature: int
    activation: float
    weight: float
    contribution: float
    label: str | None = None


@dataclass
class RewardExplanation:
    """A reward split into per-feature contributions ``w_i f_i``.

    ``contributions`` holds the ``top`` features with the largest ``|w_i f_i|``; ``rest`` is the
    sum over every other feature, so ``sum(c.contribution) + rest == reward`` (float64).
    ``truncated`` counts tokens cut from the left of a conversation longer than the context.
    """

    reward: float
    contributions: list[FeatureContribution]
    rest: float
    active: int
    text: str | None = None
    truncated: int = 0
    token: str | None = None
    edits: list[str] = field(default_factory=list)
    #: "reward" (one conversation), or "margin" (r(preferred) - r(other), shares w_i (f_i - f'_i))
    kind: str = "reward"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        if self.kind == "margin":
            lines = [f"margin r(preferred) - r(other) = {self.reward:+.4f} = sum of w_i * (f_i - f'_i) over "
                     f"{self.active} features active in either"]
        else:
            lines = [f"reward {self.reward:+.4f} = sum of w_i * f_i over {self.active} active features"
                     + (f" (read at token {self.token!r})" if self.token is not None else "")]
        if self.truncated:
            lines.append(f"(the conversation was cut: {self.truncated} tokens dropped from the left)")
        if self.edits:
            lines.append("edits: " + ", ".join(self.edits))
        f_name, c_name = ("f_i-f'_i", "share") if self.kind == "margin" else ("f_i", "w_i*f_i")
        lines.append(f"{'feature':>8} {f_name:>9} {'w_i':>9} {c_name:>9}  label")
        for c in self.contributions:
            lab = (c.label or "")[:70]
            lines.append(f"{c.feature:>8} {c.activation:>9.3f} {c.weight:>+9.4f} {c.contribution:>+9.4f}  {lab}")
        lines.append(f"{'rest':>8} {'':>9} {'':>9} {self.rest:>+9.4f}  ({max(self.active - len(self.contributions), 0)} other active features)")
        return "\n".join(lines)


def explain_features(f: torch.Tensor, w: torch.Tensor, contributions: torch.Tensor, reward: float, labels: Any,
                     top: int) -> tuple[list[FeatureContribution], float, int]:
    """The ``top`` largest ``|w_i f_i|`` of one row (1-D tensors ``f``, ``w``, ``contributions``),
    the sum of the others (``reward`` minus the listed ones), and the number of active features."""
    if isinstance(top, bool) or not isinstance(top, int) or top < 0:
        raise EditError(f"top must be an int >= 0, got {top!r}")
    active = int((f != 0).sum())
    k = min(top, int(contributions.numel()))
    idx = contributions.abs().topk(k).indices.tolist() if k else []
    idx = [i for i in idx if contributions[i] != 0 or f[i] != 0]
    out = []
    for i in idx:
        label = None
        if labels is not None:
            try:
                label = labels[i]
            except (KeyError, IndexError):
                label = None
        out.append(FeatureContribution(i, float(f[i]), float(w[i]), float(contributions[i]), label))
    listed = float(sum(contributions[i].item() for i in idx))
    return out, reward - listed, active


def parse_steering(spec: SteeringLike) -> list[Edit]:
    """Feature edits from SARM's steering JSON or saesteer edits (validated; nothing runs).

    - ``{"16720": ["*", 2.0], 12: ["+", 3]}`` or a path to such a ``.json`` file: SARM's format;
    - ``{12: 5.0}``: saesteer's dict (clamp feature 12 to 5.0);
    - ``Clamp``/``Erase``/``Scale``/``Add`` objects, a list of them, an EditSet, or anything with
      ``__saesteer_edits__``. Positions do not apply (the reward reads one token) and ``Steer``
      directions are not feature edits: both raise EditError.
    """
    if spec is None:
        return []
    if isinstance(spec, (str, os.PathLike)):
        p = Path(spec).expanduser()
        if not p.is_file():
            raise EditError(f"steering file not found: {p}")
        try:
            spec = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise EditError(f"{p}: not JSON ({e})") from None
        if not isinstance(spec, Mapping):
            raise EditError(f"{p}: SARM steering JSON is an object {{latent: [op, value]}}")
    if isinstance(spec, Mapping) and any(isinstance(v, (list, tuple)) for v in spec.values()):
        return [_sarm_edit(k, v) for k, v in spec.items()]
    if isinstance(spec, Mapping):
        spec = {_latent(k): v for k, v in spec.items()}
    es = coerce(spec)
    if not isinstance(es, EditSet):
        raise EditError("per-row edits do not apply to a reward head; give one set of edits")
    out = []
    for e in es.edits:
        if not isinstance(e, Edit):
            raise EditError(f"{type(e).__name__} is not a feature edit; a reward head takes Clamp, Erase, Scale, Add")
        if e.positions is not None:
            raise EditError("a reward head reads one token: edits take no positions")
        out.append(e)
    if es.mode != "error":
        raise EditError("edit modes do not apply to a reward head")
    return out


def _latent(k: Any) -> int:
    if isinstance(k, str):
        if not k.strip().lstrip("-").isdigit():
            raise EditError(f"steering key {k!r} is not a latent index")
        return int(k)
    return k


def _sarm_edit(k: Any, v: Any) -> Edit:
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise EditError(f"SARM steering value for latent {k!r} must be [op, value], got {v!r}")
    op, val = v
    if op == "*":
        return Scale(_latent(k), val)
    if op == "+":
        return Add(_latent(k), val)
    raise EditError(f"unsupported SARM steering action {op!r} for latent {k!r}: use '*' or '+'")


def describe(e: Edit) -> str:
    """``"*2.0 on 16720"``-style text for an edit."""
    name = type(e).__name__
    val = getattr(e, "factor", getattr(e, "amount", getattr(e, "value", None)))
    return f"{name}({e.feature}{'' if val is None else f', {val:g}'})"
