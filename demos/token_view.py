"""Which feature fires where: the SAE features of every generated token, drawn as highlighted text.

:func:`read_token_features` runs one forward (no edits) over the finished rows and keeps each
token's active features; :func:`render_tokens` draws a row as HTML spans whose background shows one
feature's activation and whose tooltip (hover) lists the token's strongest features with values
and labels. Every piece of text is HTML-escaped.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

#: how many features per token are kept: a TopK SAE with k <= this has all its active features kept
TOP_K = 32


@dataclass
class TokenFeatures:
    """One row: the display text of each generated token and its active features, strongest first."""

    tokens: list[str]
    features: list[list[tuple[int, float]]]

    def value(self, position: int, feature: int) -> float:
        """The activation of ``feature`` at ``position`` (0 when it is not among the token's top
        :data:`TOP_K` features)."""
        return next((v for f, v in self.features[position] if f == feature), 0.0)

    def to_json(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "features": [[[f, v] for f, v in fs] for fs in self.features]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "TokenFeatures":
        return cls(list(d["tokens"]), [[(int(f), float(v)) for f, v in fs] for fs in d["features"]])


@torch.no_grad()
def read_token_features(model: Any, tokenizer: Any, sequences: torch.Tensor, attention_mask: torch.Tensor,
                        prompt_len: int) -> list[TokenFeatures]:
    """The active features of every generated token of every row, read by the unsteered model (so
    the steered row shows where its text expresses a feature, not the clamp itself). Tokens after
    a row's end-of-sequence are dropped. Cost: one forward over ``sequences`` plus a full encode."""
    eos = _eos_ids(model, tokenizer)
    rows = sequences.shape[0]
    lengths = []
    for r in range(rows):
        new = sequences[r, prompt_len:].tolist()
        lengths.append(next((i for i, t in enumerate(new) if t in eos), len(new)))
    mask = torch.cat([attention_mask, torch.ones_like(sequences[:, prompt_len:])], dim=1)
    for r, n in enumerate(lengths):
        mask[r, prompt_len + n:] = 0
    acts = model.features(input_ids=sequences, attention_mask=mask, top_k=TOP_K)
    out = []
    for r, n in enumerate(lengths):
        ids = sequences[r, prompt_len:prompt_len + n].tolist()
        toks = [tokenizer.decode([t]) for t in ids]
        feats = [acts.at(r, prompt_len + i) for i in range(n)]
        out.append(TokenFeatures(toks, feats))
    return out


def render_tokens(row: TokenFeatures, feature: int | None, labels: Mapping[int, str] | None,
                  scale: float, elem_class: str = "saesteer-tokens") -> str:
    """HTML for one row. With ``feature`` set, each token's background is that feature's activation
    divided by ``scale``; without it, the token's strongest feature's. Hover shows the value of the
    highlighted feature and the token's top five features with their labels."""
    spans = []
    for i, tok in enumerate(row.tokens):
        feats = row.features[i]
        if feature is not None:
            v, shown = row.value(i, feature), feature
        else:
            shown, v = feats[0] if feats else (None, 0.0)
        alpha = 0.0 if scale <= 0 else max(0.0, min(1.0, v / scale))
        tip = [f"feature {shown}: {v:.2f}" + (f" - {_label(labels, shown)}" if shown is not None else "")]
        tip += [f"{f} = {val:.2f}  {_label(labels, f)}" for f, val in feats[:5]]
        spans.append(
            f'<span class="saesteer-token" data-value="{v:.4f}" '
            f'style="background-color: rgba(255, 140, 0, {alpha:.3f})" '
            f'title="{html.escape(chr(10).join(tip), quote=True)}">{html.escape(tok)}</span>')
    body = "".join(spans) or "<em>(no tokens)</em>"
    return (f'<div class="saesteer-caption" style="font-size: 0.85em; opacity: 0.8; padding-top: 1.4em">'
            f'{html.escape(caption(row, feature, labels))}</div>'
            f'<div class="{elem_class}" style="white-space: pre-wrap; line-height: 1.8">{body}</div>')


def caption(row: TokenFeatures, feature: int | None, labels: Mapping[int, str] | None) -> str:
    """One line over a row: where the highlighted feature peaks (or that it does not fire)."""
    if feature is None:
        return "colour: each token's strongest feature (hover for the top five)"
    vals = [row.value(i, feature) for i in range(len(row.tokens))]
    name = f"feature {feature}" + (f" ({_label(labels, feature)})" if _label(labels, feature) else "")
    if not vals or max(vals) <= 0:
        return f"{name} does not fire on these tokens"
    i = max(range(len(vals)), key=vals.__getitem__)
    fired = sum(v > 0 for v in vals)
    return f"{name}: fires on {fired} of {len(vals)} tokens, peak {vals[i]:.2f} at {row.tokens[i]!r}"


def shared_scale(rows: Sequence[TokenFeatures], feature: int | None) -> float:
    """The largest shown activation over all rows, so rows are drawn on one colour scale."""
    best = 0.0
    for row in rows:
        for i, feats in enumerate(row.features):
            v = row.value(i, feature) if feature is not None else (feats[0][1] if feats else 0.0)
            best = max(best, v)
    return best


def _label(labels: Mapping[int, str] | None, f: int | None) -> str:
    if labels is None or f is None:
        return ""
    try:
        describe = getattr(labels, "describe", None)  # FeatureLabels: the explanation with its scores
        if describe is not None and f in labels:
            return str(describe(f))[:100]
        return str(labels.get(f, ""))[:80]
    except Exception:  # noqa: BLE001 - a label store without this feature
        return ""


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    cfg = getattr(model, "generation_config", None)  # a SteeredModel hands this on to its model
    eos = getattr(cfg, "eos_token_id", None)
    for e in (eos if isinstance(eos, (list, tuple)) else [eos]):
        if e is not None:
            ids.add(int(e))
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids
