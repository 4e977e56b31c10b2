"""The tensor math of SAE training steps: sparse TopK / BatchTopK encode-decode with cheap backward
passes, JumpReLU straight-through estimators, and the geometric median.

JumpReLU is dense: its pre-activations, straight-through estimators and decode cost ``N x F`` each.

Sparse selections are flat lists ``(rows, cols)`` of the kept entries of the ``[N, F]`` latent
matrix, sorted by row (``offsets[r]`` is where row ``r`` starts), so TopK (``k`` per row) and
BatchTopK (``k * N`` over the whole batch, a varying number per row) share one code path.

Costs for ``N`` tokens, ``d`` inputs, ``F`` latents and ``M`` kept entries: the encoder forward is
one dense ``N x d x F`` matmul; its backward costs ``O(M d)`` (a CSR matmul), not another dense
matmul; decoding (``embedding_bag``) costs ``O(M d)`` forward and backward.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F


class Selection(NamedTuple):
    """Kept latents of a batch: ``values [M]`` (post-ReLU, detached), ``rows``/``cols [M]`` sorted by
    row, and ``offsets [N]`` (start of each row, for ``embedding_bag``)."""

    values: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    offsets: torch.Tensor


def _offsets(rows: torch.Tensor, n: int) -> torch.Tensor:
    counts = torch.bincount(rows, minlength=n)
    return torch.cumsum(counts, 0) - counts


def topk_select(pre: torch.Tensor, k: int) -> Selection:
    """The ``k`` largest pre-activations of every row of ``pre [N, F]``, ReLU applied to the kept
    values (the same as a top-k of ``relu(pre)``). Cost: one ``topk``."""
    n = pre.shape[0]
    vals, idx = pre.topk(k, dim=-1, sorted=False)
    rows = torch.arange(n, device=pre.device).repeat_interleave(k)
    offsets = torch.arange(0, n * k, k, device=pre.device)
    return Selection(vals.reshape(-1).float().clamp_min_(0), rows, idx.reshape(-1), offsets)


def batch_topk_select(pre: torch.Tensor, k: int, candidates: int = 4) -> Selection:
    """The ``k * N`` largest pre-activations of the whole ``[N, F]`` batch (BatchTopK, Bussmann et
    al. 2024), ReLU applied to the kept values.

    Exact and cheap: the global top ``k * N`` is taken among each row's top ``candidates * k``; when
    some row might hold more (its smallest candidate is above the global cut-off) the full
    ``N * F`` top-k is taken instead. Cost: a row top-k, a top-k over ``N * candidates * k`` values
    and a sort of the kept ones (the fallback: one top-k over ``N * F`` values).
    """
    n, f = pre.shape
    want = min(k * n, n * f)
    m = min(f, candidates * k)
    cand_vals, cand_idx = pre.topk(m, dim=-1, sorted=False) if m < f else (pre, None)
    vals, flat = cand_vals.reshape(-1).topk(want, sorted=False)
    if cand_idx is not None and bool((cand_vals.min(-1).values > vals.min()).any()):
        cand_vals, cand_idx, m = pre, None, f
        vals, flat = pre.reshape(-1).topk(want, sorted=False)
    flat, order = flat.sort()
    vals = vals[order]
    rows = torch.div(flat, m, rounding_mode="floor")
    slot = flat - rows * m
    cols = cand_idx[rows, slot] if cand_idx is not None else slot
    return Selection(vals.float().clamp_min_(0), rows, cols, _offsets(rows, n))


def sub_select(pre: torch.Tensor, candidates: torch.Tensor, k: int) -> Selection:
    """The ``k`` largest of each row among the latents ``candidates`` only (AuxK on dead latents),
    ReLU applied. Cost: a gather of ``N x len(candidates)`` and a ``topk``."""
    n = pre.shape[0]
    k = min(k, candidates.numel())
    vals, local = pre[:, candidates].topk(k, dim=-1, sorted=False)
    rows = torch.arange(n, device=pre.device).repeat_interleave(k)
    offsets = torch.arange(0, n * k, k, device=pre.device)
    return Selection(vals.reshape(-1).float().clamp_min_(0), rows, candidates[local.reshape(-1)], offsets)


def _csr_t_matmul(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n_cols: int,
                  dense: torch.Tensor) -> torch.Tensor:
    """``S^T @ dense`` for the sparse ``[N, n_cols]`` matrix ``S`` with entries ``(rows, cols, vals)``:
    a ``[n_cols, d]`` result via a CSR matmul (deterministic on the CPU)."""
    order = torch.argsort(cols, stable=True)
    counts = torch.bincount(cols, minlength=n_cols)
    crow = torch.zeros(n_cols + 1, dtype=torch.long, device=cols.device)
    crow[1:] = torch.cumsum(counts, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        st = torch.sparse_csr_tensor(crow, rows[order], vals[order], (n_cols, dense.shape[0]),
                                     check_invariants=False)
        return st @ dense


class _SelectedPreacts(torch.autograd.Function):
    """``relu((x - b_dec) @ W_enc + b_enc)[rows, cols]`` given those values (computed without a graph).

    Backward only touches the kept entries: ``dW_enc = (S^T @ x_c)^T``, ``db_enc = scatter(g)``,
    ``db_dec = -W_enc @ db_enc`` (the input ``x`` itself gets no gradient).
    """

    @staticmethod
    def forward(ctx: Any, values: torch.Tensor, x_c: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor,
                b_dec: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(values, x_c, W_enc, rows, cols)
        return values.clone()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        values, x_c, W_enc, rows, cols = ctx.saved_tensors
        g = g * (values > 0).to(g.dtype)  # ReLU
        n_lat = W_enc.shape[1]
        grad_b_enc = torch.zeros(n_lat, dtype=g.dtype, device=g.device).index_add_(0, cols, g)
        grad_W = None
        if ctx.needs_input_grad[2]:
            grad_W = _csr_t_matmul(rows, cols, g, n_lat, x_c).t()
        grad_b_dec = -(W_enc @ grad_b_enc) if ctx.needs_input_grad[4] else None
        return None, None, grad_W, grad_b_enc if ctx.needs_input_grad[3] else None, grad_b_dec, None, None


def select_at_least(pre: torch.Tensor, cutoff: float) -> Selection:
    """Every entry of ``pre [N, F]`` at or above ``cutoff``, ReLU applied to the kept values: one rank's
    part of a BatchTopK selection whose cut-off was found over the whole (distributed) batch. Sorted by
    row then column, as :func:`batch_topk_select`. Cost: one comparison and ``nonzero`` over ``N * F``."""
    rows, cols = (pre >= cutoff).nonzero(as_tuple=True)
    vals = pre[rows, cols].float().clamp_min_(0)
    return Selection(vals, rows, cols, _offsets(rows, pre.shape[0]))


def selected_values(sel: Selection, x_c: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor,
                    b_dec: torch.Tensor) -> torch.Tensor:
    """The kept latent values ``[M]`` as a differentiable function of ``W_enc``, ``b_enc``, ``b_dec``
    (``x_c = x - b_dec``, detached, the encoder input used to compute them)."""
    return _SelectedPreacts.apply(sel.values, x_c, W_enc, b_enc, b_dec, sel.rows, sel.cols)


class _SparseDecode(torch.autograd.Function):
    """``embedding_bag`` decode whose weight gradient is a CSR matmul (``S^T @ g``, ``O(M d)``)
    instead of ``embedding_bag``'s dense backward; the gradient of the values is embedding_bag's own."""

    @staticmethod
    def forward(ctx: Any, values: torch.Tensor, W_dec: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                offsets: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(values, W_dec, rows, cols, offsets)
        return F.embedding_bag(cols, W_dec, offsets, mode="sum", per_sample_weights=values)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        values, W_dec, rows, cols, offsets = ctx.saved_tensors
        grad_vals = grad_W = None
        if ctx.needs_input_grad[0]:
            with torch.enable_grad():
                v = values.detach().requires_grad_()
                out = F.embedding_bag(cols, W_dec.detach(), offsets, mode="sum", per_sample_weights=v)
                (grad_vals,) = torch.autograd.grad(out, v, g)
        if ctx.needs_input_grad[1]:
            grad_W = _csr_t_matmul(rows, cols, values, W_dec.shape[0], g.contiguous())
        return grad_vals, grad_W, None, None, None


def sparse_decode(sel: Selection, values: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """``sum_j values_j * W_dec[cols_j]`` per row: ``[N, d]`` (no bias). Cost ``O(M d)`` forward
    and backward."""
    return _SparseDecode.apply(values, W_dec, sel.rows, sel.cols, sel.offsets)


class JumpReLUL0(torch.autograd.Function):
    """JumpReLU ``f = z * H(z - theta)`` and its mean L0 ``mean_n sum_i H(z_ni - theta_i)``, with the
    straight-through pseudo-derivatives of Rajamanoharan et al. (2024), rectangle kernel K of width
    ``eps``: ``df/dz = H(z - theta)``, ``df/dtheta = -(theta / eps) K((z - theta) / eps)``,
    ``dL0/dtheta = -(1 / eps) K((z - theta) / eps)`` per token, and no L0 gradient to ``z``.
    Cost: a few elementwise passes over ``[N, F]``."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, theta: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        on = z > theta
        ctx.save_for_backward(z, theta, on)
        ctx.eps = eps
        return torch.where(on, z, 0.0), on.sum(-1).to(z.dtype).mean()

    @staticmethod
    def backward(ctx: Any, grad_f: torch.Tensor, grad_l0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        z, theta, on = ctx.saved_tensors
        eps = ctx.eps
        kernel = ((z - theta).abs() < eps / 2).to(z.dtype)
        grad_theta = -(theta / eps) * (kernel * grad_f).sum(0) - (grad_l0 / (eps * z.shape[0])) * kernel.sum(0)
        return torch.where(on, grad_f, 0.0), grad_theta, None


def geometric_median(points: torch.Tensor, max_iter: int = 100, tol: float = 1e-5) -> torch.Tensor:
    """Geometric median of ``points [n, d]`` by Weiszfeld iterations, from the mean.
    Cost: up to ``max_iter`` passes over the points."""
    guess = points.mean(0)
    for _ in range(max_iter):
        prev = guess
        w = 1.0 / (points - guess).norm(dim=1).clamp_min(1e-8)
        guess = (w[:, None] * points).sum(0) / w.sum()
        if (guess - prev).norm() < tol * (1.0 + prev.norm()):
            break
    return guess


def remove_parallel_grad(W_dec: torch.Tensor) -> None:
    """Remove from ``W_dec.grad`` its component along each (unit-norm) decoder row."""
    if W_dec.grad is not None:
        with torch.no_grad():
            par = (W_dec.grad * W_dec).sum(-1, keepdim=True)
            W_dec.grad.sub_(par * W_dec)


def normalize_rows_(W_dec: torch.Tensor) -> None:
    """Rescale every decoder row to unit L2 norm, in place."""
    with torch.no_grad():
        W_dec.div_(W_dec.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(W_dec.dtype).eps))
