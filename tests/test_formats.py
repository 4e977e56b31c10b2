"""Every reader on files written here in that format's layout, detection, safety, and the hub path."""

from __future__ import annotations

import fnmatch
import json
import pickle
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from saesteer.errors import HubUnavailableError, SAEFormatError
from saesteer.sae import SAE, SAEConfig, detect_format, load_sae, save_sae

D, F = 10, 32
TOL = {"atol": 1e-5, "rtol": 1e-5}


def rand(*shape, scale=1.0):
    return torch.randn(*shape) * scale


def topk_dense(z: torch.Tensor, k: int, relu: bool) -> torch.Tensor:
    vals, idx = z.topk(k, dim=-1)
    return torch.zeros_like(z).scatter(-1, idx, vals.clamp(min=0) if relu else vals)


# ------------------------------------------------------------------------------ SAELens round trip
@pytest.mark.parametrize("arch,kw", [("relu", {}), ("jumprelu", {}), ("topk", {"k": 4}),
                                     ("topk", {"k": 4, "topk_relu": False}), ("gated", {})], ids=str)
@pytest.mark.parametrize("normalize", ["none", "layer_norm", "constant_norm_rescale"])
@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_save_load_round_trip(tmp_path, arch, kw, normalize, apply_b_dec):
    torch.manual_seed(1)
    cfg = SAEConfig(d_in=D, d_sae=F, architecture=arch, normalize=normalize, norm_eps=1e-6,
                    apply_b_dec_to_input=apply_b_dec, hook_name="blocks.2.hook_resid_post",
                    model_name="tiny", source_architecture="x_arch", source_format="sarm",
                    metadata={"note": "hi", "layer": 2}, **kw)
    sae = SAE(cfg)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn_like(p))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_sae(sae, tmp_path / "out")
    assert detect_format(tmp_path / "out") == "saelens"
    back = load_sae(tmp_path / "out")
    assert not back.training
    for field in ("d_in", "d_sae", "architecture", "k", "apply_b_dec_to_input", "normalize", "norm_eps",
                  "topk_relu", "hook_name", "model_name", "source_architecture", "source_format"):
        assert getattr(back.cfg, field) == getattr(cfg, field), field
    assert back.cfg.metadata["note"] == "hi"
    for name, p in sae.named_parameters():
        if not (arch == "gated" and name == "b_enc"):  # unused by gated SAEs, not saved
            assert torch.equal(p, getattr(back, name)), name
    x = rand(3, D, scale=2)
    with torch.no_grad():
        assert torch.equal(back.encode(x), sae.encode(x))
        assert torch.equal(back(x), sae(x))


def test_load_options_dtype_and_weights_file(tmp_path):
    sae = SAE(SAEConfig(d_in=D, d_sae=F))
    save_sae(sae, tmp_path)
    assert load_sae(tmp_path, dtype=torch.float64).W_enc.dtype == torch.float64
    assert load_sae(tmp_path / "sae_weights.safetensors").d_sae == F
    assert detect_format(tmp_path / "sae_weights.safetensors") == "saelens"


