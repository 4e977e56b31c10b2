"""SARM's reward head: an SAE over the backbone's activation, then a bias-free linear score.

``reward = sum_i w_i f_i`` with ``f`` the SAE features of the last non-pad token: the top-k
latents (SARM "TopK"), or the dense pre-activations (SARM "woTopK", ``use_topk=False``). The
SAE's own input transform applies first: SARM's SAEs standardise each token,
``(h - mean) / (std + 1e-6)`` with no affine (saesteer's ``layer_norm`` with ``norm_eps=1e-6``); an
SAE trained on raw activations (like the bundled one) reads them raw.

Feature edits (SARM's steering, or saesteer's ``Clamp``/``Erase``/``Scale``/``Add``) change ``f``
before the score, so their effect on the reward is exactly ``w_i (f'_i - f_i)``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from saesteer.edits import Add, Edit
from saesteer.errors import RewardError
from saesteer.sae.module import SAE


class FeatureRewardHead(nn.Module):
    """An SAE and a ``score`` vector ``[1, d_sae]`` (SARM's ``score.weight`` layout).

    ``use_topk``: read the SAE's activated features (the top-k for a TopK SAE, as SARM); False
    reads the dense pre-activations (SARM's "woTopK" variant).
    """

    def __init__(self, sae: SAE, weight: torch.Tensor | None = None, *, use_topk: bool = True) -> None:
        super().__init__()
        self.sae = sae
        self.use_topk = bool(use_topk)
        self.score = nn.Linear(sae.d_sae, 1, bias=False, dtype=sae.dtype, device=sae.device)
        with torch.no_grad():
            if weight is None:
                self.score.weight.zero_()
            else:
                self.score.weight.copy_(check_weight(weight, sae.d_sae))
        self.requires_grad_(False)  # inference; fit() trains copies

    @property
    def weight(self) -> torch.Tensor:
        """The head as a ``[d_sae]`` vector (a view: changing it changes the head)."""
        return self.score.weight[0]

    def features(self, h: torch.Tensor) -> torch.Tensor:
        """Features ``[..., d_sae]`` the head reads from activations ``h [..., d_in]`` (see
        :func:`read_features`)."""
        return read_features(self.sae, h, self.use_topk)

    def contributions(self, f: torch.Tensor) -> torch.Tensor:
        """``w_i f_i`` per feature, in float64 (the reward is their sum, exactly)."""
        return f.double() * self.weight.double()

    def rewards(self, f: torch.Tensor) -> torch.Tensor:
        """Rewards ``[...]`` from features, summed in float64 as :meth:`contributions` are."""
        return self.contributions(f).sum(-1)


def read_features(sae: SAE, h: torch.Tensor, use_topk: bool = True) -> torch.Tensor:
    """The SAE's encoding of ``h`` (its input transform first), or its pre-activations when
    ``use_topk`` is off. Cost: one ``d_in x d_sae`` matmul per row (plus a top-k)."""
    h = h.to(sae.dtype)
    if use_topk:
        return sae.encode(h)
    x_n, _, _ = sae.normalize(h)
    return sae.pre_activation(sae.encoder_input(x_n))


def check_weight(weight: torch.Tensor, d_sae: int) -> torch.Tensor:
    """A head weight as ``[1, d_sae]``; RewardError when its width is not the SAE's."""
    w = torch.as_tensor(weight)
    if w.ndim == 1:
        w = w.unsqueeze(0)
    if w.ndim != 2 or w.shape[0] != 1:
        raise RewardError(f"a reward head is one row [1, d_sae] (or [d_sae]); got shape {tuple(w.shape)}")
    if w.shape[1] != d_sae:
        raise RewardError(f"the head has {w.shape[1]} weights but the SAE has d_sae={d_sae} features")
    if not torch.isfinite(w).all():
        raise RewardError("the head weights hold non-finite values")
    return w


def apply_feature_edits(f: torch.Tensor, edits: Sequence[Edit], *, only_active: bool = False) -> torch.Tensor:
    """Features ``f [..., d_sae]`` with ``edits`` applied in order (a new tensor).

    ``Scale`` (SARM ``"*"``) changes a feature only where it fires. ``Add`` (SARM ``"+"``) adds
    everywhere, as SARM does (on a linear head that shifts every reward by ``w_i * a``);
    ``only_active=True`` adds only where the feature fires. ``Clamp``/``Erase`` pin the value.
    """
    if not edits:
        return f
    out = f.clone()
    for e in edits:
        col = out[..., e.feature]
        new = e.apply(col)
        if only_active and isinstance(e, Add):
            new = torch.where(f[..., e.feature] != 0, new, col)
        out[..., e.feature] = new
    return out
