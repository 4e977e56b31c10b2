"""Small self-contained SVG charts for the report card (no plotting library; the report reads offline)."""

from __future__ import annotations

import html
import math
from typing import Sequence

W, H, PAD = 420, 240, 44
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _frame(title: str, xlabel: str, ylabel: str, x0: float, x1: float, y0: float, y1: float) -> list[str]:
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           f'font-family="sans-serif" font-size="10">',
           f'<text x="{W / 2}" y="14" text-anchor="middle" font-size="12">{html.escape(title)}</text>',
           f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 10}" y2="{H - PAD}" stroke="#333"/>',
           f'<line x1="{PAD}" y1="22" x2="{PAD}" y2="{H - PAD}" stroke="#333"/>',
           f'<text x="{(W + PAD) / 2}" y="{H - 8}" text-anchor="middle">{html.escape(xlabel)}</text>',
           f'<text x="12" y="{H / 2}" text-anchor="middle" transform="rotate(-90 12 {H / 2})">{html.escape(ylabel)}</text>']
    for t in range(5):
        fx, fy = t / 4, t / 4
        xv, yv = x0 + fx * (x1 - x0), y0 + fy * (y1 - y0)
        px, py = PAD + fx * (W - 10 - PAD), H - PAD - fy * (H - PAD - 22)
        out.append(f'<text x="{px:.1f}" y="{H - PAD + 12}" text-anchor="middle">{_fmt(xv)}</text>')
        out.append(f'<text x="{PAD - 4}" y="{py + 3:.1f}" text-anchor="end">{_fmt(yv)}</text>')
    return out


def _scale(v: float, lo: float, hi: float, a: float, b: float) -> float:
    return a + (v - lo) / (hi - lo) * (b - a) if hi > lo else (a + b) / 2


def histogram(values: Sequence[float], *, bins: int = 30, title: str = "", xlabel: str = "", log_y: bool = False) -> str:
    """Bars of the counts of ``values`` in ``bins`` equal bins (``log_y``: log10(1 + count))."""
    vals = [float(v) for v in values if math.isfinite(float(v))]
    if not vals:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="40"><text x="4" y="20">{html.escape(title)}: no data</text></svg>'
    lo, hi = min(vals), max(vals)
    hi = hi if hi > lo else lo + 1
    counts = [0] * bins
    for v in vals:
        counts[min(int((v - lo) / (hi - lo) * bins), bins - 1)] += 1
    ys = [math.log10(1 + c) if log_y else c for c in counts]
    top = max(ys) or 1
    out = _frame(title, xlabel, "log10(1 + count)" if log_y else "count", lo, hi, 0, top)
    bw = (W - 10 - PAD) / bins
    for i, y in enumerate(ys):
        h = _scale(y, 0, top, 0, H - PAD - 22)
        out.append(f'<rect x="{PAD + i * bw:.1f}" y="{H - PAD - h:.1f}" width="{max(bw - 1, 1):.1f}" height="{h:.1f}" '
                   f'fill="{COLOURS[0]}"/>')
    out.append("</svg>")
    return "\n".join(out)


def lines(series: dict[str, tuple[Sequence[float], Sequence[float]]], *, title: str = "", xlabel: str = "",
          ylabel: str = "", mark: tuple[float, float] | None = None, hline: float | None = None,
          vline: float | None = None) -> str:
    """One polyline with dots per series (name -> (xs, ys)), a legend, an optional marked point and
    horizontal/vertical reference lines."""
    pts = [(float(x), float(y)) for xs, ys in series.values() for x, y in zip(xs, ys)
           if math.isfinite(float(x)) and math.isfinite(float(y))]
    extra_y = [hline] if hline is not None else []
    extra_x = [vline] if vline is not None else []
    if not pts:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="40"><text x="4" y="20">{html.escape(title)}: no data</text></svg>'
    x0, x1 = min([p[0] for p in pts] + extra_x), max([p[0] for p in pts] + extra_x)
    y0, y1 = min([p[1] for p in pts] + extra_y), max([p[1] for p in pts] + extra_y)
    pad_y = (y1 - y0) * 0.05 or 1.0
    y0, y1 = y0 - pad_y, y1 + pad_y
    out = _frame(title, xlabel, ylabel, x0, x1, y0, y1)

    def px(x: float) -> float:
        return _scale(x, x0, x1, PAD, W - 10)

    def py(y: float) -> float:
        return _scale(y, y0, y1, H - PAD, 22)

    if hline is not None:
        out.append(f'<line x1="{PAD}" y1="{py(hline):.1f}" x2="{W - 10}" y2="{py(hline):.1f}" stroke="#999" stroke-dasharray="4 3"/>')
    if vline is not None:
        out.append(f'<line x1="{px(vline):.1f}" y1="22" x2="{px(vline):.1f}" y2="{H - PAD}" stroke="#999" stroke-dasharray="4 3"/>')
    for k, (name, (xs, ys)) in enumerate(series.items()):
        c = COLOURS[k % len(COLOURS)]
        p = [(px(float(x)), py(float(y))) for x, y in zip(xs, ys) if math.isfinite(float(x)) and math.isfinite(float(y))]
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in p)}"/>')
        out += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.5" fill="{c}"/>' for a, b in p]
        out.append(f'<text x="{W - 14}" y="{30 + 12 * k}" text-anchor="end" fill="{c}">{html.escape(name)}</text>')
    if mark is not None:
        out.append(f'<circle cx="{px(mark[0]):.1f}" cy="{py(mark[1]):.1f}" r="6" fill="none" stroke="#000" stroke-width="1.5"/>')
    out.append("</svg>")
    return "\n".join(out)
