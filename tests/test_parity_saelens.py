"""saesteer against sae-lens itself: folders sae-lens writes load with equal outputs, and folders
saesteer writes load in sae-lens with equal outputs."""

from __future__ import annotations

import pytest
import torch

sae_lens = pytest.importorskip("sae_lens")

from saesteer.sae import SAE, SAEConfig, load_sae, save_sae  # noqa: E402

D, F = 16, 64
TOL = {"atol": 1e-5, "rtol": 1e-5}


def randomise(sl):
    """Non-trivial weights: biases and thresholds non-zero, some features active, some not."""
    with torch.no_grad():
        for name, p in sl.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if name == "r_mag" else 1.0))
        if hasattr(sl, "threshold"):
            sl.threshold.copy_(torch.rand_like(sl.threshold) * 2)
    return sl


def sl_cases():
    S = sae_lens
    return {
        "standard": lambda: S.StandardSAE(S.StandardSAEConfig(d_in=D, d_sae=F)),
        "standard_layer_norm": lambda: S.StandardSAE(S.StandardSAEConfig(d_in=D, d_sae=F, normalize_activations="layer_norm")),
        "standard_constant_norm": lambda: S.StandardSAE(
            S.StandardSAEConfig(d_in=D, d_sae=F, normalize_activations="constant_norm_rescale")),
        "standard_no_bdec": lambda: S.StandardSAE(S.StandardSAEConfig(d_in=D, d_sae=F, apply_b_dec_to_input=False)),
        "jumprelu": lambda: S.JumpReLUSAE(S.JumpReLUSAEConfig(d_in=D, d_sae=F)),
        "jumprelu_layer_norm": lambda: S.JumpReLUSAE(S.JumpReLUSAEConfig(d_in=D, d_sae=F, normalize_activations="layer_norm")),
        "topk": lambda: S.TopKSAE(S.TopKSAEConfig(d_in=D, d_sae=F, k=6)),
        "topk_rescaled": lambda: S.TopKSAE(S.TopKSAEConfig(d_in=D, d_sae=F, k=6, rescale_acts_by_decoder_norm=True)),
        "topk_constant_norm": lambda: S.TopKSAE(
            S.TopKSAEConfig(d_in=D, d_sae=F, k=6, normalize_activations="constant_norm_rescale")),
        "gated": lambda: S.GatedSAE(S.GatedSAEConfig(d_in=D, d_sae=F)),
        "gated_layer_norm": lambda: S.GatedSAE(S.GatedSAEConfig(d_in=D, d_sae=F, normalize_activations="layer_norm")),
    }


def sl_outputs(sl, x):
    with torch.no_grad():
        f = sl.encode(x)
        return f, sl.decode(f)  # decode undoes the normalisation encode just measured


def ours_outputs(sae: SAE, x):
    with torch.no_grad():
        return sae.encode(x), sae(x)


@pytest.mark.parametrize("case", list(sl_cases()))
def test_saelens_folder_loads_with_equal_outputs(tmp_path, case):
    torch.manual_seed(0)
    sl = randomise(sl_cases()[case]())
    sl.cfg.metadata.hook_name = "blocks.1.hook_resid_post"
    sl.save_model(tmp_path)
    ours = load_sae(tmp_path)
    assert ours.cfg.hook_name == "blocks.1.hook_resid_post"
    x = torch.randn(3, 5, D) * 2 + 0.3
    f_sl, xh_sl = sl_outputs(sl, x)
    f, xh = ours_outputs(ours, x)
    assert (f_sl != 0).any() and (f_sl == 0).any()
    torch.testing.assert_close(f, f_sl, **TOL)
    torch.testing.assert_close(xh, xh_sl, **TOL)
    # decoding sae-lens' own features gives sae-lens' reconstruction too
    with torch.no_grad():
        _, shift, scale = ours.normalize(x)
        torch.testing.assert_close(ours.decode(f_sl, shift, scale), xh_sl, **TOL)


