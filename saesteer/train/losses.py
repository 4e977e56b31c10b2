"""The losses of the Gated, p-annealing, Matryoshka BatchTopK and Ordered trainers (used by
:class:`~saesteer.train.step.SAETrainer`), each stated with what it reproduces and what is saesteer's
reading. Shapes: ``x [N, d]``, latents ``[N, F]``; "sum sq" is ``sum_d (.)^2``.

**Gated** (Rajamanoharan et al. 2024, arXiv 2404.16014; dictionary_learning ``trainers/gdm.py``,
``GatedAutoEncoder``), reproduced: ``pi_gate = (x - b_dec) W_gate + b_gate``,
``pi_mag = (x - b_dec) (W_gate * exp(r_mag)) + b_mag`` (the r_mag weight tying, ``r_mag`` starts at 0),
``f = 1[pi_gate > 0] * ReLU(pi_mag)``, ``x_hat = f W_dec + b_dec``, and
``L = mean_n ||x - x_hat||^2 + lambda s(t) mean_n ||ReLU(pi_gate)||_1
+ mean_n ||x - (ReLU(pi_gate) W_dec^sg + b_dec^sg)||^2`` with ``^sg`` a detached (frozen) decoder.
The Heaviside gate has no straight-through estimator in the reference: ``W_gate`` learns through the
magnitude path (the tying), the L1 term and the auxiliary term. The paper's L1 weights each latent by
its decoder norm; the reference keeps decoder rows unit-norm (ConstrainedAdam) so that factor is 1,
and so is it here (rows are renormalised after every step). Not reproduced: the reference's zero
``b_dec`` init (saesteer's ``b_dec_init`` applies; pass ``"zeros"``) and its optimiser settings
(lr 5e-5, Adam betas (0, 0.999): pass them).

**p-annealing** (Karvonen et al. 2024, arXiv 2408.00113; dictionary_learning ``trainers/p_anneal.py``),
reproduced: a ReLU SAE ``f = ReLU((x - b_dec) W_enc + b_enc)`` with
``L = mean_n ||x - x_hat||^2 + alpha s(t) S_p(f)``, ``S_p = mean_n sum_i f_i^p`` (``Lp^p``) or
``mean_n (sum_i f_i^p)^(1/p)`` (``Lp``). :class:`PAnneal` is the reference's schedule, step for step:
switch steps ``linspace(anneal_start, anneal_end, n)`` (truncated to ints), p values
``linspace(p_start, p_end, n)`` (float32); the first switch sets p to p_start; once the next p is
known every batch logs ``(S_p, S_{p_next})`` into a queue of the last ``queue_length`` pairs (never
cleared); at each later switch ``alpha <- alpha * mean(S_p) / mean(S_{p_next})``. A switch happens
after the step's loss is computed, so its new p and alpha apply from the next step. As in the
reference, with ``anneal_end = steps`` the last switch would fall on step ``steps``, which never runs:
p stops at the next-to-last value.

**Matryoshka BatchTopK** (Bussmann et al. 2025; dictionary_learning
``trainers/matryoshka_batch_top_k.py``), reproduced: a batch-wide top ``k N`` selection, groups of
latents, prefix reconstructions ``x_hat_m = b_dec + sum_{g <= m} f_g W_dec,g``, loss
``mean_m (w_m mean_n ||x - x_hat_m||^2) + alpha AuxK`` (a mean of weighted terms, ``w_m = 1/#groups``
by default), AuxK on the detached residual of the full reconstruction, normalised by that residual's
variance, with ``k_aux = min(d_in / 2, #dead)`` (no ``#dead / k_aux`` factor, unlike saesteer's TopK
AuxK); inference by the EMA threshold of BatchTopK (see ``TrainConfig``).

**Ordered SAE** (OSAE, arXiv 2512.02194; paper text only, no public code): the loss over every prefix
length ``l = 1..F`` at once, ``sum_l p(l) ||x - x_hat_{<=l}||^2`` where ``x_hat_{<=l}`` decodes only
latents ``0..l-1``, evaluated in closed form. saesteer's reading, not the paper's confirmed
definition: the prefix weighting ``p(l) = 1 / F`` (uniform; :func:`ordered_prefix_cdf` is the one
place to change it), TopK (``k`` per token) as the sparsity mechanism, the loss in FVU units (divided
by the batch's total variance) and saesteer's TopK AuxK. Closed form: a token's residual only
changes at its ``k`` active latents, so with them sorted by index the ``F`` prefixes fall into
``k + 1`` runs sharing one residual; each run's weight is a difference of the cumulative weights
``P(l) = sum_{l' <= l} p(l')``, and the residuals are a cumulative sum of the ``k`` decoded rows.
Cost ``O(N k d)`` time and memory (``[N, k+1, d]``), not ``O(N F d)``.
"""

