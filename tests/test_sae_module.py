"""The SAE module against computations written out by hand, for every architecture and normalisation."""

from __future__ import annotations

import math

import pytest
import torch

from saesteer.errors import SAEFormatError
from saesteer.sae.module import SAE, SAEConfig

D, F = 12, 40
ARCHS = [("relu", {}), ("jumprelu", {}), ("topk", {"k": 5}), ("topk", {"k": 5, "topk_relu": False}), ("gated", {})]
NORMS = ["none", "layer_norm", "constant_norm_rescale"]


def random_sae(arch: str, normalize: str = "none", seed: int = 0, **kw) -> SAE:
    torch.manual_seed(seed)
    sae = SAE(SAEConfig(d_in=D, d_sae=F, architecture=arch, normalize=normalize, **kw))
    with torch.no_grad():
        for name, p in sae.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if name == "r_mag" else 1.0))
        if arch == "jumprelu":
            sae.threshold.copy_(torch.rand(F) * 1.5)
        if not sae.cfg.topk_relu:  # SARM-style: make some kept pre-activations negative
            sae.b_enc.sub_(100.0)
    return sae.eval()


def by_hand(sae: SAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, reconstruction) computed from the parameters, step by step."""
    c = sae.cfg
    W_enc, b_enc, W_dec, b_dec = (t.detach() for t in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec))
    if c.normalize == "none":
        mu, s = torch.zeros_like(x[..., :1]), torch.ones_like(x[..., :1])
        xn = x
    elif c.normalize == "layer_norm":
        mu = x.mean(-1, keepdim=True)
        s = (((x - mu) ** 2).sum(-1, keepdim=True) / (c.d_in - 1)).sqrt()  # unbiased std
        xn = (x - mu) / (s + c.norm_eps)
    else:  # constant_norm_rescale: x * sqrt(d) / ||x||
        mu = torch.zeros_like(x[..., :1])
        s = x.pow(2).sum(-1, keepdim=True).sqrt() / math.sqrt(c.d_in)
        xn = x / s
    xin = xn - b_dec if c.apply_b_dec_to_input else xn
    if c.architecture == "gated":
        gate = (xin @ W_enc + sae.b_gate.detach()) > 0
        mag = torch.clamp(xin @ (W_enc * sae.r_mag.detach().exp()) + sae.b_mag.detach(), min=0)
        f = torch.where(gate, mag, torch.zeros_like(mag))
    else:
        z = xin @ W_enc + b_enc
        if c.architecture == "relu":
            f = torch.clamp(z, min=0)
        elif c.architecture == "jumprelu":
            f = torch.where(z > sae.threshold.detach(), torch.clamp(z, min=0), torch.zeros_like(z))
        else:
            f = torch.zeros_like(z)
            flat_z, flat_f = z.reshape(-1, F), f.view(-1, F)
            for r in range(flat_z.shape[0]):
                order = sorted(range(F), key=lambda j: -float(flat_z[r, j]))[: c.k]
                for j in order:
                    v = flat_z[r, j]
                    flat_f[r, j] = max(v, torch.tensor(0.0)) if c.topk_relu else v
    x_hat = (f @ W_dec + b_dec) * s + mu
    return f, x_hat


@pytest.mark.parametrize("arch,kw", ARCHS, ids=lambda v: str(v))
@pytest.mark.parametrize("normalize", NORMS)
@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_encode_decode_forward_by_hand(arch, kw, normalize, apply_b_dec):
    sae = random_sae(arch, normalize, apply_b_dec_to_input=apply_b_dec, **kw)
    x = torch.randn(2, 3, D) * 3 + 0.5
    f_ref, xhat_ref = by_hand(sae, x)
    with torch.no_grad():
        f = sae.encode(x)
        torch.testing.assert_close(f, f_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sae(x), xhat_ref, atol=1e-4, rtol=1e-5)
        _, shift, scale = sae.normalize(x)
        torch.testing.assert_close(sae.decode(f, shift, scale), xhat_ref, atol=1e-4, rtol=1e-5)
    if arch == "topk":
        assert ((f != 0).sum(-1) <= kw["k"]).all()
        if not kw.get("topk_relu", True):
            assert (f < 0).any(), "test should exercise negative kept values"


def test_layer_norm_is_per_token_standardisation_with_unbiased_std():
    sae = random_sae("relu", "layer_norm")
    x = torch.randn(4, D) * 5 + 2
    xn, shift, scale = sae.normalize(x)
    torch.testing.assert_close(shift, x.mean(-1, keepdim=True))
    torch.testing.assert_close(scale, torch.std(x, dim=-1, keepdim=True, correction=1))
    torch.testing.assert_close(sae.denormalize(xn * (scale + sae.cfg.norm_eps) / scale, shift, scale), x)


@pytest.mark.parametrize("arch,kw", [a for a in ARCHS if a[0] != "topk"], ids=lambda v: str(v))
@pytest.mark.parametrize("normalize", NORMS)
def test_encode_subset_matches_full_encode(arch, kw, normalize):
    sae = random_sae(arch, normalize, **kw)
    x = torch.randn(3, 7, D) * 2
    idx = torch.tensor([0, 3, 3, F - 1, 17])
    with torch.no_grad():
        full = sae.encode(x)[..., idx]
        sub = sae.encode_subset(x, idx)
    # the same numbers up to the summation order BLAS picks for a narrower matmul
    torch.testing.assert_close(sub, full, atol=1e-5, rtol=1e-6)
    assert torch.equal(sub != 0, full != 0) or torch.allclose(sub, full, atol=1e-5)


def test_encode_subset_topk_falls_back_to_full_encode():
    sae = random_sae("topk", k=4)
    x = torch.randn(5, D)
    idx = torch.tensor([1, 2, 30])
    with torch.no_grad():
        assert torch.equal(sae.encode_subset(x, idx), sae.encode(x)[..., idx])
    assert sae.elementwise is False and random_sae("gated").elementwise is True


@pytest.mark.parametrize("arch,kw", ARCHS, ids=lambda v: str(v))
def test_feature_subset_is_cached_and_follows_weight_updates(arch, kw):
    sae = random_sae(arch, **kw)
    x = torch.randn(4, 6, D)
    with torch.no_grad():
        sub = sae.subset((3, 17))
        assert sae.subset((3, 17)) is sub  # gathered once
        x_in = sae.encoder_input(sae.normalize(x)[0])
        torch.testing.assert_close(sae.encode_subset_normalized(x_in, sub), sae.encode(x)[..., [3, 17]],
                                   atol=1e-5, rtol=1e-6)
        sae.W_dec.mul_(2.0)  # an in-place update must not leave stale rows behind
        fresh = sae.subset((3, 17))
        assert fresh is not sub and torch.equal(fresh.W_dec, sae.W_dec[[3, 17]])
        assert torch.equal(fresh.W_enc, sae.W_enc[:, [3, 17]])


@pytest.mark.parametrize("arch,kw", ARCHS, ids=lambda v: str(v))
@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_fold_input_scale_keeps_scaled_semantics(arch, kw, apply_b_dec):
    """An SAE trained on s*x: after folding s it reads and writes model units directly."""
    s = 3.7
    trained = random_sae(arch, apply_b_dec_to_input=apply_b_dec, **kw)
    folded = random_sae(arch, apply_b_dec_to_input=apply_b_dec, **kw)
    folded.fold_input_scale(s)
    x = torch.randn(6, D)
    with torch.no_grad():
        torch.testing.assert_close(folded.encode(x), trained.encode(s * x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(folded(x), trained(s * x) / s, atol=1e-5, rtol=1e-5)
    assert folded.cfg.metadata["folded_input_scale"] == pytest.approx(s)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"architecture": "softmax"},
        {"normalize": "whiten"},
        {"architecture": "topk"},
        {"architecture": "topk", "k": 0},
        {"architecture": "topk", "k": F + 1},
        {"d_in": 0},
        {"d_sae": -3},
    ],
)
def test_bad_configs_raise(kwargs):
    base = {"d_in": D, "d_sae": F}
    base.update(kwargs)
    with pytest.raises(SAEFormatError):
        SAEConfig(**base)


def test_check_feature_and_properties():
    sae = random_sae("relu")
    assert sae.check_feature(3) == 3
    assert sae.d_in == D and sae.d_sae == F and sae.dtype == torch.float32
    with pytest.raises(ValueError):
        sae.check_feature(F)
    with pytest.raises(ValueError):
        sae.check_feature(True)


def test_nudge_is_the_sum_of_scaled_decoder_rows_and_follows_weight_updates():
    from saesteer import Add

    sae = random_sae("relu")
    adds = (Add(3, 2.0), Add(17, -0.5), Add(3, 1.0))
    with torch.no_grad():
        want = 3.0 * sae.W_dec[3] - 0.5 * sae.W_dec[17]
        torch.testing.assert_close(sae.nudge(adds), want)
        assert sae.nudge(adds) is sae.nudge(adds)  # computed once
        sae.W_dec.mul_(2.0)
        torch.testing.assert_close(sae.nudge(adds), 2 * want)


def test_topk_subset_encode_in_row_chunks_gives_the_full_encode(monkeypatch):
    """A long prefill is encoded in chunks of at most TOPK_CHUNK_BYTES of pre-activation (bounded
    memory); the edited features' values are still exactly those of the dense encode."""
    import saesteer.sae.module as module

    sae = random_sae("topk", k=4)
    x = torch.randn(3, 37, sae.d_in)
    idx = torch.tensor([0, 5, 11])
    x_in = sae.encoder_input(x)
    dense = sae.encode(x)[..., idx]
    whole = sae.encode_subset_normalized(x_in, idx)
    row_bytes = sae.d_sae * sae.W_enc.element_size()
    monkeypatch.setattr(module, "TOPK_CHUNK_BYTES", 8 * row_bytes + 3)   # 8 rows: 111 rows -> 14 chunks, the last short
    calls = []
    real = sae.pre_activation
    monkeypatch.setattr(sae, "pre_activation", lambda c: calls.append(len(c)) or real(c))
    chunked = sae.encode_subset_normalized(x_in, idx)
    assert calls == [8] * 13 + [7]
    assert torch.equal(chunked, whole)
    assert torch.allclose(chunked, dense, atol=1e-6)
    assert (dense != 0).any()                           # the features do fire somewhere
