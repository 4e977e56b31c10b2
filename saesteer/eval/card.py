"""The report card's numbers: one SAE at one hook, on labelled text, beside the raw neurons of that hook.

:func:`report_card` returns a JSON-ready dict (``report.json``); :mod:`saesteer.eval.html` renders it.
Sections: reconstruction (FVU on all tokens and inliers, CE-loss recovered, KL at the spliced layer),
sparsity (L0, densities, dead fraction), L0 diagnostics (Sparse but Wrong's ``s_n`` and decoder ``|cos|``),
and monosemanticity for the SAE's features AND the neuron basis of the same hook (FMS, max |correlation|
with labels, label entropy, concept-cone containment of probe directions, faithfulness R^2 and the
uniqueness fraction). Which definitions are saesteer's reading of a paper is said per metric.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Sequence

import torch

from saesteer.eval import metrics as M
from saesteer.eval.collect import Activations
from saesteer.eval.fms import fms
from saesteer.sae.module import SAE

#: metric -> (paper, saesteer's reading?) shown next to each figure
SOURCES = {
    "fms": ("G-SAE (Härle et al. 2025)", True),
    "max_abs_corr": ("MedSAE (Renzulli et al. 2025)", True),
    "label_entropy_bits": ("MedSAE (Renzulli et al. 2025)", True),
    "cone_containment": ("Concept cones (Rocchi-Henry et al. 2025)", True),
    "faithfulness_r2": ("Towards Atoms (Hu et al. 2025)", True),
    "uniqueness_fraction": ("Towards Atoms (Hu et al. 2025)", True),
    "s_n": ("Sparse but Wrong (Chanin & Garriga-Alonso 2025)", False),
    "decoder_mean_abs_cos": ("Sparse but Wrong (Chanin & Garriga-Alonso 2025)", False),
}


@torch.no_grad()
def codes(sae: SAE, x: torch.Tensor, batch: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """``(f, x_hat)`` of ``x [N, d]`` in the SAE's dtype, batched; returned as float32 on the CPU."""
    fs, xs = [], []
    for i in range(0, x.shape[0], batch):
        xb = x[i:i + batch].to(sae.device, sae.dtype)
        f = sae.encode(xb)
        fs.append(f.float().cpu())
        xs.append(sae(xb).float().cpu())  # decode with the input's own normalisation undone
    return torch.cat(fs), torch.cat(xs)


def sparsity(f: torch.Tensor) -> dict[str, Any]:
    l0 = M.l0_per_row(f).double()
    dens = M.density(f)
    alive = dens[dens > 0]
    return {"l0_mean": float(l0.mean()), "l0_median": float(l0.median()), "l0_values": l0.tolist(),
            "dead_fraction": M.dead_fraction(f), "density_resolution": 1.0 / f.shape[0],
            "log10_density_alive": alive.log10().tolist()}


