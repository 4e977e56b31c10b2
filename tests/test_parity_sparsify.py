"""saesteer against eai-sparsify's own SparseCoder on folders it saved itself."""

from __future__ import annotations

import pytest
import torch

sparsify = pytest.importorskip("sparsify")

from saesteer.errors import SAEFormatError  # noqa: E402
from saesteer.sae import detect_format, load_sae  # noqa: E402

TOL = {"atol": 1e-5, "rtol": 1e-5}


def coder(d: int, seed: int, **cfg) -> "sparsify.SparseCoder":
    torch.manual_seed(seed)
    sc = sparsify.SparseCoder(d, sparsify.SparseCoderConfig(**cfg))
    with torch.no_grad():
        for p in sc.parameters():
            p.copy_(torch.randn_like(p))
    return sc.eval()


def reference(sc, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense features (sparsify returns top_acts/top_indices) and its own decode."""
    with torch.no_grad():
        out = sc.encode(x)
        dense = torch.zeros(*x.shape[:-1], sc.num_latents).scatter(-1, out.top_indices, out.top_acts)
        return dense, sc.decode(out.top_acts, out.top_indices)


def test_single_hookpoint_folder(tmp_path):
    sc = coder(16, 0, expansion_factor=4, k=7)
    sc.save_to_disk(tmp_path / "layers.5")
    assert detect_format(tmp_path / "layers.5") == "sparsify"
    ours = load_sae(tmp_path / "layers.5")
    assert ours.cfg.architecture == "topk" and ours.cfg.k == 7 and ours.d_sae == 64
    assert ours.cfg.hook_name == "layers.5"
    x = torch.randn(6, 16) * 2
    dense, x_hat = reference(sc, x)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), dense, **TOL)
        torch.testing.assert_close(ours(x), x_hat, **TOL)
        torch.testing.assert_close(ours.decode(dense), x_hat, **TOL)


def test_multi_hookpoint_parent_folder(tmp_path):
    coders = {"layers.2": coder(12, 1, num_latents=40, k=5), "layers.10": coder(12, 2, expansion_factor=3, k=4)}
    for name, sc in coders.items():
        sc.save_to_disk(tmp_path / name)
    assert detect_format(tmp_path) == "sparsify"
    with pytest.raises(SAEFormatError, match="layers.2, layers.10"):
        load_sae(tmp_path)
    with pytest.raises(SAEFormatError, match="available"):
        load_sae(tmp_path, hookpoint="layers.3")
    x = torch.randn(2, 3, 12)
    for name, sc in coders.items():
        ours = load_sae(tmp_path, hookpoint=name)
        assert ours.cfg.hook_name == name and ours.d_sae == sc.num_latents
        dense, x_hat = reference(sc, x.reshape(-1, 12))
        with torch.no_grad():
            torch.testing.assert_close(ours.encode(x).reshape(-1, sc.num_latents), dense, **TOL)
            torch.testing.assert_close(ours(x).reshape(-1, 12), x_hat, **TOL)


def test_transcoder_at_a_hookpoint_other_than_an_mlp_is_refused(tmp_path):
    sc = sparsify.SparseCoder(8, sparsify.SparseCoderConfig(expansion_factor=2, k=3, transcode=True,
                                                            skip_connection=True))
    sc.save_to_disk(tmp_path / "layers.3")
    with pytest.raises(SAEFormatError, match="transcoders of layers.L.mlp"):
        load_sae(tmp_path / "layers.3")


@pytest.mark.parametrize("skip", [False, True])
def test_transcoder_folder_matches_sparsify_forward_and_steers(tmp_path, skip):
    """transcode=true: no b_dec subtraction, output = decode (+ x @ W_skip.T); placed at the MLP."""
    import saesteer
    from tiny import batch, tiny_lm

    sc = coder(32, 3, expansion_factor=2, k=6, transcode=True, skip_connection=skip)
    sc.save_to_disk(tmp_path / "layers.1.mlp")
    ours = load_sae(tmp_path / "layers.1.mlp")
    assert ours.cfg.transcoder and ours.cfg.skip == skip and not ours.cfg.apply_b_dec_to_input
    assert (ours.cfg.hook_name, ours.cfg.hook_name_out) == ("blocks.1.hook_mlp_in", "layers.1.mlp")
    x = torch.randn(6, 32)
    with torch.no_grad():
        out = sc(x)
        dense, _ = reference(sc, x)
        torch.testing.assert_close(ours.encode(x), dense, **TOL)
        torch.testing.assert_close(ours(x), out.sae_out, **TOL)
    lm = tiny_lm("llama")
    sm = saesteer.wrap(lm, ours)
    assert sm.attachment().point_out.name == "blocks.1.hook_mlp_out"
    b = batch()
    with torch.no_grad():
        assert torch.equal(sm(**b).logits, lm(**b).logits)
        assert not torch.allclose(sm(**b, edits={3: 20.0}).logits, lm(**b).logits, atol=1e-3)
