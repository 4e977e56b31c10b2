"""Edits as JSON: the one schema the server (``saesteer serve``) reads from request bodies, shared with
any other front end that carries edits over the wire.

>>> from_json({"edits": [{"op": "clamp", "feature": 1234, "value": 8.0},
...                      {"op": "erase", "feature": 77, "positions": "generated"}],
...            "positions": "all", "mode": "error"})
EditSet(...)

Schema (every field checked, nothing coerced; an error names the field):

- ``edits``: a list of ``{"op": "clamp"|"erase"|"scale"|"add"|"steer", "feature": int, ...}`` with
  ``value`` (clamp), ``factor`` (scale), ``amount`` (add), ``alpha`` and ``norm_scaled`` (steer along
  the feature's decoder row), and optional ``positions`` and ``hook``;
- shorthand ``{"clamp": {"1234": 8.0}}`` (also ``scale``, ``add``; ``erase``: a list of features);
- ``positions``: ``"all"``, ``"prompt"``, ``"generated"`` or ``[[start, stop], ...]`` (stop may be null);
- ``mode``: ``"error"`` (default: the SAE error kept) or ``"reconstruct"``; ``zero_others``: bool.

:func:`to_json` writes an EditSet back in the same schema. Limits (how many edits, how large a value)
are the caller's: a public server passes its own. Cost: a few dict look-ups per edit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from saesteer.edits import Add, Clamp, Edit, EditSet, Erase, Scale, Steer
from saesteer.errors import EditError
from saesteer.positions import Positions

OPS = ("clamp", "erase", "scale", "add", "steer")
_VALUE_FIELD = {"clamp": "value", "scale": "factor", "add": "amount", "steer": "alpha"}
_TOP_KEYS = {"edits", "positions", "mode", "zero_others", "clamp", "scale", "add", "erase"}


@dataclass(frozen=True)
class SchemaLimits:
    """Bounds a server puts on one request's edits (None: no bound)."""

    max_edits: int | None = None
    max_abs_value: float | None = None
    max_abs_scale: float | None = None


def _int(v: Any, where: str, key: bool = False) -> int:
    """A whole number; with ``key`` also its decimal string (JSON object keys are strings:
    ``{"clamp": {"1234": 8.0}}``)."""
    if isinstance(v, bool) or not isinstance(v, int):
        if key and isinstance(v, str) and v.strip().lstrip("-").isdigit():
            return int(v)
        raise EditError(f"{where} must be a whole number, got {v!r}")
    return v


