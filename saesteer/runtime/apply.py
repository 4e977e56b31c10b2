"""The SAE math of an edit, on one hooked activation tensor. No hooks, no model knowledge.

``edit_activations`` is the only function the hooks call. For ReLU/JumpReLU/Gated SAEs it computes
only the encoder columns of the edited features (a few dot products per token); TopK SAEs need the
full encode. Positions no edit touches come back bit-exact.
"""

from __future__ import annotations

from typing import Callable

import torch

from saesteer.edits import Add, Edit, EditSet, Steer
from saesteer.positions import Positions
from saesteer.sae.module import SAE

MaskFn = Callable[[Positions], torch.Tensor]


def _steer_step(sae: SAE, s: Steer, xs: torch.Tensor) -> torch.Tensor:
    v = sae.W_dec[s.direction] if s.feature is not None else s.direction.to(xs.device, xs.dtype)
    step = s.alpha * v
    if s.norm_scaled:
        step = step * (xs.norm(dim=-1, keepdim=True) / v.norm())
    return step.expand_as(xs) if step.ndim == 1 else step


def _edit_features(
    f: torch.Tensor, feats: tuple[Edit, ...], col: dict[int, int], es: EditSet, mask_of: MaskFn
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply the feature edits in order to the columns ``col`` of ``f``; returns ``(f', touched)``."""
    f_new = f.clone()
    touched: torch.Tensor | None = None
    for e in feats:
        m = mask_of(e.positions or es.positions)
        c = col[e.feature]
        cur = f_new[..., c]
        f_new[..., c] = torch.where(m, e.apply(cur), cur)
        touched = m if touched is None else touched | m
    return f_new, touched


def edit_activations(sae: SAE, x: torch.Tensor, es: EditSet, mask_of: MaskFn,
                     out: torch.Tensor | None = None) -> torch.Tensor:
    """Return ``x [N, T, d_in]`` with the edit set applied (see :mod:`saesteer.edits`).

    ``mask_of(positions)`` gives the ``[N, T]`` boolean mask of the steered tokens. For a transcoder,
    ``out [N, T, d_out]`` is the tensor it reconstructs (the MLP's output): features are read from
    ``x`` (its input) and the edit is written into ``out``, which is returned
    (``out + decode(f') - decode(f)``; the skip connection cancels there). Cost: for the default mode,
    an encode of the edited features only (or a full encode for TopK) and one ``[n_edited x d_out]``
    matmul; reconstruct mode costs a full encode and decode.
    """
    xs = x if x.dtype == sae.dtype else x.to(sae.dtype)
    target = x if out is None else out
    ts = target if target.dtype == sae.dtype else target.to(sae.dtype)
    feats, steers, features = es.split
    if es.mode == "reconstruct":
        return _reconstruct(sae, target, xs, ts, es, feats, steers, mask_of)

    if feats and not steers and sae.cfg.normalize == "none" and all(type(e) is Add for e in feats):
        where = {e.positions or es.positions for e in feats}
        if len(where) == 1:  # nudges at one set of positions: one constant vector, no encode
            m = mask_of(where.pop())
            return torch.where(m.unsqueeze(-1), (ts + sae.nudge(feats)).to(target.dtype), target)
    delta: torch.Tensor | None = None
    touched: torch.Tensor | None = None
    if feats:
        col = {i: c for c, i in enumerate(features)}
        sub = sae.subset(features)
        scale = None
        if any(e.needs_encode for e in feats):
            x_n, _, scale = sae.normalize(xs)
            f = sae.encode_subset_normalized(sae.encoder_input(x_n), sub)
        else:  # Add only: no encode; a normalising SAE still needs its per-token output scale
            if sae.cfg.normalize != "none":
                _, _, scale = sae.normalize(xs)
            f = xs.new_zeros(*xs.shape[:-1], len(features))
        f_new, touched = _edit_features(f, feats, col, es, mask_of)
        delta = (f_new - f) @ sub.W_dec
        if scale is not None:
            delta = delta * scale
    for s in steers:
        m = mask_of(s.positions or es.positions)
        step = _steer_step(sae, s, ts) * m.unsqueeze(-1).to(ts.dtype)
        delta = step if delta is None else delta + step
        touched = m if touched is None else touched | m
    if delta is None or touched is None:
        return target
    edited = (ts + delta).to(target.dtype)
    return torch.where(touched.unsqueeze(-1), edited, target)


def _reconstruct(
    sae: SAE,
    target: torch.Tensor,
    xs: torch.Tensor,
    ts: torch.Tensor,
    es: EditSet,
    feats: tuple[Edit, ...],
    steers: tuple[Steer, ...],
    mask_of: MaskFn,
) -> torch.Tensor:
    """Output ``decode(f')`` at the set's positions (no error term), as sae-for-vlm does; for a
    transcoder, in place of ``target`` (its skip connection included)."""
    x_n, shift, scale = sae.normalize(xs)
    x_in = sae.encoder_input(x_n)
    f = sae.activate(sae.pre_activation(x_in), x_in)
    if es.zero_others:
        keep = torch.zeros_like(f)
        named = torch.tensor(es.split[2], device=f.device, dtype=torch.long)
        keep[..., named] = f[..., named]
        f = keep
    if feats:
        col = {i: i for i in {e.feature for e in feats}}
        f, _ = _edit_features(f, feats, col, es, mask_of)
    rec = sae.decode(f, shift, scale, x=xs if sae.cfg.skip else None)
    for s in steers:
        rec = rec + _steer_step(sae, s, ts) * mask_of(s.positions or es.positions).unsqueeze(-1).to(ts.dtype)
    where = mask_of(es.positions)
    return torch.where(where.unsqueeze(-1), rec.to(target.dtype), target)
