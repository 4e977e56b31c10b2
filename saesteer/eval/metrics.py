"""The report card's metrics, as plain tensor functions (no model, no SAE object unless named).

Conventions: ``x [N, d]`` activations (one row per token or image), ``x_hat`` their reconstruction,
``f [N, F]`` codes (SAE features, or the neuron basis' latents), ``labels [N]`` integer classes.
Every function says which paper it follows; where SEED_METHODS.md marks a definition as unconfirmed,
the docstring says "saesteer's reading". All sums run in float64.
"""

from __future__ import annotations

import math

import torch


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Fraction of variance unexplained: ``sum ||x - x_hat||^2 / sum ||x - mean(x)||^2``."""
    x, x_hat = x.double(), x_hat.double()
    den = float(((x - x.mean(0)) ** 2).sum())
    return float(((x - x_hat) ** 2).sum()) / den if den > 0 else float("nan")


def inliers(x: torch.Tensor, q: float = 0.99) -> torch.Tensor:
    """Mask of the rows whose norm is at most the ``q`` quantile of the norms (drops the few massive
    activations, e.g. attention-sink tokens, that dominate a plain FVU)."""
    n = x.double().norm(dim=-1)
    return n <= torch.quantile(n, q)


def faithfulness_r2(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Atoms' faithfulness ("sparse reconstruction") R^2 = ``1 - sum ||x - x_hat||^2 / sum ||x - mean||^2``,
    i.e. ``1 - FVU`` (saesteer's reading of Hu et al. 2025: SEED_METHODS.md section 6)."""
    return 1.0 - fvu(x, x_hat)


def l0_per_row(f: torch.Tensor) -> torch.Tensor:
    """How many features are active (non-zero) in each row: ``[N]``."""
    return (f != 0).sum(-1)


def density(f: torch.Tensor) -> torch.Tensor:
    """Per feature, the fraction of rows where it is active: ``[F]``."""
    return (f != 0).double().mean(0)


def dead_fraction(f: torch.Tensor) -> float:
    """The fraction of features active in no row (``1/N`` is the smallest non-zero density seen)."""
    return float((density(f) == 0).double().mean())


def nth_decoder_projection(x: torch.Tensor, W_dec: torch.Tensor, b_dec: torch.Tensor | None, n: int,
                           batch: int = 4096) -> float:
    """Sparse but Wrong's proxy ``s_n`` (Chanin & Garriga-Alonso 2025, as their
    ``nth_decoder_projection.py``): per batch of ``B`` rows, ``H = (x - b_dec) W_dec^T`` flattened and
    sorted descending, ``s_n = H[n * B]``; averaged over batches. A last batch too small for index
    ``n * B`` is dropped. Sweep SAEs over L0 and pick the L0 that minimises it."""
    vals = []
    for i in range(0, x.shape[0], batch):
        xb = x[i:i + batch].double()
        B = xb.shape[0]
        if n * B >= B * W_dec.shape[0] or (vals and B < batch):
            continue
        h = (xb - (b_dec.double() if b_dec is not None else 0.0)) @ W_dec.double().T
        vals.append(float(torch.sort(h.flatten(), descending=True).values[n * B]))
    if not vals:
        raise ValueError(f"s_n needs n < d_sae ({W_dec.shape[0]}), got n={n}")
    return sum(vals) / len(vals)


def decoder_pairwise_cos(W_dec: torch.Tensor, chunk: int = 2048) -> float:
    """Mean ``|cos|`` over all pairs of decoder rows (the upper triangle), Sparse but Wrong's second
    proxy. Cost: a ``[F, F]`` Gram matrix in chunks."""
    W = W_dec.double()
    W = W / W.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    F = W.shape[0]
    total = 0.0
    for i in range(0, F, chunk):
        g = (W[i:i + chunk] @ W.T).abs()
        rows = torch.arange(i, min(i + chunk, F)).unsqueeze(1)
        total += float(g[torch.arange(F).unsqueeze(0) > rows].sum())
    return total / (F * (F - 1) / 2)


def mutual_coherence(W_dec: torch.Tensor, chunk: int = 2048) -> float:
    """``max_{i != j} |cos(d_i, d_j)|`` over decoder rows."""
    W = W_dec.double()
    W = W / W.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    best = 0.0
    for i in range(0, W.shape[0], chunk):
        g = (W[i:i + chunk] @ W.T).abs()
        idx = torch.arange(i, min(i + chunk, W.shape[0]))
        g[idx - i, idx] = 0.0
        best = max(best, float(g.max()))
    return best


def uniqueness_fraction(f: torch.Tensor, W_dec: torch.Tensor) -> tuple[float, float]:
    """Atoms' stability ``q*``: the fraction of rows whose code satisfies ``||f||_0 < (1 + 1/mu) / 2``,
    ``mu`` the mutual coherence of the dictionary. Returns ``(fraction, mu)``. saesteer's reading of
    Hu et al. 2025 (SEED_METHODS.md section 6): the plain Euclidean coherence, not the paper's
    unconfirmed atomic inner product."""
    mu = mutual_coherence(W_dec)
    bound = (1 + 1 / mu) / 2 if mu > 0 else math.inf
    return float((l0_per_row(f).double() < bound).double().mean()), mu