def l0_diagnostics(sae: SAE, x: torch.Tensor, n: int | None = None) -> dict[str, Any]:
    """``s_n`` (``n`` defaults to ``d_sae // 4``, below the ``d_sae / 2`` Sparse but Wrong advises) and the
    mean decoder pairwise ``|cos|``."""
    n = max(1, sae.d_sae // 4) if n is None else n
    b_dec = sae.b_dec if sae.cfg.apply_b_dec_to_input else None
    return {"n": n, "s_n": M.nth_decoder_projection(x, sae.W_dec.detach().cpu(), None if b_dec is None else
                                                     b_dec.detach().cpu(), n),
            "decoder_mean_abs_cos": M.decoder_pairwise_cos(sae.W_dec.detach().cpu())}


def l0_sweep(saes: Sequence[tuple[str, SAE]], x: torch.Tensor, n: int | None = None) -> dict[str, Any]:
    """Several SAEs of one hook: their L0 and ``s_n`` (one shared ``n``), and the L0 that minimises ``s_n``
    (Sparse but Wrong's choice)."""
    n = max(1, min(s.d_sae for _, s in saes) // 4) if n is None else n
    rows = []
    for name, sae in saes:
        f, _ = codes(sae, x)
        rows.append({"name": name, "l0": float(M.l0_per_row(f).double().mean()),
                     "s_n": l0_diagnostics(sae, x, n)["s_n"]})
    best = min(rows, key=lambda r: r["s_n"])
    return {"n": n, "rows": rows, "picked": best["name"], "picked_l0": best["l0"]}


def monosemanticity(f: torch.Tensor, x: torch.Tensor, x_hat: torch.Tensor, W_dec: torch.Tensor,
                    acts: Activations, probes: torch.Tensor, *, depth: int = 3) -> dict[str, Any]:
    """Every monosemanticity metric for one basis (SAE features or neuron latents) on ``acts``."""
    C = len(acts.names)
    alive = M.density(f) > 0
    fa = f[:, alive]
    per_label = {}
    fms_vals = []
    for c, name in enumerate(acts.names):
        y = (acts.labels == c).long()
        if y.sum() == 0 or y.sum() == y.numel():
            continue
        r = fms(fa, y, depth=depth)
        fms_vals.append(r.fms)
        per_label[name] = {"fms": r.fms, "a0": r.a0, "local": r.local, "global": r.global_,
                           "best_feature": int(alive.nonzero()[r.feature]),
                           "cone_containment": M.cone_containment(W_dec, probes[c])}
    corr = M.max_abs_correlation(fa, acts.labels, C)
    ent = M.label_entropy(fa, acts.labels, C)
    uniq, mu = M.uniqueness_fraction(f, W_dec)
    cones = [v["cone_containment"] for v in per_label.values()]
    return {
        "fms": statistics.fmean(fms_vals) if fms_vals else math.nan,
        "max_abs_corr": float(corr.mean()), "max_abs_corr_top": float(corr.max()),
        "label_entropy_bits": float(ent[~ent.isnan()].mean()), "label_entropy_max_bits": math.log2(C),
        "cone_containment": statistics.fmean(cones) if cones else math.nan,
        "faithfulness_r2": M.faithfulness_r2(x, x_hat),
        "uniqueness_fraction": uniq, "mutual_coherence": mu,
        "alive": int(alive.sum()), "per_label": per_label,
    }


def report_card(sae: SAE, acts: Activations, *, reconstruction: dict[str, float] | None = None,
                sweep: Sequence[tuple[str, SAE]] = (), neurons: bool = True, depth: int = 3, n: int | None = None,
                progress: bool = True) -> dict[str, Any]:
    """The report as a dict. ``acts`` come from :func:`saesteer.eval.collect.collect`; ``reconstruction``
    from :func:`saesteer.train.metrics.evaluate_sae` (CE, KL: they need the model). Cost: an encode of
    ``acts``, a ``[F, F]`` Gram matrix, one sort of ``[N, F]`` per label (FMS) and, for the neurons, the
    same on ``2 d`` latents."""
    from tqdm.auto import tqdm

    from saesteer.featureedit.neurons import neuron_basis

    steps = tqdm(total=3 + int(neurons) + int(bool(sweep)), desc="report card", disable=not progress)
    x = acts.x
    f, x_hat = codes(sae, x)
    inl = M.inliers(x)
    rec = {"fvu": M.fvu(x, x_hat), "fvu_inliers": M.fvu(x[inl], x_hat[inl]), "inlier_quantile": 0.99,
           **(reconstruction or {})}
    steps.update()
    out: dict[str, Any] = {
        "sae": {"hook": sae.cfg.hook_name, "architecture": sae.cfg.architecture, "d_in": sae.d_in, "d_sae": sae.d_sae,
                "k": sae.cfg.k},
        "data": {"rows": int(x.shape[0]), "documents": int(acts.doc.unique().numel()), "labels": acts.names,
                 "rows_per_label": [int((acts.labels == c).sum()) for c in range(len(acts.names))]},
        "reconstruction": rec, "sparsity": sparsity(f), "l0_diagnostics": l0_diagnostics(sae, x, n),
        "sources": {k: {"paper": p, "saesteers_reading": r} for k, p, r in ((k, *v) for k, v in SOURCES.items())},
    }
    steps.update()
    probes = M.probe_directions(x, acts.labels, len(acts.names))
    out["monosemanticity"] = {"sae": monosemanticity(f, x, x_hat, sae.W_dec.detach().cpu().float(), acts, probes,
                                                     depth=depth)}
    steps.update()
    if neurons:
        nb = neuron_basis(sae.d_in)
        fn, xn = codes(nb, x)
        out["monosemanticity"]["neurons"] = monosemanticity(fn, x, xn, nb.W_dec.detach().float(), acts, probes, depth=depth)
        steps.update()
    if sweep:
        out["l0_sweep"] = l0_sweep(sweep, x, n)
        steps.update()
    steps.close()
    return out
