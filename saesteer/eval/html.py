"""``report.html`` from a report card dict: tables and inline SVG charts, one file, readable offline."""

from __future__ import annotations

import html
import math
from typing import Any

from saesteer.eval import svg

ROWS = [  # (key, label, higher is better?)
    ("fms", "FMS (mean over labels)", True),
    ("max_abs_corr", "max |correlation| with a label (mean over alive units)", True),
    ("label_entropy_bits", "label entropy, bits (mean over alive units)", False),
    ("cone_containment", "concept-cone containment of probe directions (mean over labels)", True),
    ("faithfulness_r2", "faithfulness R²", True),
    ("uniqueness_fraction", "uniqueness fraction q*", True),
]


def _num(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return html.escape(str(v), quote=False)


def _table(rows: list[list[Any]], head: list[str]) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{_num(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def headline(card: dict[str, Any]) -> list[list[Any]]:
    """``[metric, SAE, neurons, source]`` rows (the seeds' features-vs-neurons comparison)."""
    mono = card["monosemanticity"]
    out = []
    for key, label, _ in ROWS:
        src = card["sources"].get(key, {})
        note = src.get("paper", "") + (" — saesteer's reading" if src.get("saesteers_reading") else "")
        out.append([label, mono["sae"][key], mono.get("neurons", {}).get(key, float("nan")), note])
    return out


def render(card: dict[str, Any], extra: str = "") -> str:
    """The report as one HTML page (``extra``: more HTML appended, e.g. a steering curve)."""
    sae, rec, sp, l0d = card["sae"], card["reconstruction"], card["sparsity"], card["l0_diagnostics"]
    parts = [f"<h1>SAE report card: {html.escape(str(sae['hook']))}</h1>",
             f"<p>{html.escape(sae['architecture'])} SAE, d_in {sae['d_in']}, d_sae {sae['d_sae']}"
             f"{', k ' + str(sae['k']) if sae.get('k') else ''}; {card['data']['rows']} tokens from "
             f"{card['data']['documents']} documents, labels: {html.escape(', '.join(card['data']['labels']))}.</p>",
             "<h2>Reconstruction</h2>",
             _table([[k, v] for k, v in rec.items()], ["metric", "value"]),
             "<h2>Sparsity</h2>",
             _table([["L0 mean", sp["l0_mean"]], ["L0 median", sp["l0_median"]], ["dead fraction", sp["dead_fraction"]],
                     ["density resolution (1/N)", sp["density_resolution"]]], ["metric", "value"]),
             svg.histogram(sp["l0_values"], title="L0 per token", xlabel="active features"),
             svg.histogram(sp["log10_density_alive"], title="feature density (alive features)",
                           xlabel="log10 density", log_y=True),
             "<h2>L0 diagnostics (Sparse but Wrong)</h2>",
             _table([[f"s_n (n = {l0d['n']})", l0d["s_n"]], ["decoder mean |cos|", l0d["decoder_mean_abs_cos"]]],
                    ["metric", "value"])]
    sweep = card.get("l0_sweep")
    if sweep:
        rows = sorted(sweep["rows"], key=lambda r: r["l0"])
        parts += [_table([[r["name"], r["l0"], r["s_n"]] for r in rows], ["SAE", "L0", "s_n"]),
                  svg.lines({"s_n": ([r["l0"] for r in rows], [r["s_n"] for r in rows])}, title="s_n against L0",
                            xlabel="L0", ylabel="s_n", vline=sweep["picked_l0"]),
                  f"<p>s_n is smallest at L0 {sweep['picked_l0']:.3g} ({html.escape(sweep['picked'])}).</p>"]
    parts += ["<h2>Monosemanticity: SAE features vs the neurons of the same hook</h2>",
              _table(headline(card), ["metric", "SAE", "neurons", "source"])]
    per = card["monosemanticity"]["sae"]["per_label"]
    nper = card["monosemanticity"].get("neurons", {}).get("per_label", {})
    parts.append(_table([[n, v["fms"], nper.get(n, {}).get("fms", float("nan")), v["best_feature"],
                          v["cone_containment"], nper.get(n, {}).get("cone_containment", float("nan"))]
                         for n, v in per.items()],
                        ["label", "FMS (SAE)", "FMS (neurons)", "best SAE feature", "cone (SAE)", "cone (neurons)"]))
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}table{border-collapse:collapse;"
             "margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}svg{margin:.5em 1em .5em 0}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>saesteer report</title><style>{style}</style>"
            f"</head><body>{''.join(parts)}{extra}</body></html>")
