"""The SAE families users download, each against sae-lens's own loader for it (issue 17): Llama Scope,
Llama Scope R1-Distill, Gemma Scope 2, Qwen Scope, DeepSeek R1, Goodfire, Gemma Scope embedding SAEs.

Files are written in each family's exact hub layout (tests/family_files.py), sae-lens's loader reads
them through a patched ``hf_hub_download``, and its SAE is built as ``SAE.from_pretrained`` builds it.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

pytest.importorskip("sae_lens")

import family_files as ff  # noqa: E402

from saesteer.errors import SAEFormatError  # noqa: E402
from saesteer.sae import detect_format, load_sae, save_sae  # noqa: E402
from saesteer.sae.formats import READERS, _apply_extra, _reader, gemmascope2  # noqa: E402
from saesteer.sae.module import SAE, SAEConfig  # noqa: E402

TOL = {"atol": 1e-5, "rtol": 0.0}


def _ids(keys):
    return [f"{f}-{v}" if v else f for f, v in keys]


# ------------------------------------------------------------------------------------------ parity
@pytest.mark.parametrize("family,variant", ff.PARITY, ids=_ids(ff.PARITY))
def test_family_encodes_and_decodes_as_sae_lens(tmp_path, family, variant):
    case = ff.write(family, tmp_path, variant)
    assert detect_format(case.local) == family
    r = ff.compare(case)
    assert (r["f_sl"] != 0).any() and (r["f_sl"] == 0).any()
    torch.testing.assert_close(r["f"], r["f_sl"], **TOL)
    torch.testing.assert_close(r["xh"], r["xh_sl"], **TOL)
    with torch.no_grad():  # sae-lens's own features decode to its reconstruction
        x_skip = None
        if r["ours"].cfg.skip:
            x_skip = torch.randn(256, r["ours"].d_in, generator=torch.Generator().manual_seed(1)) * case.x_scale
        torch.testing.assert_close(r["ours"].decode(r["f_sl"], x=x_skip), r["xh_sl"], **TOL)
    ours, sl = r["ours"], r["sae_lens"]
    assert r["hook"] == r["hook_sae_lens"]
    assert ours.cfg.model_name == (sl.cfg.metadata.model_name if case.model_in_files else None)
    if r["norm_sae_lens"] == "expected_average_only_in":  # sae-lens found no factor to fold: neither do we
        assert ours.cfg.normalize == "none" and ours.cfg.metadata["input_scale_unknown"]
        assert ours.cfg.metadata["normalize_activations"] == "expected_average_only_in"
    else:
        assert ours.cfg.normalize == r["norm_sae_lens"]
    assert ours.cfg.source_format == family


def test_the_whole_folder_and_the_weights_file_load_alike(tmp_path):
    """Llama Scope: the folder or checkpoints/final.safetensors; R1 / Gemma Scope 2: the weights file."""
    for family in ("llamascope", "llamascope_r1", "gemmascope2"):
        case = ff.write(family, tmp_path / family)
        assert detect_format(case.weights) == family
        a, b = load_sae(case.local), load_sae(case.weights)
        assert torch.equal(a.W_enc, b.W_enc) and torch.equal(a.threshold, b.threshold)


def test_llamascope_folds_the_dataset_norm_and_scales_the_threshold(tmp_path):
    case = ff.write("llamascope", tmp_path)
    sae = load_sae(case.local)
    s = math.sqrt(ff.D) / 2.5
    md = sae.cfg.metadata
    assert md["folded_input_scale"] == pytest.approx(s) and md["dataset_average_activation_norm"]["out"] == 2.75
    assert torch.allclose(sae.threshold, torch.full((ff.F,), 0.3 * s))
    raw = load_file(str(case.weights))
    torch.testing.assert_close(sae.W_enc, raw["encoder.weight"].T * s)
    # a release-name load passes sae-lens's factor as well: not folded twice
    before = sae.W_enc.clone()
    _apply_extra(sae, {"norm_scaling_factor": s})
    assert torch.equal(sae.W_enc, before)


def test_r1_distill_without_norms_warns_and_a_release_load_folds_the_list_factor(tmp_path):
    case = ff.write("llamascope_r1", tmp_path, "no_norms")
    with pytest.warns(UserWarning, match="norm scaling factor"):
        sae = load_sae(case.local)
    s = 2.0
    _apply_extra(sae, {"norm_scaling_factor": s})  # what hub.py hands load_sae for a release name
    assert "input_scale_unknown" not in sae.cfg.metadata and sae.cfg.metadata["folded_input_scale"] == s
    case.fold = s
    sl, _ = ff.reference(case)
    x = torch.randn(64, ff.D) * 2
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x), sl.encode(x), **TOL)
        torch.testing.assert_close(sae(x), sl.decode(sl.encode(x)), **TOL)


def test_sae_weights_safetensors_tells_saelens_from_r1_distill(tmp_path):
    save_sae(SAE(SAEConfig(d_in=ff.D, d_sae=ff.F)), tmp_path / "saelens")
    case = ff.write("llamascope_r1", tmp_path / "r1")
    assert detect_format(tmp_path / "saelens") == "saelens"
    assert detect_format(tmp_path / "saelens" / "sae_weights.safetensors") == "saelens"
    assert detect_format(case.local) == "llamascope_r1" and detect_format(case.weights) == "llamascope_r1"
    # a SAELens folder that also has a config.json stays SAELens
    (tmp_path / "saelens" / "config.json").write_text(json.dumps({"d_model": ff.D, "hook_point_in": "x"}))
    assert detect_format(tmp_path / "saelens") == "saelens"


# ----------------------------------------------------------------------- Gemma Scope 2 transcoders
@pytest.mark.parametrize("variant", ["transcoder", "transcoder_affine"])
def test_gemma3_transcoders_are_read_as_sae_lens_reads_them(tmp_path, variant):
    """Per-layer transcoders load as transcoders: MLP input -> MLP output, W_skip for affine ones; the
    forward parity with sae-lens's JumpReLU(Skip)Transcoder is in the family parity test above."""
    case = ff.write("gemmascope2", tmp_path, variant)
    cfg_sl, sd_sl = ff.sae_lens_load(case)
    cfg, sd = gemmascope2.read(case.local)
    assert cfg["architecture"] == cfg_sl["architecture"]
    assert cfg["hook_name"] == cfg_sl["metadata"]["hook_name"] == "blocks.12.hook_mlp_in"
    assert cfg["hook_name_out"] == cfg_sl["metadata"]["hook_name_out"] == "blocks.12.hook_mlp_out"
    assert cfg["d_out"] == cfg_sl["d_out"] and cfg["d_in"] == cfg_sl["d_in"] and cfg["d_sae"] == cfg_sl["d_sae"]
    assert cfg["hf_hook_name"] == cfg_sl["metadata"]["hf_hook_name"]
    assert cfg["hf_hook_name_out"] == cfg_sl["metadata"]["hf_hook_name_out"]
    assert set(sd) == set(sd_sl) and ("W_skip" in sd) == (variant == "transcoder_affine")
    for k in sd:
        assert torch.equal(sd[k], sd_sl[k]), k
    sae = load_sae(case.local)
    assert sae.cfg.transcoder and sae.cfg.skip == (variant == "transcoder_affine")
    assert (sae.cfg.hook_name, sae.cfg.hook_name_out, sae.d_out) == ("blocks.12.hook_mlp_in", "blocks.12.hook_mlp_out",
                                                                    cfg["d_out"])