@pytest.mark.parametrize("kind", ["batchtopk", "matryoshka_batchtopk"])
@pytest.mark.parametrize("how", ["save_inference_model", "save_model"])
def test_batchtopk_training_sae(tmp_path, kind, how):
    """BatchTopK / Matryoshka are saved for inference as JumpReLU (scalar threshold broadcast, decoder
    norm folded); a raw training checkpoint converts to the same thing."""
    S = sae_lens
    torch.manual_seed(1)
    if kind == "batchtopk":
        sl = S.BatchTopKTrainingSAE(S.BatchTopKTrainingSAEConfig(d_in=D, d_sae=F, k=6))
    else:
        sl = S.MatryoshkaBatchTopKTrainingSAE(S.MatryoshkaBatchTopKTrainingSAEConfig(
            d_in=D, d_sae=F, k=6, matryoshka_widths=[16, F]))
    randomise(sl)
    sl.topk_threshold = torch.tensor(0.9, dtype=torch.double)
    getattr(sl, how)(tmp_path)
    reference = S.SAE.load_from_disk(tmp_path) if how == "save_inference_model" else None
    if reference is None:
        sl.save_inference_model(tmp_path / "inference")
        reference = S.SAE.load_from_disk(tmp_path / "inference")
    assert type(reference).__name__ == "JumpReLUSAE"
    ours = load_sae(tmp_path)
    assert ours.cfg.architecture == "jumprelu" and ours.cfg.source_architecture == kind
    x = torch.randn(4, D) * 2
    f_sl, xh_sl = sl_outputs(reference, x)
    f, xh = ours_outputs(ours, x)
    assert (f_sl != 0).any()
    torch.testing.assert_close(f, f_sl, **TOL)
    torch.testing.assert_close(xh, xh_sl, **TOL)


def random_ours(arch: str, normalize: str, **kw) -> SAE:
    sae = SAE(SAEConfig(d_in=D, d_sae=F, architecture=arch, normalize=normalize,
                        hook_name="blocks.0.hook_mlp_out", model_name="tiny-model", **kw))
    with torch.no_grad():
        for name, p in sae.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if name == "r_mag" else 1.0))
        if arch == "jumprelu":
            sae.threshold.copy_(torch.rand(F) * 2)
    return sae.eval()


@pytest.mark.parametrize("arch,kw", [("relu", {}), ("jumprelu", {}), ("topk", {"k": 5}), ("gated", {}),
                                     ("relu", {"apply_b_dec_to_input": False})], ids=str)
@pytest.mark.parametrize("normalize", ["none", "layer_norm", "constant_norm_rescale"])
def test_saesteer_folder_loads_in_saelens(tmp_path, arch, kw, normalize):
    torch.manual_seed(2)
    ours = random_ours(arch, normalize, **kw)
    save_sae(ours, tmp_path)
    sl = sae_lens.SAE.load_from_disk(tmp_path)
    assert sl.cfg.metadata.hook_name == "blocks.0.hook_mlp_out"
    assert sl.cfg.metadata.model_name == "tiny-model"
    x = torch.randn(2, 4, D) * 2 - 0.2
    f_sl, xh_sl = sl_outputs(sl, x)
    f, xh = ours_outputs(ours, x)
    torch.testing.assert_close(f, f_sl, **TOL)
    torch.testing.assert_close(xh, xh_sl, **TOL)


def test_release_table_equals_saelens_own_directory():
    """saesteer's release table (read from sae-lens's yaml without importing sae-lens) says what
    sae-lens's own python API says, for every SAE of every release: repo, folder, Neuronpedia id,
    norm scaling factor."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    from saesteer.sae.formats import releases

    ours = releases.table()[0]
    theirs = get_pretrained_saes_directory()
    assert set(ours) == set(theirs)
    n = 0
    for name, lk in theirs.items():
        for sae_id, path in lk.saes_map.items():
            repo_id, folder, extra = releases.lookup(name, sae_id)
            assert (repo_id, folder, extra["model_name"]) == (lk.repo_id, path, lk.model), (name, sae_id)
            assert extra.get("neuronpedia_id") == lk.neuronpedia_id.get(sae_id), (name, sae_id)
            assert extra.get("norm_scaling_factor") == lk.norm_scaling_factor.get(sae_id), (name, sae_id)
            n += 1
    assert n > 10000
    assert releases.split("not-a-release", None) is None