def test_saelens_old_config_keys(tmp_path):
    """pre-6.0 cfg: hook_point, activation_fn_str topk with activation_fn_kwargs.k."""
    torch.manual_seed(2)
    t = {"W_enc": rand(D, F), "b_enc": rand(F), "W_dec": rand(F, D), "b_dec": rand(D)}
    save_file(t, str(tmp_path / "sae_weights.safetensors"))
    (tmp_path / "cfg.json").write_text(json.dumps({
        "d_in": D, "d_sae": F, "hook_point": "blocks.4.hook_resid_pre", "model_name": "gpt2",
        "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 3}, "normalize_activations": False,
        "apply_b_dec_to_input": True, "dtype": "float32",
    }))
    sae = load_sae(tmp_path)
    assert sae.cfg.architecture == "topk" and sae.cfg.k == 3
    assert sae.cfg.hook_name == "blocks.4.hook_resid_pre" and sae.cfg.model_name == "gpt2"
    x = rand(4, D)
    ref = topk_dense((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"], 3, relu=True)
    torch.testing.assert_close(sae.encode(x).detach(), ref, **TOL)


def test_saelens_expected_average_only_in_folds_stored_scale(tmp_path):
    torch.manual_seed(3)
    t = {"W_enc": rand(D, F), "b_enc": rand(F), "W_dec": rand(F, D), "b_dec": rand(D)}
    save_file(t, str(tmp_path / "sae_weights.safetensors"))
    cfg = {"d_in": D, "d_sae": F, "architecture": "standard", "normalize_activations": "expected_average_only_in",
           "apply_b_dec_to_input": True, "metadata": {"sae_lens_version": "6.1.0", "norm_scaling_factor": 2.5}}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    sae = load_sae(tmp_path)
    x = rand(4, D)
    ref_f = torch.relu((2.5 * x - t["b_dec"]) @ t["W_enc"] + t["b_enc"])
    torch.testing.assert_close(sae.encode(x).detach(), ref_f, **TOL)
    torch.testing.assert_close(sae(x).detach(), (ref_f @ t["W_dec"] + t["b_dec"]) / 2.5, **TOL)


def test_saelens_refuses_temporal_saes(tmp_path):
    t = {"W_enc": rand(D, F), "b_enc": rand(F), "W_dec": rand(F, D), "b_dec": rand(D)}
    save_file(t, str(tmp_path / "sae_weights.safetensors"))
    (tmp_path / "cfg.json").write_text(json.dumps({"d_in": D, "d_sae": F, "architecture": "temporal",
                                                    "metadata": {"sae_lens_version": "6.2.0"}}))
    with pytest.raises(SAEFormatError, match="not supported"):
        load_sae(tmp_path)


@pytest.mark.parametrize("arch", ["transcoder", "skip_transcoder", "jumprelu_transcoder", "jumprelu_skip_transcoder"])
def test_saelens_transcoders_round_trip_with_sae_lens(tmp_path, arch):
    """saesteer writes sae-lens transcoders that sae-lens loads, and reads them back: same forward."""
    from sae_lens import SAE as SaeLensSAE

    from saesteer.sae.module import SAE, SAEConfig

    torch.manual_seed(21)
    act, skip = ("jumprelu" if arch.startswith("jumprelu") else "relu"), "skip" in arch
    tc = SAE(SAEConfig(d_in=D, d_sae=F, architecture=act, apply_b_dec_to_input=False, d_out=6, skip=skip,
                       hook_name="blocks.1.hook_mlp_in", hook_name_out="blocks.1.hook_mlp_out"))
    with torch.no_grad():
        for p in tc.parameters():
            p.copy_(rand(*p.shape))
        if act == "jumprelu":
            tc.threshold.copy_(torch.rand(F) * 0.1)
    save_sae(tc, tmp_path / "tc")
    assert json.loads((tmp_path / "tc" / "cfg.json").read_text())["architecture"] == arch
    theirs = SaeLensSAE.load_from_disk(str(tmp_path / "tc"))
    back = load_sae(tmp_path / "tc")
    assert (back.cfg.d_out, back.cfg.skip, back.cfg.hook_name_out) == (6, skip, "blocks.1.hook_mlp_out")
    x = rand(5, D)
    with torch.no_grad():
        torch.testing.assert_close(back(x), theirs(x), **TOL)
        torch.testing.assert_close(back.encode(x), theirs.encode(x), **TOL)
        torch.testing.assert_close(tc(x), back(x), **TOL)


# ------------------------------------------------------------------------------ Gemma Scope
def test_gemmascope_npz(tmp_path):
    torch.manual_seed(4)
    folder = tmp_path / "gemma-scope-2b-pt-res" / "layer_5" / "width_16k" / "average_l0_71"
    folder.mkdir(parents=True)
    t = {"W_enc": rand(D, F), "W_dec": rand(F, D), "b_enc": rand(F), "b_dec": rand(D), "threshold": torch.rand(F)}
    np.savez(folder / "params.npz", **{k: v.numpy() for k, v in t.items()})
    assert detect_format(folder) == "gemmascope"
    sae = load_sae(folder)
    assert sae.cfg.architecture == "jumprelu" and sae.cfg.apply_b_dec_to_input is False
    assert sae.cfg.hook_name == "blocks.5.hook_resid_post" and sae.cfg.model_name == "gemma-2-2b"
    x = rand(6, D)
    z = x @ t["W_enc"] + t["b_enc"]  # no b_dec subtraction
    f = torch.where(z > t["threshold"], z.clamp(min=0), torch.zeros_like(z))
    torch.testing.assert_close(sae.encode(x).detach(), f, **TOL)
    torch.testing.assert_close(sae(x).detach(), f @ t["W_dec"] + t["b_dec"], **TOL)


# ------------------------------------------------------------------------------ dictionary_learning
def _dl_write(folder: Path, sd: dict, trainer: dict | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(sd, folder / "ae.pt")
    if trainer is not None:
        (folder / "config.json").write_text(json.dumps({"trainer": trainer, "buffer": {"ctx_len": 128}}))
    return folder


def _trainer(cls, **kw):
    return {"dict_class": cls, "activation_dim": D, "dict_size": F, "layer": 3, "lm_name": "EleutherAI/pythia-70m",
            "submodule_name": "resid_post_layer_3", **kw}


@pytest.mark.parametrize("with_config", [True, False])
def test_dl_autoencoder_relu_normalises_decoder(tmp_path, with_config):
    torch.manual_seed(5)
    sd = {"bias": rand(D), "encoder.weight": rand(F, D), "encoder.bias": rand(F), "decoder.weight": rand(D, F)}
    folder = _dl_write(tmp_path / "trainer_0", sd, _trainer("AutoEncoder") if with_config else None)
    assert detect_format(folder) == "dictionary_learning"
    sae = load_sae(folder)
    x = rand(5, D)
    f = torch.relu((x - sd["bias"]) @ sd["encoder.weight"].T + sd["encoder.bias"])
    x_hat = f @ sd["decoder.weight"].T + sd["bias"]
    n = sd["decoder.weight"].norm(dim=0)  # from_pretrained(normalize_decoder=True): features scale by n
    torch.testing.assert_close(sae.encode(x).detach(), f * n, **TOL)
    torch.testing.assert_close(sae(x).detach(), x_hat, **TOL)
    assert sae.cfg.source_architecture == "AutoEncoder"
    if with_config:
        assert sae.cfg.hook_name == "blocks.3.hook_resid_post"
        assert sae.cfg.model_name == "EleutherAI/pythia-70m"
    else:
        assert sae.cfg.metadata["dict_class_guessed"]


@pytest.mark.parametrize("with_config", [True, False])
def test_dl_topk_ignores_threshold(tmp_path, with_config):
    torch.manual_seed(6)
    sd = {"encoder.weight": rand(F, D), "encoder.bias": rand(F), "decoder.weight": rand(D, F), "b_dec": rand(D),
          "k": torch.tensor(4, dtype=torch.int), "threshold": torch.tensor(0.8)}
    folder = _dl_write(tmp_path, sd, _trainer("AutoEncoderTopK", k=4) if with_config else None)
    sae = load_sae(folder)
    assert sae.cfg.architecture == "topk" and sae.cfg.k == 4
    x = rand(5, D)
    f = topk_dense(torch.relu((x - sd["b_dec"]) @ sd["encoder.weight"].T + sd["encoder.bias"]), 4, relu=True)
    torch.testing.assert_close(sae.encode(x).detach(), f, **TOL)
    torch.testing.assert_close(sae(x).detach(), f @ sd["decoder.weight"].T + sd["b_dec"], **TOL)


@pytest.mark.parametrize("threshold", [0.6, -1.0])
@pytest.mark.parametrize("cls", ["BatchTopKSAE", "MatryoshkaBatchTopKSAE"])
def test_dl_batchtopk_threshold_rule(tmp_path, threshold, cls):
    torch.manual_seed(7)
    W_enc, b_enc, W_dec, b_dec = rand(D, F), rand(F), rand(F, D), rand(D)
    base = {"k": torch.tensor(5, dtype=torch.int), "threshold": torch.tensor(threshold)}
    if cls == "BatchTopKSAE":
        sd = {"encoder.weight": W_enc.T.contiguous(), "encoder.bias": b_enc, "decoder.weight": W_dec.T.contiguous(),
              "b_dec": b_dec, **base}
    else:
        sd = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec, "group_sizes": torch.tensor([8, 24]), **base}
    if threshold >= 0:
        sae = load_sae(_dl_write(tmp_path, sd, _trainer(cls, k=5)))
    else:
        with pytest.warns(UserWarning, match="threshold was never set"):
            sae = load_sae(_dl_write(tmp_path, sd, _trainer(cls, k=5)))
    x = rand(6, D)
    post = torch.relu((x - b_dec) @ W_enc + b_enc)
    # the library's default encode: relu(z) * (relu(z) > threshold); threshold -1 (unset) is plain ReLU
    f = post * (post > threshold)
    if threshold >= 0:
        assert sae.cfg.architecture == "jumprelu"
    else:
        assert sae.cfg.architecture == "relu" and sae.cfg.metadata["threshold_unset"]
        assert (f > 0).sum(-1).max() > 5  # denser than k: what the reference does
    torch.testing.assert_close(sae.encode(x).detach(), f, **TOL)
    torch.testing.assert_close(sae(x).detach(), f @ W_dec + b_dec, **TOL)
    if cls == "MatryoshkaBatchTopKSAE":
        assert sae.cfg.metadata["group_sizes"] == [8, 24]
        # class detection from keys alone
        (tmp_path / "config.json").unlink()
        assert load_sae(tmp_path).cfg.source_architecture == cls


@pytest.mark.parametrize("with_config", [True, False])
def test_dl_jumprelu(tmp_path, with_config):
    torch.manual_seed(8)
    sd = {"W_enc": rand(D, F), "b_enc": rand(F), "W_dec": rand(F, D), "b_dec": rand(D), "threshold": torch.rand(F)}
    sae = load_sae(_dl_write(tmp_path, sd, _trainer("JumpReluAutoEncoder") if with_config else None))
    x = rand(5, D)
    z = x @ sd["W_enc"] + sd["b_enc"]  # apply_b_dec_to_input is False for this class
    f = torch.relu(z * (z > sd["threshold"]))
    torch.testing.assert_close(sae.encode(x).detach(), f, **TOL)
    torch.testing.assert_close(sae(x).detach(), f @ sd["W_dec"] + sd["b_dec"], **TOL)


@pytest.mark.parametrize("with_config", [True, False])
def test_dl_gated(tmp_path, with_config):
    torch.manual_seed(9)
    sd = {"decoder_bias": rand(D), "encoder.weight": rand(F, D), "r_mag": rand(F, scale=0.3),
          "gate_bias": rand(F), "mag_bias": rand(F), "decoder.weight": rand(D, F)}
    sae = load_sae(_dl_write(tmp_path, sd, _trainer("GatedAutoEncoder") if with_config else None))
    assert sae.cfg.architecture == "gated"
    x = rand(5, D)
    x_enc = (x - sd["decoder_bias"]) @ sd["encoder.weight"].T
    f = (x_enc + sd["gate_bias"] > 0).float() * torch.relu(sd["r_mag"].exp() * x_enc + sd["mag_bias"])
    torch.testing.assert_close(sae.encode(x).detach(), f, **TOL)
    torch.testing.assert_close(sae(x).detach(), f @ sd["decoder.weight"].T + sd["decoder_bias"], **TOL)


# ------------------------------------------------------------------------------ sparsify (no library)
def _sparsify_write(folder: Path, d: int = D, F_: int = F, k: int = 4, **cfg_kw) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    t = {"encoder.weight": rand(F_, d), "encoder.bias": rand(F_), "W_dec": rand(F_, d), "b_dec": rand(d)}
    save_file(t, str(folder / "sae.safetensors"))
    cfg = {"activation": "topk", "expansion_factor": 32, "normalize_decoder": True, "num_latents": F_, "k": k,
           "multi_topk": False, "skip_connection": False, "transcode": False, "d_in": d, **cfg_kw}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return t


def test_sparsify_folder_by_hand(tmp_path):
    torch.manual_seed(10)
    t = _sparsify_write(tmp_path / "layers.6")
    _sparsify_write(tmp_path / "layers.12")
    assert detect_format(tmp_path) == "sparsify" and detect_format(tmp_path / "layers.6") == "sparsify"
    sae = load_sae(tmp_path, hookpoint="layers.6")
    assert sae.cfg.hook_name == "layers.6" and sae.cfg.k == 4
    x = rand(5, D)
    f = topk_dense(torch.relu((x - t["b_dec"]) @ t["encoder.weight"].T + t["encoder.bias"]), 4, relu=True)
    torch.testing.assert_close(sae.encode(x).detach(), f, **TOL)
    torch.testing.assert_close(sae(x).detach(), f @ t["W_dec"] + t["b_dec"], **TOL)
    with pytest.raises(SAEFormatError, match="layers.6, layers.12"):
        load_sae(tmp_path)
    with pytest.raises(SAEFormatError, match="available: layers.6, layers.12"):
        load_sae(tmp_path, hookpoint="layers.99")


@pytest.mark.parametrize("bad,why", [({"transcode": True}, "transcoders of layers.L.mlp"),
                                     ({"skip_connection": True}, "not supported"),
                                     ({"activation": "groupmax"}, "not supported")])
def test_sparsify_refusals(tmp_path, bad, why):
    _sparsify_write(tmp_path, **bad)
    with pytest.raises(SAEFormatError, match=why):
        load_sae(tmp_path)


# ------------------------------------------------------------------------------ SARM
def sarm_by_hand(t: dict, prefix: str, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = x.mean(-1, keepdim=True), x.std(-1, keepdim=True)  # SARM pre_process: unbiased std
    h = (x - mean) / (std + 1e-6)
    pre = (h - t[prefix + "pre_bias"]) @ t[prefix + "encoder.weight"].T + t[prefix + "latent_bias"]
    z = topk_dense(pre, k, relu=False)  # kept as they are, no ReLU
    dec = t.get(prefix + "decoder.weight", t.get(prefix + "_decoder.weight"))
    return z, (z @ dec.T + t[prefix + "pre_bias"]) * std + mean


def _sarm_tensors(prefix: str = "", decoder: str = "decoder.weight") -> dict:
    return {prefix + "pre_bias": rand(D), prefix + "latent_bias": rand(F) - 3.0,
            prefix + "encoder.weight": rand(F, D), prefix + decoder: rand(D, F)}


@pytest.mark.parametrize("decoder", ["decoder.weight", "_decoder.weight"])
def test_sarm_standalone_file(tmp_path, decoder):
    torch.manual_seed(11)
    t = _sarm_tensors(decoder=decoder)
    file = tmp_path / "Llama-3.1-8B_token_Latent32_Layer8_K6_50M.safetensors"
    save_file(t, str(file))
    assert detect_format(file) == "sarm" and detect_format(tmp_path) == "sarm"
    sae = load_sae(file)
    assert sae.cfg.k == 6 and sae.cfg.topk_relu is False and sae.cfg.normalize == "layer_norm"
    assert sae.cfg.norm_eps == 1e-6 and sae.cfg.hook_name == "blocks.7.hook_resid_post"
    x = rand(2, 4, D, scale=3) + 1
    z, x_hat = sarm_by_hand(t, "", x, 6)
    assert (z < 0).any()
    torch.testing.assert_close(sae.encode(x).detach(), z, **TOL)
    torch.testing.assert_close(sae(x).detach(), x_hat, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("decoder", ["decoder.weight", "_decoder.weight"])
def test_sarm_pt_state_dict(tmp_path, decoder):
    """A SARM SAE saved as a .pt state dict (what SARM's merge step reads) went to the dictionary_learning
    reader and was refused; it loads as SARM, read with torch.load(weights_only=True)."""
    torch.manual_seed(12)
    t = _sarm_tensors(decoder=decoder)
    file = tmp_path / "Llama-3.1-8B_token_Latent32_Layer8_K6_50M.pt"
    torch.save(t, file)
    sae = load_sae(file)
    assert sae.cfg.source_format == "sarm" and sae.cfg.k == 6 and sae.cfg.hook_name == "blocks.7.hook_resid_post"
    x = rand(2, 4, D, scale=3) + 1
    z, x_hat = sarm_by_hand(t, "", x, 6)
    torch.testing.assert_close(sae.encode(x).detach(), z, **TOL)
    torch.testing.assert_close(sae(x).detach(), x_hat, atol=1e-4, rtol=1e-5)


def test_sarm_sharded_reward_model_checkpoint(tmp_path):
    torch.manual_seed(12)
    t = _sarm_tensors("sae.")
    save_file({"model.embed_tokens.weight": rand(7, D)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({**t, "score.weight": rand(1, F)}, str(tmp_path / "model-00002-of-00002.safetensors"))
    wm = {"model.embed_tokens.weight": "model-00001-of-00002.safetensors"}
    wm.update({k: "model-00002-of-00002.safetensors" for k in [*t, "score.weight"]})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "sarm_param": {
        "sae_latent_size": F, "sae_k": 5, "sae_source_layer": 4, "sarm_use_activation": True}}))
    assert detect_format(tmp_path) == "sarm"
    sae = load_sae(tmp_path)
    assert sae.cfg.k == 5 and sae.cfg.hook_name == "blocks.3.hook_resid_post"
    assert sae.cfg.metadata["key_prefix"] == "sae." and sae.cfg.metadata["score_key"] == "score.weight"
    x = rand(3, D, scale=2)
    z, x_hat = sarm_by_hand(t, "sae.", x, 5)
    torch.testing.assert_close(sae.encode(x).detach(), z, **TOL)
    torch.testing.assert_close(sae(x).detach(), x_hat, atol=1e-4, rtol=1e-5)


# ------------------------------------------------------------------------------ safety and errors
class Evil:
    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil(marker: Path) -> Evil:
    e = Evil()
    e.marker = str(marker)
    return e


def test_pickle_file_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "PWNED"
    with open(tmp_path / "sae.pkl", "wb") as fh:
        pickle.dump(_evil(marker), fh)
    with pytest.raises(SAEFormatError, match="unsafe"):
        load_sae(tmp_path / "sae.pkl")
    with pytest.raises(SAEFormatError, match="unsafe"):
        load_sae(tmp_path)  # a folder holding only the pickle
    assert not marker.exists()


@pytest.mark.parametrize("how", ["raw_pickle", "torch_save"])
def test_torch_file_needing_code_is_refused(tmp_path, how):
    marker = tmp_path / "PWNED"
    payload = {"encoder.weight": _evil(marker)}
    if how == "raw_pickle":
        with open(tmp_path / "ae.pt", "wb") as fh:
            pickle.dump(payload, fh)
    else:
        torch.save(payload, tmp_path / "ae.pt")
    assert not marker.exists()
    with pytest.raises(SAEFormatError, match="unsafe"):
        load_sae(tmp_path)
    assert not marker.exists()


def test_npz_with_object_arrays_is_refused(tmp_path):
    arr = np.empty(1, dtype=object)
    arr[0] = {"a": 1}
    np.savez(tmp_path / "params.npz", W_enc=arr)
    with pytest.raises(SAEFormatError, match="unsafe"):
        load_sae(tmp_path)


def test_unknown_folder(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0" * 8)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(SAEFormatError) as e:
        load_sae(tmp_path)
    msg = str(e.value)
    assert "weights.bin" in msg and "notes.txt" in msg and "saelens" in msg and "sparsify" in msg
    with pytest.raises(SAEFormatError, match="unknown SAE format"):
        load_sae(tmp_path, format="nope")
    with pytest.raises(SAEFormatError, match="no such file"):
        load_sae(tmp_path / "missing")


def test_parent_of_several_saelens_folders_lists_them(tmp_path):
    for name in ("a", "b"):
        save_sae(SAE(SAEConfig(d_in=D, d_sae=F)), tmp_path / name)
    with pytest.raises(SAEFormatError, match="a \\(saelens\\), b \\(saelens\\)"):
        load_sae(tmp_path)
    assert load_sae(tmp_path, subfolder="b").d_sae == F
    assert load_sae(tmp_path, hookpoint="a").d_sae == F


# ------------------------------------------------------------------------------ hub
def _offline(monkeypatch, tmp_path):
    import huggingface_hub.constants as c

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


def test_hub_id_offline_raises_quickly(monkeypatch, tmp_path):
    _offline(monkeypatch, tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(HubUnavailableError) as e:
        load_sae("some-owner/some-saes", hookpoint="layers.3")
    assert "some-owner/some-saes" in str(e.value) and "local path" in str(e.value)
    with pytest.raises(HubUnavailableError):
        load_sae("some-owner/some-saes/layer_3/width_16k")
    assert time.perf_counter() - t0 < 5


def test_not_a_path_nor_an_id(monkeypatch, tmp_path):
    _offline(monkeypatch, tmp_path)
    with pytest.raises(SAEFormatError, match="neither"):
        load_sae("not-a-release-name-xyz")


@pytest.fixture()
def fake_hub(monkeypatch, tmp_path):
    """huggingface_hub.snapshot_download served from a local folder (fnmatch allow_patterns, as the
    real one); records which files were 'downloaded'."""
    import huggingface_hub

    remote = tmp_path / "remote"
    cache = tmp_path / "cache"
    fetched: list[str] = []

    def snapshot_download(repo_id, *, allow_patterns=None, ignore_patterns=None, local_files_only=False, **_):
        src = remote / repo_id
        if not src.is_dir():
            raise FileNotFoundError(f"no repo {repo_id}")
        dst = cache / repo_id
        for f in src.rglob("*"):
            rel = f.relative_to(src).as_posix()
            if f.is_dir() or (allow_patterns and not any(fnmatch.fnmatch(rel, p) for p in allow_patterns)):
                continue
            if ignore_patterns and any(fnmatch.fnmatch(rel, p) for p in ignore_patterns):
                continue
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dst / rel)
            fetched.append(f"{repo_id}/{rel}")
        dst.mkdir(parents=True, exist_ok=True)
        return str(dst)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    return remote, fetched


def test_hub_sparsify_downloads_only_the_hookpoint(fake_hub):
    remote, fetched = fake_hub
    torch.manual_seed(13)
    t = _sparsify_write(remote / "org/sparsify-saes" / "layers.1")
    _sparsify_write(remote / "org/sparsify-saes" / "layers.2")
    sae = load_sae("org/sparsify-saes", hookpoint="layers.1")
    x = rand(3, D)
    f = topk_dense(torch.relu((x - t["b_dec"]) @ t["encoder.weight"].T + t["encoder.bias"]), 4, relu=True)
    torch.testing.assert_close(sae.encode(x).detach(), f, **TOL)
    assert "org/sparsify-saes/layers.2/sae.safetensors" not in fetched
    with pytest.raises(SAEFormatError, match="layers.1, layers.2"):
        load_sae("org/sparsify-saes")


def test_hub_sarm_downloads_only_the_sae_shard(fake_hub, tmp_path):
    remote, fetched = fake_hub
    torch.manual_seed(14)
    repo = remote / "org/sarm-rm"
    repo.mkdir(parents=True)
    t = _sarm_tensors("sae.")
    save_file({"model.embed_tokens.weight": rand(7, D)}, str(repo / "model-00001-of-00002.safetensors"))
    save_file(t, str(repo / "model-00002-of-00002.safetensors"))
    wm = {"model.embed_tokens.weight": "model-00001-of-00002.safetensors", **{k: "model-00002-of-00002.safetensors" for k in t}}
    (repo / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wm}))
    (repo / "config.json").write_text(json.dumps({"sarm_param": {"sae_k": 4, "sae_source_layer": 2}}))
    sae = load_sae("org/sarm-rm")
    assert sae.cfg.k == 4 and "org/sarm-rm/model-00001-of-00002.safetensors" not in fetched
    x = rand(2, D)
    torch.testing.assert_close(sae.encode(x).detach(), sarm_by_hand(t, "sae.", x, 4)[0], **TOL)


def test_hub_owner_repo_folder_form_and_saelens_release(fake_hub):
    remote, _ = fake_hub
    torch.manual_seed(15)
    folder = remote / "google/gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82"
    folder.mkdir(parents=True)
    t = {"W_enc": rand(D, F), "W_dec": rand(F, D), "b_enc": rand(F), "b_dec": rand(D), "threshold": torch.rand(F)}
    np.savez(folder / "params.npz", **{k: v.numpy() for k, v in t.items()})
    sae = load_sae("google/gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82")
    assert sae.cfg.hook_name == "blocks.12.hook_resid_post"
    for form in (lambda: load_sae("gemma-scope-2b-pt-res-canonical", "layer_12/width_16k/canonical"),
                 lambda: load_sae("gemma-scope-2b-pt-res-canonical", subfolder="layer_12/width_16k/canonical"),
                 lambda: load_sae("gemma-scope-2b-pt-res-canonical/layer_12/width_16k/canonical")):
        sae2 = form()
        assert sae2.cfg.metadata["release"] == "gemma-scope-2b-pt-res-canonical"
        assert sae2.cfg.metadata["neuronpedia_id"] == "gemma-2-2b/12-gemmascope-res-16k"
        assert sae2.cfg.model_name == "gemma-2-2b" and sae2.cfg.hook_name == "blocks.12.hook_resid_post"
        assert torch.equal(sae2.W_enc, sae.W_enc)
    with pytest.raises(SAEFormatError, match="needs an SAE id.*layer_0/width_16k/canonical"):
        load_sae("gemma-scope-2b-pt-res-canonical")


def test_release_whose_sae_is_one_file_downloads_that_file(fake_hub):
    """DeepSeek R1, Qwen Scope and Goodfire releases name a file, not a folder: only it is fetched."""
    remote, fetched = fake_hub
    torch.manual_seed(16)
    repo = remote / "qresearch/DeepSeek-R1-Distill-Llama-8B-SAE-l19"
    repo.mkdir(parents=True)
    t = {"encoder.weight": rand(F, D), "encoder.bias": rand(F), "decoder.weight": rand(D, F), "decoder.bias": rand(D)}
    torch.save(t, repo / "DeepSeek-R1-Distill-Llama-8B-SAE-l19.pt")
    torch.save({"other": rand(3)}, repo / "unrelated.pt")
    sae = load_sae("deepseek-r1-distill-llama-8b-qresearch", "blocks.19.hook_resid_post")
    assert sae.cfg.hook_name == "blocks.19.hook_resid_post" and sae.cfg.source_format == "deepseek_r1"
    assert sae.cfg.metadata["neuronpedia_id"] == "deepseek-r1-distill-llama-8b/19-qresearch-res-65k"
    x = rand(3, D)
    torch.testing.assert_close(sae.encode(x).detach(), torch.relu(x @ t["encoder.weight"].T + t["encoder.bias"]), **TOL)
    assert fetched == ["qresearch/DeepSeek-R1-Distill-Llama-8B-SAE-l19/DeepSeek-R1-Distill-Llama-8B-SAE-l19.pt"]


def test_release_names_without_sae_lens_use_the_shipped_table(fake_hub, monkeypatch):
    """With sae-lens not installed the shipped table (scripts/build_release_table.py) resolves the same."""
    from saesteer.sae.formats import releases

    with_sl = releases.lookup("gemma-scope-2b-pt-res-canonical", "layer_12/width_16k/canonical")
    monkeypatch.setattr(releases, "sae_lens_yaml", lambda: None)
    releases.table.cache_clear()
    try:
        assert releases.table()[1].endswith("(shipped table)")
        assert releases.lookup("gemma-scope-2b-pt-res-canonical", "layer_12/width_16k/canonical") == with_sl
        assert len(releases.table()[0]) >= 100
    finally:
        releases.table.cache_clear()


def test_release_name_offline_fails_fast_naming_repo_and_path(monkeypatch, tmp_path):
    from saesteer.sae.formats import hub

    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    load_sae.__globals__  # noqa: B018 - loaded already
    from saesteer.sae.formats import releases

    releases.table()  # the table is read once per process; the timing below is the lookup and the hub probe
    t0 = time.perf_counter()
    with pytest.raises(HubUnavailableError) as e:
        load_sae("gemma-scope-2b-pt-res-canonical", "layer_12/width_16k/canonical")
    assert time.perf_counter() - t0 < 1.0
    msg = str(e.value)
    assert "google/gemma-scope-2b-pt-res" in msg and "layer_12/width_16k/average_l0_82" in msg and "local path" in msg


def test_save_keeps_half_precision(tmp_path):
    """An fp16 SAE is stored as fp16 (half the bytes) and loads back as fp32 with the same values."""
    from tiny import random_sae

    sae = random_sae().half()
    folder = save_sae(sae, tmp_path / "half")
    from safetensors import safe_open

    with safe_open(str(folder / "sae_weights.safetensors"), "pt") as f:
        assert f.get_tensor("W_dec").dtype == torch.float16
    back = load_sae(folder)
    assert back.dtype == torch.float32
    assert torch.equal(back.W_dec, sae.W_dec.float())