def test_gemma3_cross_layer_transcoder_file_is_refused(tmp_path):
    here = tmp_path / "models--google--gemma-scope-2-1b-pt" / ff.REV / "clt" / "width_16k_l0_big"
    here.mkdir(parents=True)
    save_file({"w_enc": torch.randn(ff.D, ff.F), "w_dec": torch.randn(ff.F, 3, ff.D), "b_enc": torch.zeros(ff.F),
               "b_dec": torch.zeros(ff.D), "threshold": torch.zeros(ff.F)}, str(here / "layer_2.safetensors"))
    assert detect_format(here / "layer_2.safetensors") == "gemmascope2"
    with pytest.raises(SAEFormatError, match="cross-layer transcoder"):
        load_sae(here / "layer_2.safetensors")
    _, sd = gemmascope2.read(here / "layer_2.safetensors")
    assert sd["W_dec"].shape == (ff.F, ff.D)  # summed over the layer dim, as sae-lens does


def test_gemma3_sae_with_a_skip_connection_or_other_output_width_is_refused(tmp_path):
    """A resid_post / mlp_out / attn_out folder is an SAE: a skip connection or another output width
    there is no layout Gemma Scope 2 ships, so it is refused instead of read half."""
    case = ff.write("gemmascope2", tmp_path)
    t = load_file(str(case.weights))
    save_file({**t, "affine_skip_connection": torch.zeros(ff.D, ff.D)}, str(case.weights))
    with pytest.raises(SAEFormatError, match="W_skip yes"):
        load_sae(case.local)
    save_file({**t, "w_dec": torch.zeros(ff.F, ff.D + 1), "b_dec": torch.zeros(ff.D + 1)}, str(case.weights))
    with pytest.raises(SAEFormatError, match="d_out=17"):
        load_sae(case.local)


