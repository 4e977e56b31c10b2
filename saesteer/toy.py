"""The toy ground truth of "Sparse but Wrong" (Chanin & Garriga-Alonso, arXiv 2508.16560): activations
built from known sparse features, so an SAE's decoder can be scored against the true directions.

>>> x, directions, true_l0 = toy_activations(100_000)      # x [100000, 100], directions [50, 100]
>>> firing_probabilities()                                  # p_i = 0.345 (49 - i) / 50 + 0.05

The setting is the paper's toy model as SEED_METHODS.md section 2 records it from the paper's code
(chanind/sparse-but-wrong-paper, ``toy_models/``):

- 50 true features embedded in 100 dimensions, with orthonormal directions (cosine 0 between any two);
- feature ``i`` (``i = 0..49``) fires with probability ``0.345 (49 - i) / 50 + 0.05``;
- a firing feature has magnitude ``ReLU(1 + N(0, 0.15))``;
- firing is correlated through a Gaussian copula: ``z ~ MVN(0, C)``, feature ``i`` fires when
  ``z_i > Phi^-1(1 - p_i)``; ``C`` is random with pair strengths ``U(0.3, 0.9)``, half of them
  positive, 30 % of the pairs uncorrelated, projected to PSD (eigenvalues >= 1e-6) and rescaled to a
  unit diagonal;
- seed 42; the true L0 (mean number of firing features per sample) is about 11.

What is saesteer's own: the random-number stream. The paper's code draws with its own generator
calls, so the directions, the correlation matrix and the samples here are not the paper's numbers,
only the same distribution; ``seed`` fixes saesteer's stream (CPU ``torch.Generator``, float64).
"""

from __future__ import annotations

import torch

N_FEATURES = 50
D_MODEL = 100
SEED = 42
MAGNITUDE_STD = 0.15
#: rows drawn per chunk (memory stays about 1M rows of float64 at a time)
_CHUNK = 1 << 20


def firing_probabilities(n_features: int = N_FEATURES) -> torch.Tensor:
    """The marginal firing probability of each true feature, float64 ``[n_features]``:
    ``0.345 (49 - i) / 50 + 0.05`` (from 0.3881 for feature 0 down to 0.05 for feature 49)."""
    return torch.tensor([0.345 * (49 - i) / 50 + 0.05 for i in range(n_features)], dtype=torch.float64)