def _num(v: Any, where: str, bound: float | None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise EditError(f"{where} must be a finite number, got {v!r}")
    if bound is not None and abs(v) > bound:
        raise EditError(f"{where} must lie within [-{bound:g}, {bound:g}], got {v!r}")
    return float(v)


def _positions(v: Any, where: str) -> Positions | None:
    if v is None:
        return None
    if isinstance(v, str):
        if v not in ("all", "prompt", "generated"):
            raise EditError(f"{where} must be 'all', 'prompt', 'generated' or [[start, stop], ...], got {v!r}")
        return Positions(v)
    if not isinstance(v, list) or not all(isinstance(s, list) and len(s) == 2 for s in v):
        raise EditError(f"{where} must be 'all', 'prompt', 'generated' or [[start, stop], ...], got {v!r}")
    return Positions.range(*[(_int(a, where), None if b is None else _int(b, where)) for a, b in v])


def _one(e: Any, i: int, limits: SchemaLimits) -> Edit | Steer:
    where = f"saesteer.edits[{i}]"
    if not isinstance(e, dict):
        raise EditError(f"{where} must be an object like {{\"op\": \"clamp\", \"feature\": 3, \"value\": 8.0}}")
    op = e.get("op")
    if op not in OPS:
        raise EditError(f"{where}.op must be one of {', '.join(OPS)}, got {op!r}")
    allowed = {"op", "feature", "positions", "hook"} | ({_VALUE_FIELD[op]} if op in _VALUE_FIELD else set())
    if op == "steer":
        allowed.add("norm_scaled")
    extra = set(e) - allowed
    if extra:
        raise EditError(f"{where}: unknown field(s) {', '.join(sorted(extra))} for op {op!r}")
    if "feature" not in e:
        raise EditError(f"{where}.feature is missing")
    f = _int(e["feature"], f"{where}.feature")
    kw: dict[str, Any] = {"positions": _positions(e.get("positions"), f"{where}.positions")}
    hook = e.get("hook")
    if hook is not None and not isinstance(hook, str):
        raise EditError(f"{where}.hook must be a string, got {hook!r}")
    kw["hook"] = hook
    if op == "erase":
        return Erase(f, **kw)
    field = _VALUE_FIELD[op]
    if field not in e:
        raise EditError(f"{where}.{field} is missing")
    bound = limits.max_abs_scale if op == "scale" else limits.max_abs_value
    v = _num(e[field], f"{where}.{field}", bound)
    if op == "clamp":
        return Clamp(f, v, **kw)
    if op == "scale":
        return Scale(f, v, **kw)
    if op == "add":
        return Add(f, v, **kw)
    ns = e.get("norm_scaled", False)
    if not isinstance(ns, bool):
        raise EditError(f"{where}.norm_scaled must be true or false, got {ns!r}")
    return Steer(f, v, norm_scaled=ns, **kw)


def from_json(obj: Any, limits: SchemaLimits = SchemaLimits()) -> EditSet:
    """The EditSet one request's ``"saesteer"`` object asks for; EditError naming the field when it is
    malformed or over ``limits``. ``None`` or ``{}`` is no edit (an unsteered request)."""
    if obj is None:
        return EditSet()
    if not isinstance(obj, dict):
        raise EditError(f"saesteer must be an object, got {type(obj).__name__}")
    extra = set(obj) - _TOP_KEYS
    if extra:
        raise EditError(f"saesteer: unknown field(s) {', '.join(sorted(extra))}; known: {', '.join(sorted(_TOP_KEYS))}")
    items = obj.get("edits", [])
    if not isinstance(items, list):
        raise EditError("saesteer.edits must be a list of edit objects")
    items = list(items)
    for op in ("clamp", "scale", "add"):
        short = obj.get(op)
        if short is None:
            continue
        if not isinstance(short, dict):
            raise EditError(f"saesteer.{op} must be an object {{feature: {_VALUE_FIELD[op]}}}")
        items += [{"op": op, "feature": _int(k, f"saesteer.{op} key", key=True), _VALUE_FIELD[op]: v}
                  for k, v in short.items()]
    if obj.get("erase") is not None:
        if not isinstance(obj["erase"], list):
            raise EditError("saesteer.erase must be a list of features")
        items += [{"op": "erase", "feature": f} for f in obj["erase"]]
    if limits.max_edits is not None and len(items) > limits.max_edits:
        raise EditError(f"saesteer: {len(items)} edits; at most {limits.max_edits} per request")
    mode = obj.get("mode", "error")
    if mode not in ("error", "reconstruct"):
        raise EditError(f"saesteer.mode must be 'error' or 'reconstruct', got {mode!r}")
    zero = obj.get("zero_others", False)
    if not isinstance(zero, bool):
        raise EditError(f"saesteer.zero_others must be true or false, got {zero!r}")
    edits = tuple(_one(e, i, limits) for i, e in enumerate(items))
    positions = _positions(obj.get("positions"), "saesteer.positions") or Positions.all()
    return EditSet(edits, positions, mode, zero)


def to_json(es: EditSet) -> dict[str, Any]:
    """``es`` in the schema :func:`from_json` reads (round trip: ``from_json(to_json(es)) == es``)."""
    out: list[dict[str, Any]] = []
    for e in es.edits:
        if isinstance(e, Steer):
            if e.feature is None:
                raise EditError("a Steer along a raw vector has no JSON form; steer along a feature")
            d = {"op": "steer", "feature": e.feature, "alpha": e.alpha, "norm_scaled": e.norm_scaled}
        else:
            op = type(e).__name__.lower()
            d = {"op": op, "feature": e.feature}
            if op in _VALUE_FIELD:
                d[_VALUE_FIELD[op]] = getattr(e, _VALUE_FIELD[op])
        if e.positions is not None:
            d["positions"] = _positions_json(e.positions)
        if e.hook is not None:
            d["hook"] = e.hook
        out.append(d)
    return {"edits": out, "positions": _positions_json(es.positions), "mode": es.mode, "zero_others": es.zero_others}


def _positions_json(p: Positions) -> Any:
    if p.kind in ("all", "prompt", "generated"):
        return p.kind
    if p.kind == "ranges":
        return [[a, b] for a, b in p.ranges]
    raise EditError(f"positions {p.kind!r} (image tokens) have no JSON form in this schema")