from __future__ import annotations

from typing import Any

import torch

from saesteer.train import ops
from saesteer.train.config import TrainConfig


# ------------------------------------------------------------------------------ gated
def gated_forward(p: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(f, relu_gate, x_hat)`` of the Gated SAE with parameters ``p`` (``W_enc`` is ``W_gate``).
    Cost: one dense ``N x d x F`` matmul (shared by both paths) and one decode."""
    x_enc = (x - p["b_dec"]) @ p["W_enc"]
    pi_gate = x_enc + p["b_gate"]
    pi_mag = p["r_mag"].exp() * x_enc + p["b_mag"]  # = (x - b_dec) (W_gate * exp(r_mag)) + b_mag
    f = (pi_gate > 0).to(x.dtype) * torch.relu(pi_mag)
    return f, torch.relu(pi_gate), f @ p["W_dec"] + p["b_dec"]


def gated_loss(p: Any, x: torch.Tensor, coefficient: float) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """``(loss, f, parts)``: the gdm loss with ``coefficient = lambda * s(t)``; ``parts`` holds
    ``x_hat`` and the three terms (``recon``, ``sparsity``, ``aux``) as tensors."""
    f, gate, x_hat = gated_forward(p, x)
    recon = (x - x_hat).pow(2).sum(-1).mean()
    sparsity = gate.sum(-1).mean()  # ||ReLU(pi_gate)||_1: the entries are >= 0
    x_gate = gate @ p["W_dec"].detach() + p["b_dec"].detach()
    aux = (x - x_gate).pow(2).sum(-1).mean()
    loss = recon + coefficient * sparsity + aux
    return loss, f, {"x_hat": x_hat, "recon": recon, "sparsity": sparsity, "aux": aux}


# ------------------------------------------------------------------------------ p-annealing
def lp_penalty(f: torch.Tensor, p: float, function: str) -> torch.Tensor:
    """``mean_n sum_i f_i^p`` (``Lp^p``) or ``mean_n (sum_i f_i^p)^(1/p)`` (``Lp``) of ``f >= 0``."""
    s = f.pow(p).sum(-1)
    return s.mean() if function == "Lp^p" else s.pow(1 / p).mean()


class PAnneal:
    """The p-annealing schedule of dictionary_learning's ``PAnnealTrainer`` (see the module note):
    its state is ``p``, ``next_p``, ``count`` (switches made), ``coefficient`` (alpha) and ``queue``."""

    def __init__(self, cfg: TrainConfig) -> None:
        steps = cfg.steps
        start = cfg.anneal_start if cfg.anneal_start is not None else min(15000, steps // 2)
        end = cfg.anneal_end if cfg.anneal_end is not None else steps
        n = cfg.n_sparsity_updates
        self.function = cfg.sparsity_function
        self.queue_length = cfg.sparsity_queue_length
        self.p_end = float(cfg.p_end)
        self.update_steps = torch.linspace(start, end, n, dtype=torch.long).tolist()
        self.p_values = torch.linspace(cfg.p_start, cfg.p_end, n).tolist()  # float32 values, as the reference
        self.p: float = float(cfg.p_start)
        self.next_p: float | None = None
        self.count = 0
        self.coefficient = float(cfg.sparsity_coefficient)
        self.queue: list[list[float]] = []

    def penalty(self, f: torch.Tensor, step: int, reduce: Any = None) -> tuple[torch.Tensor, float, float]:
        """``(S_p(f), alpha, p)`` for step ``step``'s loss (alpha and p before this step's switch, if
        any), then the reference's bookkeeping: log ``(S_p, S_next)``, switch at a switch step.
        ``reduce``: turns this batch's (detached) S values into the global batch's (under DDP)."""
        lp = lp_penalty(f, self.p, self.function)
        alpha, p_used = self.coefficient, self.p
        if self.next_p is not None:
            with torch.no_grad():
                nxt = lp_penalty(f, self.next_p, self.function)
                pair = torch.stack([lp.detach(), nxt])
                pair = reduce(pair) if reduce is not None else pair
            self.queue.append([float(pair[0]), float(pair[1])])
            self.queue = self.queue[-self.queue_length:]
        n = len(self.p_values)
        if step in self.update_steps and self.count < n and step >= self.update_steps[self.count]:
            if self.next_p is not None:
                cur = torch.tensor([q[0] for q in self.queue]).mean()
                new = torch.tensor([q[1] for q in self.queue]).mean()
                self.coefficient = self.coefficient * (cur / new).item()
            self.p = self.p_values[self.count]
            self.next_p = self.p_values[self.count + 1] if self.count < n - 1 else self.p_end
            self.count += 1
        return lp, alpha, p_used

    def state(self) -> dict[str, Any]:
        return {"p": self.p, "next_p": self.next_p, "count": self.count, "coefficient": self.coefficient,
                "queue": [list(q) for q in self.queue]}

    def load(self, s: dict[str, Any]) -> None:
        self.p, self.next_p, self.count = float(s["p"]), s["next_p"], int(s["count"])
        self.coefficient = float(s["coefficient"])
        self.queue = [[float(a), float(b)] for a, b in s["queue"]]


# ------------------------------------------------------------------------------ matryoshka
def matryoshka_recon(sel: ops.Selection, vals: torch.Tensor, x: torch.Tensor, W_dec: torch.Tensor,
                     b_dec: torch.Tensor, group_of: torch.Tensor, weights: list[float]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean_m w_m mean_n ||x - x_hat_m||^2, x_hat_full)`` for the prefix reconstructions of the
    groups (``group_of [F]``: each latent's group). Cost: one ``O(M d)`` sparse decode per group."""
    G = len(weights)
    gcol = group_of[sel.cols]
    x_hat = b_dec.expand_as(x)
    terms = []
    for m in range(G):
        x_hat = x_hat + ops.sparse_decode(sel, vals * (gcol == m).to(vals.dtype), W_dec)
        terms.append((x - x_hat).pow(2).sum(-1).mean() * weights[m])
    return torch.stack(terms).mean(), x_hat