def _setup(g: torch.Generator, n_feat: int, d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Directions ``[n_feat, d]`` (float32, orthonormal rows), the copula's Cholesky factor and the
    per-feature thresholds on its standard-normal marginals, drawn from ``g`` in this order."""
    D = torch.linalg.qr(torch.randn(d, n_feat, generator=g, dtype=torch.float64))[0].T.float()
    p = firing_probabilities(n_feat)
    C = torch.zeros(n_feat, n_feat, dtype=torch.float64)
    iu = torch.triu_indices(n_feat, n_feat, 1)
    s = torch.empty(iu.shape[1], dtype=torch.float64).uniform_(0.3, 0.9, generator=g)
    s = s * torch.where(torch.rand(iu.shape[1], generator=g, dtype=torch.float64) < 0.5, 1.0, -1.0)
    s = s * (torch.rand(iu.shape[1], generator=g, dtype=torch.float64) >= 0.3)
    C[iu[0], iu[1]] = s
    C = C + C.T + torch.eye(n_feat, dtype=torch.float64)
    w, V = torch.linalg.eigh(C)
    C = V @ torch.diag(w.clamp_min(1e-6)) @ V.T
    dd = C.diag().sqrt()
    C = C / dd[:, None] / dd[None, :]
    L = torch.linalg.cholesky(C + 1e-9 * torch.eye(n_feat, dtype=torch.float64))
    thr = torch.distributions.Normal(0.0, 1.0).icdf(1 - p)
    return D, L, thr


def _chunks(n_samples: int, seed: int, sample_seed: int | None, n_feat: int, d: int):
    """``(directions, iterator of feature-activation chunks)``: the directions and copula come from
    ``seed``; the samples continue that stream, or come from ``sample_seed`` when it is given."""
    g = torch.Generator().manual_seed(seed)
    D, L, thr = _setup(g, n_feat, d)
    if sample_seed is not None:
        g = torch.Generator().manual_seed(sample_seed)

    def it():
        for lo in range(0, n_samples, _CHUNK):
            m = min(_CHUNK, n_samples - lo)
            z = torch.randn(m, n_feat, generator=g, dtype=torch.float64) @ L.T
            mag = (1 + MAGNITUDE_STD * torch.randn(m, n_feat, generator=g, dtype=torch.float64)).clamp_min(0)
            yield ((z > thr) * mag).float()

    return D, it()


def toy_features(n_samples: int, seed: int = SEED, *, sample_seed: int | None = None,
                 n_features: int = N_FEATURES, d_model: int = D_MODEL) -> tuple[torch.Tensor, torch.Tensor]:
    """The true feature activations ``f [n_samples, n_features]`` (float32, zero where a feature is
    off) and the directions ``[n_features, d_model]``; ``x = f @ directions`` (row by row; see
    :func:`toy_activations`). Cost: one ``n_samples x n_features x n_features`` float64 matmul (the
    copula), in chunks of 1M rows."""
    D, chunks = _chunks(n_samples, seed, sample_seed, n_features, d_model)
    fs = list(chunks)
    return (torch.cat(fs) if fs else torch.zeros(0, n_features)), D


def toy_activations(n_samples: int, seed: int = SEED, *, sample_seed: int | None = None,
                    n_features: int = N_FEATURES, d_model: int = D_MODEL) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(x, directions, true_l0)``: ``n_samples`` toy activations ``x [n_samples, d_model]`` (float32),
    the true feature directions ``[n_features, d_model]`` (orthonormal rows) and the samples' mean
    number of non-zero features (about 11 at the defaults).

    ``seed`` fixes everything: the directions, the correlations and the samples. A different
    ``seed`` is a different toy model (other directions). For held-out samples *of the same model*
    keep ``seed`` and pass ``sample_seed``: the directions and correlations stay those of ``seed``,
    the samples are drawn from a fresh generator seeded with ``sample_seed``. Cost: as
    :func:`toy_features`, plus one ``n_samples x n_features x d_model`` matmul."""
    D, chunks = _chunks(n_samples, seed, sample_seed, n_features, d_model)
    xs, l0 = [], 0.0
    for f in chunks:
        l0 += float((f > 0).sum())
        xs.append(f @ D)
    x = torch.cat(xs) if xs else torch.zeros(0, d_model)
    return x, D, l0 / max(n_samples, 1)


__all__ = ["toy_activations", "toy_features", "firing_probabilities", "N_FEATURES", "D_MODEL", "SEED"]


def recovery(W_dec: torch.Tensor, directions: torch.Tensor, threshold: float = 0.9) -> dict[str, float]:
    """How well decoder rows ``W_dec [F, d]`` recover the true ``directions [n, d]``: ``true_max_cos``,
    the mean over true features of the best row's ``|cos|``, and ``recovered``, the fraction of true
    features with a row above ``threshold``. Cost: one ``F x n`` matmul."""
    cos = (torch.nn.functional.normalize(W_dec.detach().float(), dim=-1) @ directions.T).abs()
    best = cos.max(0).values
    return {"true_max_cos": float(best.mean()), "recovered": float((best > threshold).float().mean())}


@torch.no_grad()
def steerability(W_dec: torch.Tensor, codes: torch.Tensor, features: torch.Tensor, directions: torch.Tensor,
                 threshold: float = 0.9) -> dict[str, float]:
    """How steerable the latent best matching each true feature is, under saesteer's error-preserving
    edit ``x' = x + decode(f') - decode(f)`` of an SAE with a linear decoder ``W_dec [F, d]``.

    ``codes [N, F]``: the SAE's latents of the samples ``x = features @ directions`` (``features
    [N, n]`` the true feature activations, ``directions [n, d]`` orthonormal). For true feature ``i`` and
    its best-matching latent ``j`` (largest ``|cos|``):

    - ``on_target_share``: of an edit's change inside the true-feature subspace, the fraction on feature
      ``i``: ``(D_i . w_j)^2 / ||D w_j||^2``; every clamp of latent ``j`` moves ``x`` along ``w_j``, so
      it is a property of the row (``steerable``: the fraction of features above ``threshold``);
    - ``erased``: on the samples where ``i`` fires, clamp ``j`` to 0 and compare ``|D_i . x'|`` with
      ``|D_i . x|`` summed over those samples: 1 when the latent carries all of the feature, less when
      it fires on only part of the feature's samples or at the wrong size;
    - ``spill``: the mean ``sum_{k != i} |D_k . (x' - x)|`` per unit of ``|D_i . (x' - x)|``.

    Each is a mean over true features. Cost: ``O(n (N_i + F) d)``."""
    W = W_dec.detach().float()
    D = directions.float()
    x = features.float() @ D
    best = (torch.nn.functional.normalize(W, dim=-1) @ D.T).abs().argmax(0)
    shares, erased, spill = [], [], []
    for i, j in enumerate(best.tolist()):
        c = W[j] @ D.T  # the row in true-feature coordinates
        shares.append(float(c[i] ** 2 / (c ** 2).sum().clamp_min(1e-12)))
        on = features[:, i] > 0
        dx = -codes[on, j:j + 1].float() * W[j]  # the change of clamping latent j to 0
        before = x[on] @ D[i]
        after = before + dx @ D[i]
        erased.append(float((before.abs().sum() - after.abs().sum()) / before.abs().sum().clamp_min(1e-12)))
        others = torch.cat([D[:i], D[i + 1:]])
        moved = (after - before).abs().mean().clamp_min(1e-12)
        spill.append(float((dx @ others.T).abs().sum(1).mean() / moved))
    t = torch.tensor(shares)
    return {"on_target_share": float(t.mean()), "steerable": float((t > threshold).float().mean()),
            "erased": sum(erased) / len(erased), "spill": sum(spill) / len(spill)}
