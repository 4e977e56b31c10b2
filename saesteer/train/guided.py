"""G-SAE concept-guided latents (Härle et al., arXiv 2506.19382): saesteer's reading of the paper.

What the paper's summary states: G-SAE reserves some latents for labelled concepts and trains them
with a supervised loss beside the SAE's own. Everything below the loss's shape is saesteer's reading
(SEED_METHODS.md section 11, "implementation proposal, to confirm"), easy to swap when the paper's
definition is known:

- latent ``c`` (``c = 0 .. n_concepts - 1``, the first latents) is concept ``c``'s;
- the supervised term is ``lambda * mean_{n,c} BCE(sigmoid(z_nc), y_nc)`` with ``z`` the latent's
  encoder *pre-activation* ``(x - b_dec) W_enc[:, c] + b_enc[c]`` (the proposal writes
  ``sigmoid(f_c)``; on a ReLU/TopK output ``f_c >= 0`` that sigmoid cannot go below 1/2, so an absent
  concept could never be scored as absent) and ``y`` the token's 0/1 label;
- concept latents compete in the TopK / BatchTopK selection like any other latent;
- labels travel with the activations as ``n_concepts`` extra columns (``[x, y]``), so shuffling,
  caching, epochs and exact resume work unchanged (:func:`with_labels`);
- steering with a guided latent: ``x' = x + alpha (a_target - f_c(x)) d_c`` (:func:`guided_steer`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def with_labels(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[x, labels]``: activations ``x [N, d_in]`` with their concept labels ``[N, n_concepts]`` (0/1)
    as extra columns, the rows a ``TrainConfig(n_concepts=...)`` run trains on."""
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.shape[0] != x.shape[0]:
        raise ValueError(f"{labels.shape[0]} label rows for {x.shape[0]} activation rows")
    return torch.cat([x.float(), labels.to(torch.float32)], dim=1)


def concept_pre_activations(x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, b_dec: torch.Tensor,
                            n_concepts: int) -> torch.Tensor:
    """``(x - b_dec) W_enc[:, :C] + b_enc[:C]``, ``[N, C]``, differentiable in all three parameters.
    Cost: an ``N x d x C`` matmul."""
    W = W_enc[:, :n_concepts]
    return torch.addmm(b_enc[:n_concepts] - b_dec @ W, x, W)


def concept_loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``mean BCE(sigmoid(z), y)`` over tokens and concepts (computed from logits, stable)."""
    return F.binary_cross_entropy_with_logits(z, y)


@torch.no_grad()
def guided_steer(sae, x: torch.Tensor, concept: int, target: float, alpha: float = 1.0) -> torch.Tensor:  # noqa: ANN001
    """``x + alpha (target - f_c(x)) W_dec[c]`` for activations ``x [..., d_in]`` in the model's units:
    G-SAE steering as saesteer reads it (``alpha = 1`` sets the latent's contribution to ``target``,
    the same as saesteer's ``Clamp(c, target)`` edit). Cost: one feature's encode and a decoder row."""
    c = sae.check_feature(concept)
    f = sae.encode_subset(x, torch.tensor([c], device=x.device))[..., 0]
    d = sae.W_dec[c]
    _, _, scale = sae.normalize(x)
    delta = (alpha * (target - f)).unsqueeze(-1) * d
    return x + (delta * scale if scale is not None else delta)
