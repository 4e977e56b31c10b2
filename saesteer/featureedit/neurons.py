"""The neuron baseline: a layer's raw coordinates written as an exact SAE.

``neuron_basis(d)`` is a ReLU SAE with ``d_sae = 2d``, ``W_enc = [I, -I]``, ``W_dec = [I; -I]`` and
zero biases: ``encode(x) = [relu(x), relu(-x)]`` and ``decode(encode(x)) = relu(x) - relu(-x) = x``
exactly (every product is by 0 or +-1, every sum has one non-zero term). Neuron ``j`` is the pair
of latents ``(j, d + j)``; erasing both sets ``x_j`` to 0 (zero-ablation of that coordinate), and
the per-unit scores of the pair add up to the usual neuron scores (activation x gradient of the
pair is ``x_j * dlogp/dx_j``). So FeatureEdit's selection, erasure and evaluation run unchanged on
neurons: the paper's features-vs-neurons comparison with one code path.

``neuron_view(model)`` wraps the same host model a second time with the neuron basis at every hook
the model has an SAE at. Its attachments are named ``neurons@<hook>`` so a neuron edit can never be
applied to the feature SAE at the same hook by mistake (``model.edits(neuron_edit)`` on the
feature model fails: no SAE is attached at ``neurons@...``), and the two can be nested.
"""

from __future__ import annotations


import torch

from saesteer.sae.module import SAE, SAEConfig

PREFIX = "neurons@"
SOURCE = "neuron_basis"


def neuron_basis(d_in: int, *, hook_name: str | None = None, model_name: str | None = None,
                 dtype: torch.dtype = torch.float32) -> SAE:
    """The exact SAE over ``d_in`` raw coordinates (see the module doc). Cost: two ``[d, 2d]``
    matrices; an edit of n neurons encodes 2n columns per token (ReLU: no full encode)."""
    cfg = SAEConfig(d_in=d_in, d_sae=2 * d_in, architecture="relu", apply_b_dec_to_input=False,
                    source_architecture=SOURCE, source_format=SOURCE, hook_name=hook_name,
                    model_name=model_name)
    sae = SAE(cfg, dtype=dtype)
    eye = torch.eye(d_in, dtype=dtype)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
    return sae.eval().requires_grad_(False)


def is_neuron_basis(sae: SAE) -> bool:
    return sae.cfg.source_architecture == SOURCE


def neuron_latents(neuron: int, d_in: int) -> tuple[int, int]:
    """The two latents of neuron ``neuron``: its positive and its negative part."""
    return neuron, d_in + neuron


def pair_scores(latent_scores: torch.Tensor) -> torch.Tensor:
    """Per-neuron scores ``[d]`` from per-latent scores ``[..., 2d]`` (the pair's sum)."""
    d = latent_scores.shape[-1] // 2
    return latent_scores[..., :d] + latent_scores[..., d:]


def neuron_view(model):  # -> SteeredModel
    """A SteeredModel over ``model``'s host model with the neuron basis at each of ``model``'s hooks
    (attachment names ``neurons@<hook>``). Nothing on the host model changes; cost: 2 x d x 2d
    floats per hook."""
    from saesteer.steered import SteeredModel

    view = SteeredModel(model.model, model.tokenizer)
    for name, att in model.attachments.items():
        base = name[len(PREFIX):] if name.startswith(PREFIX) else name
        sae = neuron_basis(att.sae.d_in, hook_name=base, model_name=att.sae.cfg.model_name)
        # under its own name only: the bare hook name must not reach the neuron basis
        view.attach(sae, hook=base, sae_dtype=att.sae.dtype, name=PREFIX + att.point.name)
    return view