# ----------------------------------------------------------------------------- Qwen Scope details
def test_qwen_scope_k_is_needed_outside_its_repo_folder(tmp_path):
    case = ff.write("qwenscope", tmp_path, "outside_repo")
    with pytest.raises(SAEFormatError, match=r"does not record its TopK k.*SAE-Res-<model>-W<N>K-L0_<k>.*k="):
        load_sae(case.local)
    assert load_sae(case.local, k=8).cfg.k == 8
    with pytest.warns(UserWarning, match="k=5 given, but the folder name says L0_8"):
        inside = ff.write("qwenscope", tmp_path / "repo")
        assert load_sae(inside.local, k=5).cfg.k == 5
    with pytest.raises(SAEFormatError, match="k= is only for"):
        load_sae(ff.write("deepseek_r1", tmp_path / "ds").local, k=8)


def test_qwen_scope_repo_folder_picks_the_layer_by_hookpoint(tmp_path):
    case = ff.write("qwenscope", tmp_path)
    folder = case.local.parent
    sd = torch.load(case.local, weights_only=True)
    torch.save(sd, folder / "layer7.sae.pt")
    assert detect_format(folder) == "qwenscope"
    with pytest.raises(SAEFormatError, match="several layers.*layer3, layer7"):
        load_sae(folder)
    for hp in ("layer7", "layer7.sae.pt", "blocks.7.hook_resid_post", "7"):
        assert load_sae(folder, hookpoint=hp).cfg.hook_name == "blocks.7.hook_resid_post"
    with pytest.raises(SAEFormatError, match="no Qwen Scope SAE for hookpoint 'layer9'"):
        load_sae(folder, hookpoint="layer9")


def test_qwen_scope_width_must_match_the_repo_name(tmp_path):
    case = ff.write("qwenscope", tmp_path)
    wrong = case.local.parent.parent.parent.parent / "models--Qwen--SAE-Res-Qwen3-1.7B-Base-W2K-L0_8"
    case.local.parent.parent.parent.rename(wrong)
    with pytest.raises(SAEFormatError, match="W2K .d_sae=2048. but W_enc has d_sae=1024"):
        load_sae(wrong / ff.REV / "layer3.sae.pt")


# ----------------------------------------------------------------------------- .pt dispatch by keys
def test_torch_files_reach_their_reader_by_name_then_keys(tmp_path):
    g = torch.Generator().manual_seed(3)
    linear = ff._linear(g)
    # DeepSeek's keys are dictionary_learning's AutoEncoderNew: ae.pt stays dictionary_learning
    (tmp_path / "dl").mkdir()
    torch.save(linear, tmp_path / "dl" / "ae.pt")
    assert detect_format(tmp_path / "dl") == "dictionary_learning"
    assert load_sae(tmp_path / "dl").cfg.source_architecture == "AutoEncoderNew"
    torch.save(linear, tmp_path / "model.pt")
    assert detect_format(tmp_path / "model.pt") == "dictionary_learning"
    # a renamed Goodfire file is found by its keys (pickle strings, nothing unpickled)
    torch.save(ff._linear(g, enc="encoder_linear", dec="decoder_linear"), tmp_path / "renamed.pt")
    assert detect_format(tmp_path / "renamed.pt") == "goodfire"
    assert load_sae(tmp_path / "renamed.pt").cfg.hook_name is None
    # Qwen Scope's exact keys in a renamed file inside its repo folder: handed over after torch.load
    case = ff.write("qwenscope", tmp_path / "q")
    renamed = case.local.with_name("weights.pt")
    case.local.rename(renamed)
    sae = load_sae(renamed)
    assert sae.cfg.source_format == "qwenscope" and sae.cfg.k == 8
    # legacy (non-zip) torch files too
    torch.save(ff._linear(g, enc="encoder_linear", dec="decoder_linear"), tmp_path / "old.pth",
               _use_new_zipfile_serialization=False)
    assert detect_format(tmp_path / "old.pth") == "goodfire"