def _onehot(labels: torch.Tensor, n_classes: int | None = None) -> torch.Tensor:
    C = int(labels.max()) + 1 if n_classes is None else n_classes
    return torch.nn.functional.one_hot(labels.long(), C).double()


def label_correlation(f: torch.Tensor, labels: torch.Tensor, n_classes: int | None = None) -> torch.Tensor:
    """Pearson (point-biserial) correlation of every feature with every one-hot label: ``[F, C]``
    (0 where a feature or a label is constant). MedSAE's correlation analysis (saesteer's reading of
    Renzulli et al. 2025, SEED_METHODS.md section 8)."""
    a = f.double()
    y = _onehot(labels, n_classes)
    a = a - a.mean(0)
    y = y - y.mean(0)
    cov = a.T @ y / a.shape[0]
    sd = a.pow(2).mean(0).sqrt().unsqueeze(1) * y.pow(2).mean(0).sqrt().unsqueeze(0)
    return torch.where(sd > 0, cov / sd.clamp_min(1e-300), torch.zeros_like(cov))


def max_abs_correlation(f: torch.Tensor, labels: torch.Tensor, n_classes: int | None = None) -> torch.Tensor:
    """Per feature, ``max_c |r(feature, label c)|``: ``[F]``."""
    return label_correlation(f, labels, n_classes).abs().max(1).values


def label_entropy(f: torch.Tensor, labels: torch.Tensor, n_classes: int | None = None) -> torch.Tensor:
    """Per feature, the Shannon entropy (bits) of its mean activation per label normalised into a
    distribution over labels (lower: more monosemantic); NaN for a feature inactive everywhere. Uses
    ``|f|`` so signed neurons count too. saesteer's reading of MedSAE (SEED_METHODS.md section 8)."""
    y = _onehot(labels, n_classes)
    counts = y.sum(0).clamp_min(1)
    means = (f.double().abs().T @ y) / counts  # [F, C]
    tot = means.sum(1, keepdim=True)
    p = means / tot.clamp_min(1e-300)
    h = -(torch.where(p > 0, p * p.clamp_min(1e-300).log2(), torch.zeros_like(p))).sum(1)
    return torch.where(tot.squeeze(1) > 0, h, torch.full_like(h, float("nan")))


def nnls(A: torch.Tensor, b: torch.Tensor, iters: int = 2000) -> torch.Tensor:
    """``argmin_{a >= 0} ||A a - b||`` by projected gradient with Nesterov momentum (``A [d, s]``,
    small ``s``); accurate to ~1e-8 relative on well-conditioned problems."""
    A, b = A.double(), b.double()
    L = float(torch.linalg.matrix_norm(A, ord=2)) ** 2
    if L == 0:
        return torch.zeros(A.shape[1], dtype=torch.float64)
    a = torch.zeros(A.shape[1], dtype=torch.float64)
    z, t = a.clone(), 1.0
    AtA, Atb = A.T @ A, A.T @ b
    for _ in range(iters):
        a_new = (z - (AtA @ z - Atb) / L).clamp_min(0)
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        z = a_new + (t - 1) / t_new * (a_new - a)
        a, t = a_new, t_new
    return a


def cone_containment(W_dec: torch.Tensor, c: torch.Tensor, top: int = 32) -> float:
    """How much of direction ``c`` the cone of the SAE's atoms contains: ``1 - ||c - D^T a|| / ||c||``
    with ``a >= 0`` the NNLS fit over the ``top`` atoms most aligned with ``c`` (unit-norm rows of
    ``W_dec``). 1: ``c`` is a non-negative combination of ``top`` atoms; 0: none points its way.
    saesteer's reading of the concept-cones paper (SEED_METHODS.md section 7: the NNLS form is the
    implementation proposal)."""
    D = W_dec.double()
    D = D / D.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    c = c.double()
    cn = float(c.norm())
    if cn == 0:
        return float("nan")
    idx = (D @ c).topk(min(top, D.shape[0])).indices
    A = D[idx].T
    a = nnls(A, c)
    return 1.0 - float((c - A @ a).norm()) / cn


def probe_directions(x: torch.Tensor, labels: torch.Tensor, n_classes: int | None = None, steps: int = 300,
                     l2: float = 1e-3, seed: int = 0) -> torch.Tensor:
    """One-vs-rest logistic-regression probe per label on standardised ``x``: ``[C, d]`` unit directions
    in the activation space (weights mapped back through the standardisation). Cost: ``steps`` full-batch
    L-BFGS iterations on ``[N, d]``."""
    torch.manual_seed(seed)
    y = _onehot(labels, n_classes).float()
    mu, sd = x.float().mean(0), x.float().std(0).clamp_min(1e-6)
    z = (x.float() - mu) / sd
    W = torch.zeros(z.shape[1], y.shape[1], requires_grad=True)
    b = torch.zeros(y.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ W + b, y) + l2 * W.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w = (W.detach() / sd.unsqueeze(1)).T.double()  # the direction in x's own coordinates
    return w / w.norm(dim=-1, keepdim=True).clamp_min(1e-30)
