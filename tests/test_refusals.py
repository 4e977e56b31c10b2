"""Bad input gets a clear error before anything is touched (issue 16): edit values, indices and
positions, and SAE files written by hand. Each case here got through, or failed with a raw Python
exception, before."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import saesteer
from saesteer import Add, Clamp, EditError, Positions, Scale, Steer
from saesteer.edits import coerce
from saesteer.runtime.taps import saesteer_hooks
from tiny import batch, random_sae, tiny_lm


# ----------------------------------------------------------------------------- silent coercion
@pytest.mark.parametrize("make", [
    lambda: Clamp(torch.tensor(3.7), 1.0),    # was feature 3
    lambda: Clamp(3.5, 1.0),
    lambda: Clamp(True, 1.0),
    lambda: Clamp("3", 1.0),
    lambda: coerce({3.5: 1.0}),               # the demo's /add stored 3.5 as feature 4
    lambda: Positions.range((1.5, 3)),        # was (1, 3)
    lambda: Positions.range((1, 3.2)),
    lambda: Positions.patches(1.5),
    lambda: coerce(42),                       # was a raw TypeError
    lambda: coerce("clamp"),
    lambda: coerce(None, positions=object()),
    lambda: Clamp(2, "1"),
    lambda: Steer(torch.ones(2, 3)),
])
def test_non_integral_or_wrong_types_are_refused(make):
    with pytest.raises(EditError):
        make()


def test_integral_values_of_other_types_are_read_exactly():
    assert Clamp(torch.tensor(3), 1.0).feature == 3
    assert Clamp(np.int64(4), 1.0).feature == 4
    assert Clamp(5.0, 1.0).feature == 5
    assert Positions.range((np.int32(1), 3.0)).ranges == ((1, 3),)
    assert Positions.range(torch.tensor(2)).ranges == ((2, 3),)


# ----------------------------------------------------------------------------- dtype overflow
@pytest.mark.parametrize("edit", [Clamp(3, 1e5), Add(3, 1e38), Scale(3, 1e38), Steer(3, 1e38),
                                  Steer(torch.ones(32), 1e6, norm_scaled=True)])
def test_values_that_overflow_a_float16_model_are_refused_before_the_call(edit):
    """On fp16, Clamp(3, 1e5) raised a raw RuntimeError inside the hook; Add/Scale/Steer 1e38 gave NaN
    logits silently."""
    lm = tiny_lm("llama").to(torch.float16)
    sm = saesteer.wrap(lm, random_sae(), layer=1)
    calls = []
    h = lm.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        with pytest.raises(EditError, match="overflows float16"):
            sm(**batch(), edits=edit)
        with pytest.raises(EditError, match="overflows float16"):
            sm.generate(**batch(), edits=edit, max_new_tokens=2, do_sample=False)
    finally:
        h.remove()
    assert calls == [] and saesteer_hooks(lm) == 0  # the model never ran


def test_values_that_fit_still_steer_finitely():
    lm = tiny_lm("llama").to(torch.float16)
    sm = saesteer.wrap(lm, random_sae(), layer=1)
    out = sm(**batch(), edits=[Clamp(3, 100.0), Scale(4, 50.0), Add(5, 20.0)]).logits
    assert torch.isfinite(out).all()
    lm32 = tiny_lm("llama")
    sm32 = saesteer.wrap(lm32, random_sae(), layer=1)
    assert torch.isfinite(sm32(**batch(), edits=Clamp(3, 1e5)).logits).all()  # fine in fp32


# ----------------------------------------------------------------------------- SAE files by hand
import json  # noqa: E402

from safetensors.torch import load_file, save_file  # noqa: E402

from saesteer import SAEFormatError  # noqa: E402


def _saelens(tmp_path, arch="relu", **sae_kw):
    folder = tmp_path / "sae"
    saesteer.save_sae(random_sae(d_in=64, d_sae=256, architecture=arch, **sae_kw), folder)
    return folder


def _edit_cfg(folder, **changes):
    cfg = json.loads((folder / "cfg.json").read_text())
    for k, v in changes.items():
        if v is KeyError:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (folder / "cfg.json").write_text(json.dumps(cfg))


def _edit_tensors(folder, fn):
    path = folder / "sae_weights.safetensors"
    t = load_file(str(path))
    fn(t)
    save_file(t, str(path))


@pytest.mark.parametrize("name,index", [("W_enc", (5, 17)), ("W_dec", (200, 3)), ("b_enc", (9,))])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_naming_tensor_and_index(tmp_path, name, index, bad):
    folder = _saelens(tmp_path)

    def poison(t):
        t[name][index] = bad
    _edit_tensors(folder, poison)
    with pytest.raises(SAEFormatError, match=rf"tensor '{name}' holds 1 non-finite.*index {index}".replace("(", r"\(").replace(")", r"\)")):
        saesteer.load_sae(folder)


@pytest.mark.parametrize("claim", [4_000_000, 1e12])
def test_a_config_claiming_a_huge_width_allocates_nothing(tmp_path, claim):
    """A 200-byte cfg.json claiming d_sae 4e6 allocated 2.36 GB before the shape check; 1e12 ended in a
    raw RuntimeError trying to allocate 4 TB. Measured in a fresh child process: its peak RSS with the
    refused load must stay within 100 MiB of the same child loading nothing."""
    import subprocess
    import sys

    folder = _saelens(tmp_path)
    _edit_cfg(folder, d_sae=claim)
    code = ("import resource, sys, saesteer\n"
            "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "try:\n    saesteer.load_sae(sys.argv[1]) if sys.argv[2] == '1' else None\n"
            "except saesteer.SAEFormatError as e:\n    print('refused:', e)\n"
            "print('grew', (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)")
    out = subprocess.run([sys.executable, "-c", code, str(folder), "1"], capture_output=True, text=True, timeout=120)
    assert "refused:" in out.stdout and "d_sae" in out.stdout, out.stdout + out.stderr
    grew = float(out.stdout.split("grew")[1])
    assert grew < 100, f"peak RSS grew by {grew:.0f} MiB while refusing the file"


@pytest.mark.parametrize("arch,change,field", [
    ("relu", {"d_in": "sixty-four"}, "d_in"),
    ("relu", {"d_in": None, "d_sae": 256.7}, "d_sae"),
    ("relu", {"d_sae": 256.7}, "d_sae"),
    ("relu", {"apply_b_dec_to_input": "false"}, "apply_b_dec_to_input"),
    ("relu", {"metadata": "oops"}, "metadata"),
    ("relu", {"d_in": True}, "d_in"),
    ("topk", {"k": KeyError}, "'k'"),
    ("topk", {"k": 8.5}, "'k'"),
    ("relu", {"architecture": 7}, "architecture"),
])
def test_malformed_configs_raise_sae_format_error_naming_the_field(tmp_path, arch, change, field):
    folder = _saelens(tmp_path, arch=arch)
    _edit_cfg(folder, **change)
    with pytest.raises(SAEFormatError, match=field) as e:
        saesteer.load_sae(folder)
    assert "cfg.json" in str(e.value)


def test_a_missing_tensor_is_named(tmp_path):
    folder = _saelens(tmp_path)
    _edit_tensors(folder, lambda t: t.pop("b_dec"))
    with pytest.raises(SAEFormatError, match="tensor 'b_dec' is missing"):
        saesteer.load_sae(folder)


def test_an_npz_member_that_needs_pickle_is_refused(tmp_path):
    folder = tmp_path / "gs"
    folder.mkdir()
    sae = random_sae(d_in=16, d_sae=32, architecture="jumprelu")
    arrays = {k: v.detach().numpy() for k, v in sae.state_dict().items()}
    arrays["threshold"] = np.array([{"evil": 1}], dtype=object)
    np.savez(folder / "params.npz", **arrays)
    with pytest.raises(SAEFormatError, match="pickle|numeric"):
        saesteer.load_sae(folder)


def test_a_good_file_still_loads_exactly(tmp_path):
    sae = random_sae(d_in=64, d_sae=256, architecture="topk")
    saesteer.save_sae(sae, tmp_path / "ok")
    got = saesteer.load_sae(tmp_path / "ok")
    x = torch.randn(3, 64)
    torch.testing.assert_close(got(x), sae(x))


# ----------------------------------------------------------------------------- the SAE's own hook
def test_an_sae_at_another_hook_than_its_own_is_refused_unless_forced():
    """The bundled SAE at --layer 3 produced "abababab..." silently; now refused, or forced with a warning."""
    sae = random_sae()
    sae.cfg.hook_name = "blocks.1.hook_resid_post"
    lm = tiny_lm("llama")
    with pytest.raises(saesteer.HookError, match="trained at blocks.1.hook_resid_post.*force_hook"):
        saesteer.wrap(lm, sae, layer=2)
    with pytest.raises(saesteer.HookError, match="trained at"):
        saesteer.wrap(lm, sae, hook="blocks.1.hook_mlp_out")
    assert saesteer.wrap(lm, sae).attachment_name() == "blocks.1.hook_resid_post"          # its own hook
    assert saesteer.wrap(lm, sae, hook="model.layers.1").attachment_name() == "blocks.1.hook_resid_post"  # same point
    assert saesteer.wrap(lm, sae, layer=1).attachment_name() == "blocks.1.hook_resid_post"
    with pytest.warns(UserWarning, match="force_hook=True"):
        assert saesteer.wrap(lm, sae, layer=2, force_hook=True).attachment_name() == "blocks.2.hook_resid_post"
    unknown = random_sae()
    unknown.cfg.hook_name = None  # an SAE that records no hook goes where it is told
    assert saesteer.wrap(lm, unknown, layer=2).attachment_name() == "blocks.2.hook_resid_post"