class _Evil:
    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("name", ["DeepSeek-R1-Distill-Llama-8B-SAE-l19.pt", "Llama-3.1-8B-Instruct-SAE-l19.pth",
                                  "layer3.sae.pt"])
def test_telling_torch_files_apart_never_runs_their_pickle(tmp_path, name):
    evil = _Evil()
    evil.marker = str(tmp_path / "PWNED")
    torch.save({"encoder_linear.weight": evil, "encoder.weight": evil, "W_enc": evil}, tmp_path / name)
    detect_format(tmp_path / name)
    detect_format(tmp_path)
    with pytest.raises(SAEFormatError, match="unsafe"):
        load_sae(tmp_path / name)
    assert not (tmp_path / "PWNED").exists()


def test_hub_folders_of_one_torch_file_are_detected(tmp_path):
    for family in ("deepseek_r1", "goodfire"):
        case = ff.write(family, tmp_path / family)
        (case.local.parent / "README.md").write_text("hi")
        assert detect_format(case.local.parent) == family
        assert load_sae(case.local.parent).cfg.hook_name == load_sae(case.local).cfg.hook_name


# ------------------------------------------------------------------------------- malformed files
def _rewrite(file: Path, change) -> None:
    if file.suffix == ".safetensors":
        save_file(change(load_file(str(file))), str(file))
    elif file.suffix == ".npz":
        with np.load(file) as z:
            t = {k: torch.from_numpy(z[k]) for k in z.files}
        np.savez(file, **{k: v.numpy() for k, v in change(t).items()})
    else:
        torch.save(change(torch.load(file, weights_only=True)), file)


MALFORMED = {  # family -> a tensor every file of it needs
    "llamascope": "decoder.weight", "llamascope_r1": "log_jumprelu_threshold", "gemmascope2": "threshold",
    "qwenscope": "b_enc", "deepseek_r1": "decoder.bias", "goodfire": "decoder_linear.weight",
}


@pytest.mark.parametrize("family", list(MALFORMED))
@pytest.mark.parametrize("how", ["missing", "wrong_shape"])
def test_a_malformed_tensor_names_the_file_and_the_tensor(tmp_path, family, how):
    case = ff.write(family, tmp_path)
    key = MALFORMED[family]
    if how == "missing":
        _rewrite(case.weights, lambda t: {k: v for k, v in t.items() if k != key})
    else:
        _rewrite(case.weights, lambda t: {**t, key: torch.cat([t[key], t[key]], dim=0)})
    with pytest.raises(SAEFormatError) as e:
        load_sae(case.local)
    msg = str(e.value)
    assert case.weights.name in msg and repr(key) in msg
    assert ("missing" in msg) if how == "missing" else ("has shape" in msg and "expected" in msg)


@pytest.mark.parametrize("family,file,change,field", [
    ("llamascope", "hyperparams.json", lambda c: c.pop("d_sae"), "d_sae"),
    ("llamascope", "hyperparams.json", lambda c: c.update(jump_relu_threshold="0.3"), "jump_relu_threshold"),
    ("llamascope", "hyperparams.json", lambda c: c.update(dataset_average_activation_norm={"in": 0}), "in"),
    ("llamascope_r1", "config.json", lambda c: c.update(expansion_factor=2.5), "expansion_factor"),
    ("llamascope_r1", "config.json", lambda c: c.pop("hook_point_in"), "hook_point_in"),
    ("gemmascope2", "config.json", lambda c: c.update(architecture="topk"), "architecture"),
])
def test_a_malformed_config_names_the_file_and_the_field(tmp_path, family, file, change, field):
    case = ff.write(family, tmp_path, "mlp_out_config" if family == "gemmascope2" else "")
    cfg_file = case.local / file
    cfg = json.loads(cfg_file.read_text())
    change(cfg)
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(SAEFormatError, match=rf"{file}.*'?{field}'?"):
        load_sae(case.local)


