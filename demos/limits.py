"""What one request to the demo may ask for, and the checks that turn page input into saesteer edits.

Every check runs before a model is touched and raises :class:`DemoInputError` (a
:class:`~saesteer.errors.SaesteerError`), whose message the page shows as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import saesteer
from saesteer.errors import SaesteerError

#: the edit kinds the page offers, in the order it lists them
KINDS = ("clamp", "scale", "add", "erase")


class DemoInputError(SaesteerError, ValueError):
    """Page input outside the demo's limits (prompt too long, too many edits, value out of bounds, ...)."""


@dataclass(frozen=True)
class Limits:
    """Bounds on one request. A public demo serves anyone who opens the page, so each bound caps
    the CPU time or the memory one request can take."""

    max_prompt_chars: int = 2000
    max_prompt_tokens: int = 512
    max_new_tokens: int = 128
    max_edits: int = 8
    #: ``|value|`` bound of a clamp or an add (in feature-activation units)
    max_abs_value: float = 1000.0
    #: ``|factor|`` bound of a scale
    max_abs_scale: float = 100.0
    max_search_chars: int = 100
    #: ``|w_i|`` bound of a reward head weight typed in the Reward tab (any finite weight is
    #: meaningful, the reward being linear in it; the bound keeps the numbers readable)
    max_abs_weight: float = 1000.0

    def prompt(self, text: Any, field: str = "the prompt", required: bool = True) -> str:
        """The text of one box, stripped; refused when empty (unless not ``required``) or longer than
        ``max_prompt_chars``. ``field`` names the box in the message ("the prompt", "Response A"):
        every tab checks its text boxes with this one bound."""
        text = "" if text is None else str(text)
        if required and not text.strip():
            raise DemoInputError(f"{field} is empty: type some text first")
        if len(text) > self.max_prompt_chars:
            raise DemoInputError(f"{field} has {len(text)} characters; this demo takes at most "
                                 f"{self.max_prompt_chars}")
        return text.strip()

    def prompt_tokens(self, n: int) -> None:
        """Refuse a prompt of ``n`` tokens (chat template included) above ``max_prompt_tokens``."""
        if n > self.max_prompt_tokens:
            raise DemoInputError(f"the prompt is {n} tokens long with its template; this demo takes at "
                                 f"most {self.max_prompt_tokens}")

    def new_tokens(self, n: Any) -> int:
        """``n`` as an int in ``[1, max_new_tokens]``."""
        try:
            k = int(n)
        except (TypeError, ValueError):
            raise DemoInputError(f"max new tokens must be a whole number, got {n!r}") from None
        if not 1 <= k <= self.max_new_tokens:
            raise DemoInputError(f"max new tokens must be between 1 and {self.max_new_tokens}, got {k}")
        return k

    def edit_row(self, feature: Any, kind: Any, value: Any, d_sae: int) -> tuple[int, str, float]:
        """One edit from the page as ``(feature, kind, value)``, checked against the bounds and the
        SAE's width (``erase`` ignores the value and stores 0)."""
        if feature is None or feature == "":
            raise DemoInputError("pick a feature first (search by label, or type its number)")
        try:
            f = float(feature)
        except (TypeError, ValueError):
            raise DemoInputError(f"a feature is a whole number, got {feature!r}") from None
        if not f.is_integer():
            raise DemoInputError(f"a feature is a whole number, got {feature!r}")
        i = int(f)
        if not 0 <= i < d_sae:
            raise DemoInputError(f"feature {i} does not exist: this SAE has features 0 to {d_sae - 1}")
        kind = str(kind or "").strip().lower()
        if kind not in KINDS:
            raise DemoInputError(f"the kind of edit is one of {', '.join(KINDS)}, got {kind!r}")
        if kind == "erase":
            return i, kind, 0.0
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise DemoInputError(f"the value must be a number, got {value!r}") from None
        bound = self.max_abs_scale if kind == "scale" else self.max_abs_value
        if not math.isfinite(v) or abs(v) > bound:
            raise DemoInputError(f"a {kind} value must lie within [-{bound:g}, {bound:g}], got {value!r}")
        return i, kind, v

    def edit_list(self, rows: Sequence[Sequence[Any]], d_sae: int) -> list[saesteer.Edit]:
        """The session's edit rows as saesteer edits (every row checked again: rows can come from
        the page's API as well as from its buttons)."""
        if len(rows) > self.max_edits:
            raise DemoInputError(f"{len(rows)} edits; this demo takes at most {self.max_edits}")
        return [to_edit(*self.edit_row(*row[:3], d_sae=d_sae)) for row in rows]


def to_edit(feature: int, kind: str, value: float) -> saesteer.Edit:
    """``(feature, kind, value)`` as a saesteer edit object."""
    if kind == "clamp":
        return saesteer.Clamp(feature, value)
    if kind == "scale":
        return saesteer.Scale(feature, value)
    if kind == "add":
        return saesteer.Add(feature, value)
    if kind == "erase":
        return saesteer.Erase(feature)
    raise DemoInputError(f"unknown edit kind {kind!r}")