def matryoshka_auxk(e_hat: torch.Tensor, e: torch.Tensor, e_var: torch.Tensor | None = None) -> torch.Tensor:
    """dictionary_learning's Matryoshka AuxK: ``mean_n ||e - e_hat||^2 / mean_n ||e - mean(e)||^2``
    (``e`` the detached residual of the full reconstruction), 0 where that is not finite. ``e_var``: the
    denominator given (under DDP, the global batch's), else computed from ``e``."""
    num = (e - e_hat).pow(2).sum(-1).mean()
    den = (e - e.mean(0, keepdim=True)).pow(2).sum(-1).mean() if e_var is None else e_var
    return (num / den).nan_to_num(0.0)


# ------------------------------------------------------------------------------ ordered
def ordered_prefix_cdf(d_sae: int, device: torch.device | None = None) -> torch.Tensor:
    """``P [F + 1]``: ``P[l] = sum_{l' <= l} p(l')`` of the prefix weighting, ``P[0] = 0``. saesteer's
    reading of OSAE: uniform ``p(l) = 1 / F`` (the paper's distribution is not confirmed)."""
    return torch.arange(d_sae + 1, dtype=torch.float32, device=device) / d_sae


def ordered_recon(sel: ops.Selection, vals: torch.Tensor, x: torch.Tensor, W_dec: torch.Tensor,
                  b_dec: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum_n sum_l p(l) ||x_n - x_hat_{n,<=l}||^2, x_hat_full)`` in closed form for a TopK selection
    of ``k`` latents per row (see the module note). Cost ``O(N k d)``."""
    n, F = x.shape[0], W_dec.shape[0]
    cols = sel.cols.reshape(n, k)
    order = cols.argsort(dim=1)
    cols = cols.gather(1, order)
    v = vals.reshape(n, k).gather(1, order)
    c = torch.cumsum(v.unsqueeze(-1) * W_dec[cols], dim=1)  # [N, k, d]: decoded first m active latents
    r0 = x - b_dec
    r = torch.cat([r0.unsqueeze(1), r0.unsqueeze(1) - c], dim=1)  # [N, k+1, d]: residual of each run
    P = ordered_prefix_cdf(F, x.device)
    zero = torch.zeros(n, 1, dtype=torch.long, device=x.device)
    full = torch.full((n, 1), F, dtype=torch.long, device=x.device)
    bounds = torch.cat([zero, cols, full], dim=1)  # run m covers prefixes l in (bounds[m], bounds[m+1]]
    w = P[bounds[:, 1:]] - P[bounds[:, :-1]]  # [N, k+1]
    return (w * r.pow(2).sum(-1)).sum(), b_dec + c[:, -1]
