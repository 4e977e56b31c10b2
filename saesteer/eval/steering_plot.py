"""The steering sweep's chart: hand-written, self-contained SVG (no plotting library, nothing fetched).

Concept activation (y) against the perplexity ratio to the unsteered text (x, log scale, with the
budget as a dashed vertical line) or against the strength; one polyline per edit kind, starting at the
baseline; points over the budget are drawn hollow; the chosen point is ringed.
"""

from __future__ import annotations

import html
import math
from typing import Any

W, H = 560, 320
LEFT, RIGHT, TOP, BOTTOM = 58, 150, 30, 46
COLOURS = {"clamp": "#1f77b4", "clamp_generated": "#d62728", "add": "#2ca02c", "add_norm": "#9467bd"}
RATIO_TICKS = (0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 3, 4, 6, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)


def _f(v: float) -> str:
    return f"{v:.1f}"


def _g(v: float) -> str:
    return f"{v:.3g}"


def sweep_svg(res: Any, x: str = "ppl") -> str:
    """``res`` (a SweepResult) as an SVG string; ``x`` is ``"ppl"`` (perplexity ratio) or ``"strength"``."""
    if x not in ("ppl", "strength"):
        raise ValueError(f"x is 'ppl' or 'strength', got {x!r}")
    base = res.baseline
    kinds = list(dict.fromkeys(p.kind for p in res.points))

    def xval(p: Any) -> float:
        return res.ratio(p) if x == "ppl" else p.strength

    def ok(p: Any) -> bool:
        v = xval(p)
        return math.isfinite(v) and math.isfinite(p.concept) and (x != "ppl" or v > 0)

    shown = [p for p in [base, *res.points] if ok(p)]
    xs = [xval(p) for p in shown] or [1.0]
    ys = [p.concept for p in shown] or [0.0]
    if x == "ppl":
        lo, hi = min(min(xs), 1.0) / 1.15, max(max(xs), res.budget) * 1.15
        fwd = math.log
    else:
        lo, hi = min(min(xs), 0.0), max(max(xs), 0.0)
        pad = (hi - lo) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
        fwd = float
    y0, y1 = min(min(ys), 0.0), max(ys)
    y1 = y1 + (y1 - y0) * 0.08 if y1 > y0 else y0 + 1.0
    px0, px1, py0, py1 = LEFT, W - RIGHT, H - BOTTOM, TOP

    def X(v: float) -> float:
        return px0 + (fwd(v) - fwd(lo)) / (fwd(hi) - fwd(lo)) * (px1 - px0)

    def Y(v: float) -> float:
        return py0 + (v - y0) / (y1 - y0) * (py1 - py0)

    xlabel = "perplexity / unsteered perplexity (log scale)" if x == "ppl" else \
        f"strength (x reference activation {res.reference:.3g}, {res.reference_source})"
    title = f"feature {res.feature} at {res.hook}: concept vs {'perplexity' if x == 'ppl' else 'strength'}"
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           'font-family="sans-serif" font-size="10" role="img">',
           f'<title>{html.escape(title)}</title>',
           f'<text x="{(px0 + px1) / 2}" y="16" text-anchor="middle" font-size="12">{html.escape(title)}</text>',
           f'<line x1="{px0}" y1="{py0}" x2="{px1}" y2="{py0}" stroke="#333"/>',
           f'<line x1="{px0}" y1="{py0}" x2="{px0}" y2="{py1}" stroke="#333"/>',
           f'<text x="{(px0 + px1) / 2}" y="{H - 8}" text-anchor="middle">{html.escape(xlabel)}</text>',
           f'<text x="14" y="{(py0 + py1) / 2}" text-anchor="middle" transform="rotate(-90 14 {(py0 + py1) / 2})">'
           'feature activation on the output (unsteered read)</text>']
    if x == "ppl":
        ticks = [t for t in RATIO_TICKS if lo <= t <= hi]
    else:
        ticks = sorted({0.0, *(p.strength for p in res.points)})
    while len(ticks) > 8:
        ticks = ticks[::2]
    kept: list[float] = []
    for t in ticks:  # no overlapping labels
        if not kept or X(t) - X(kept[-1]) >= 22:
            kept.append(t)
    ticks = kept
    for t in ticks:
        out.append(f'<line x1="{_f(X(t))}" y1="{py0}" x2="{_f(X(t))}" y2="{py0 + 4}" stroke="#333"/>')
        out.append(f'<text x="{_f(X(t))}" y="{py0 + 15}" text-anchor="middle">{_g(t)}</text>')
    for i in range(5):
        v = y0 + (y1 - y0) * i / 4
        out.append(f'<text x="{px0 - 5}" y="{_f(Y(v) + 3)}" text-anchor="end">{_g(v)}</text>')
    if x == "ppl":
        bx = _f(X(res.budget))
        out.append(f'<line x1="{bx}" y1="{py0}" x2="{bx}" y2="{py1}" stroke="#777" stroke-dasharray="4 3"/>')
        out.append(f'<text x="{bx}" y="{py1 - 3}" text-anchor="middle" fill="#555">budget {res.budget:g}x</text>')
    limit = res.budget * base.perplexity
    for k, kind in enumerate(kinds):
        colour = COLOURS.get(kind, "#555")
        pts = [p for p in [base, *(q for q in res.points if q.kind == kind)] if ok(p)]
        coords = " ".join(f"{_f(X(xval(p)))},{_f(Y(p.concept))}" for p in pts)
        out.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="1.6"/>')
        for p in pts[1:] if pts and pts[0] is base else pts:
            within = math.isfinite(p.perplexity) and p.perplexity <= limit
            tip = (f"{kind} at {p.strength:g}x (value {p.value:.4g}): concept {p.concept:.3g}, perplexity "
                   f"{p.perplexity:.3g} ({res.ratio(p):.2f}x), KL {p.kl:.3g}")
            out.append(f'<circle cx="{_f(X(xval(p)))}" cy="{_f(Y(p.concept))}" r="3.2" stroke="{colour}" '
                       f'fill="{colour if within else "white"}"><title>{html.escape(tip)}</title></circle>')
        ly = TOP + 14 + 16 * k
        out.append(f'<line x1="{px1 + 12}" y1="{ly}" x2="{px1 + 32}" y2="{ly}" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{px1 + 37}" y="{ly + 3}">{html.escape(kind)}</text>')
    if ok(base):
        out.append(f'<rect x="{_f(X(xval(base)) - 3.5)}" y="{_f(Y(base.concept) - 3.5)}" width="7" height="7" '
                   f'fill="#333"><title>unsteered: concept {base.concept:.3g}, perplexity {base.perplexity:.3g}'
                   '</title></rect>')
    ly = TOP + 14 + 16 * len(kinds)
    out.append(f'<rect x="{px1 + 18.5}" y="{ly - 3.5}" width="7" height="7" fill="#333"/>'
               f'<text x="{px1 + 37}" y="{ly + 3}">unsteered</text>')
    out.append(f'<text x="{px1 + 12}" y="{ly + 18}" fill="#555">hollow: over budget</text>')
    c = res.chosen
    if c is not None and ok(c):
        cx, cy = _f(X(xval(c))), _f(Y(c.concept))
        out.append(f'<circle cx="{cx}" cy="{cy}" r="7.5" fill="none" stroke="#000" stroke-width="1.5"/>')
        out.append(f'<text x="{cx}" y="{_f(Y(c.concept) - 11)}" text-anchor="middle" font-weight="bold">'
                   f'chosen: {html.escape(c.kind)} {c.strength:g}x</text>')
    else:
        out.append(f'<text x="{px1 + 12}" y="{ly + 32}" fill="#b91c1c">nothing within budget</text>')
    out.append("</svg>")
    return "\n".join(out)