def test_llamascope_refuses_a_transcoder_and_other_activations(tmp_path):
    case = ff.write("llamascope", tmp_path)
    hp_file = case.local / "hyperparams.json"
    hp = json.loads(hp_file.read_text())
    hp_file.write_text(json.dumps({**hp, "hook_point_out": "blocks.15.hook_mlp_out"}))
    with pytest.raises(SAEFormatError, match="Llama Scope transcoder.*does not read yet"):
        load_sae(case.local)
    hp_file.write_text(json.dumps({**hp, "act_fn": "topk"}))
    with pytest.raises(SAEFormatError, match="act_fn"):
        load_sae(case.local)


def test_gemmascope_v1_embedding_needs_its_rescale_and_layers_do_not(tmp_path):
    case = ff.write("gemmascope", tmp_path, "embedding")
    sae = load_sae(case.local)
    assert sae.cfg.hook_name == "hook_embed" and sae.cfg.metadata["embedding_rescaled_by"] == pytest.approx(48.0)
    layer = case.local.parent.parent.parent / "layer_3" / "width_4k" / "average_l0_6"
    layer.mkdir(parents=True)
    (layer / "params.npz").write_bytes((case.local / "params.npz").read_bytes())
    plain = load_sae(layer)
    assert plain.cfg.hook_name == "blocks.3.hook_resid_post" and "embedding_rescaled_by" not in plain.cfg.metadata
    torch.testing.assert_close(sae.W_enc * 48.0, plain.W_enc)


# ------------------------------------------------------------------------------- item 6: no family
def test_a_folder_matching_no_family_lists_every_family_looked_for(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0" * 8)
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(SAEFormatError) as e:
        load_sae(tmp_path)
    msg = str(e.value)
    assert msg.count("cannot recognise") == 1 and "weights.bin" in msg and "other.safetensors" in msg
    for name in READERS:
        assert f"{name} (" in msg, name
        assert _reader(name).LAYOUT in msg, name
    with pytest.raises(SAEFormatError, match="looked for: saelens .*goodfire"):
        load_sae(tmp_path / "other.safetensors")


def test_each_family_folder_is_claimed_by_its_reader_only(tmp_path):
    """Every family's folder is detected as that family only (no reader claims another's files)."""
    for family, variant in ff.PARITY:
        case = ff.write(family, tmp_path / f"{family}-{variant}", variant)
        folder = case.local if case.local.is_dir() else case.local.parent
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            claims = [n for n in READERS if _reader(n).detect(folder)]
        assert claims == [family], (family, variant, claims)


# ----------------------------------------------------------------------- every family steers a model
def _host_for(sae):
    """A tiny random host whose widths and depth fit the SAE's own hook (Gemma 2 for Gemma Scope)."""
    import re

    import transformers as tf

    from tiny import _common

    hook = sae.cfg.hook_name
    m = re.match(r"^blocks\.(\d+)\.", hook or "")
    layers = int(m.group(1)) + 1 if m else 1
    kw = _common(hidden_size=sae.d_in if "hook_z" not in hook else ff.D, intermediate_size=32,
                 num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2)
    if sae.cfg.source_format in ("gemmascope2", "gemmascope"):
        head_dim = sae.d_in // 4 if "hook_z" in hook else ff.D // 4  # hook_z is n_heads x d_head wide
        cfg = tf.Gemma2Config(**kw, head_dim=head_dim, query_pre_attn_scalar=head_dim, sliding_window=16)
    else:
        cfg = tf.LlamaConfig(**kw)
    torch.manual_seed(0)
    return tf.AutoModelForCausalLM.from_config(cfg).eval()


@pytest.mark.parametrize("family,variant", ff.PARITY, ids=_ids(ff.PARITY))
def test_every_family_attaches_at_its_own_hook_and_steers(tmp_path, family, variant):
    import saesteer
    from tiny import batch

    case = ff.write(family, tmp_path, variant)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sae = load_sae(case.local, **case.load_kw)
    lm = _host_for(sae)
    sm = saesteer.wrap(lm, sae)  # at the hook the file records, no hook= needed
    assert sm.attachment_name() == sae.cfg.hook_name
    b = batch(B=2, T=6, left_pad=(2, 0))
    with torch.no_grad():
        bare = lm(**b).logits
        assert torch.equal(sm(**b).logits, bare)
        f = int(sae.W_dec.norm(dim=-1).argmax())
        steered = sm(**b, edits={f: 50.0}).logits
    assert not torch.allclose(steered, bare, atol=1e-3)
