"""The Steer tab's "Auto strength" button: a small steering sweep for the chosen feature
(:func:`saesteer.eval.steering.auto_sweep`), whose chosen setting fills the edit kind and value, and
whose curve (concept activation against the perplexity ratio) the page shows as inline SVG.

No Gradio here, so the tests call it directly.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any

from saesteer.demos.limits import DemoInputError, Limits

#: the sweep kinds the page's edit kinds can express (clamp and add, at every position)
AUTO_KINDS = ("clamp", "add")
#: the sweep's strengths, in units of the feature's largest labelling activation
AUTO_STRENGTHS = (0.25, 0.5, 1.0)


@dataclass(frozen=True)
class AutoStrength:
    """What the button puts on the page: the edit kind and value (None: nothing fit the budget, the
    boxes keep what they held), the curve as HTML, and a one-line note."""

    kind: str | None
    value: float | None
    curve: str
    note: str


def auto_strength(pair: Any, feature: Any, use_chat: bool, limits: Limits, *, max_new_tokens: int = 16,
                  budget: float = 1.5) -> AutoStrength:
    """Sweep ``feature`` of ``pair`` (a LoadedPair: model, tokenizer, sae): clamp and add at 0.25x,
    0.5x and 1x its reference activation on 3 neutral prompts, and pick the setting that raises the
    feature's activation on the output most within ``budget`` x the unsteered perplexity. The feature
    is checked first (DemoInputError); a chosen value outside the page's bounds is refused like a
    typed one. Cost: 3 batched greedy generates
    of ``max_new_tokens`` tokens (3, 9 and 9 rows) and their read-back forwards."""
    from saesteer.eval.steering import auto_sweep

    f, _, _ = limits.edit_row(feature, "clamp", 0.0, d_sae=pair.sae.d_sae)
    res = auto_sweep(pair.model, f, kinds=AUTO_KINDS, strengths=AUTO_STRENGTHS, chat=bool(use_chat),
                     max_new_tokens=max_new_tokens, budget=budget, progress=False)
    curve = f'<div class="saesteer-auto-curve">{res.svg()}<p>{html.escape(res.summary())}</p></div>'
    c = res.chosen
    if c is None:
        return AutoStrength(None, None, curve, f"no clamp or add of feature {f} kept perplexity within "
                                               f"{budget:g}x the unsteered text's; the value was left as it was")
    if not math.isfinite(c.value) or abs(c.value) > limits.max_abs_value:
        raise DemoInputError(f"the sweep chose {c.kind} {c.value:.4g}, outside this demo's bound "
                             f"{limits.max_abs_value:g}")
    value = float(f"{c.value:.4g}")
    return AutoStrength(c.kind, value, curve, f"{c.kind} {value:g} ({c.strength:g}x the feature's reference "
                                              f"activation): perplexity {res.ratio(c):.2f}x the unsteered")
