"""Models dispatched or offloaded by accelerate (``device_map`` with disk offload, ``dispatch_model``,
``cpu_offload``, ``disk_offload``, ``cpu_offload_with_hook``) steer exactly like the same model loaded
normally; the SAE sits on the hooked layer's execution device; accelerate's hooks survive the calls
and no saesteer hook is left behind."""

from __future__ import annotations

import pytest
import torch
from accelerate import cpu_offload, cpu_offload_with_hook, disk_offload, dispatch_model
from accelerate.hooks import AlignDevicesHook, ModelHook, add_hook_to_module
from transformers import AutoModelForCausalLM

import saesteer
from saesteer.runtime.taps import saesteer_hooks
from saesteer.runtime.placement import placement as _placement
from tiny import batch, random_sae, tiny_lm

EDITS = [saesteer.Clamp(3, 5.0), saesteer.Scale(7, 0.25), saesteer.Add(11, 2.0)]
META = torch.device("meta")
REST = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu", "lm_head": "cpu"}


def _ours(model) -> int:
    return saesteer_hooks(model)


def _accelerate_hooks(model) -> dict[str, int]:
    return {n: id(m._hf_hook) for n, m in model.named_modules() if hasattr(m, "_hf_hook")}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_llama")
    tiny_lm("llama").save_pretrained(path)
    return path


def _load(path, **kw):
    m = AutoModelForCausalLM.from_pretrained(path, **kw).eval()
    m.generation_config.eos_token_id = None  # fixed-length generations
    m.generation_config.pad_token_id = 0
    return m


def _offloaded(kind: str, path, tmp):
    if kind == "device_map_disk":  # transformers + accelerate: layers 1 and 2 on disk, hooks on each module
        dm = {**REST, "model.layers.0": "cpu", "model.layers.1": "disk", "model.layers.2": "disk"}
        return _load(path, device_map=dm, offload_folder=str(tmp / "offload"))
    m = _load(path)
    if kind == "dispatch_parent_disk":  # one device_map entry for all layers
        return dispatch_model(m, device_map={**REST, "model.layers": "disk"}, offload_dir=str(tmp / "offload"))
    if kind == "cpu_offload":  # hooks on tensor-holding children only; the top hook has no device
        return cpu_offload(m, execution_device=torch.device("cpu"))
    if kind == "disk_offload":
        return disk_offload(m, str(tmp / "offload"), execution_device=torch.device("cpu"))
    if kind == "cpu_offload_with_hook":  # one hook on the top module only
        return cpu_offload_with_hook(m, execution_device=torch.device("cpu"))[0]
    raise ValueError(kind)


KINDS = ["device_map_disk", "dispatch_parent_disk", "cpu_offload", "disk_offload", "cpu_offload_with_hook"]


@pytest.mark.parametrize("kind", KINDS)
def test_offloaded_model_steers_like_plain_one(kind, saved, tmp_path):
    plain = saesteer.wrap(_load(saved), random_sae(), layer=1)
    model = _offloaded(kind, saved, tmp_path)
    layer = model.model.layers[1]
    offloads = kind != "cpu_offload_with_hook"
    if offloads:
        assert layer.self_attn.q_proj.weight.device == META
    before = _accelerate_hooks(model)
    assert before
    sm = saesteer.wrap(model, random_sae(), layer=1)
    assert sm.sae.device == torch.device("cpu") and _placement(layer, model)[0] == torch.device("cpu")

    b = batch(left_pad=(2,))
    with torch.no_grad():
        bare = model(**b).logits
        zero = sm(**b).logits
        steered = sm(**b, edits=EDITS).logits
        want = plain(**b, edits=EDITS).logits
    assert torch.equal(zero, bare)
    assert not torch.allclose(steered, bare, atol=1e-3)
    torch.testing.assert_close(steered, want, atol=1e-5, rtol=1e-5)

    gen = dict(max_new_tokens=6, do_sample=False, output_scores=True, return_dict_in_generate=True)
    got = sm.generate(**b, edits=EDITS, positions="generated", **gen)
    ref = plain.generate(**b, edits=EDITS, positions="generated", **gen)
    assert torch.equal(got.sequences, ref.sequences)
    for s, r in zip(got.scores, ref.scores):
        torch.testing.assert_close(s, r, atol=1e-5, rtol=1e-5)

    assert _ours(model) == 0
    assert _accelerate_hooks(model) == before
    if offloads:
        assert layer.self_attn.q_proj.weight.device == META  # accelerate offloaded it again
    assert sm.attachments[sm._only()]._by_device == {}  # no second SAE copy was needed
    with torch.no_grad():
        assert torch.equal(model(**b).logits, bare)


@pytest.mark.parametrize("hook", ["blocks.1.hook_resid_pre", "blocks.1.hook_mlp_out", "blocks.2.hook_attn_out"])
def test_other_hook_points_on_disk(hook, saved, tmp_path):
    plain = saesteer.wrap(_load(saved), random_sae(), hook=hook)
    model = _offloaded("device_map_disk", saved, tmp_path)
    sm = saesteer.wrap(model, random_sae(), hook=hook)
    b = batch()
    with torch.no_grad():
        assert torch.equal(sm(**b).logits, model(**b).logits)
        torch.testing.assert_close(sm(**b, edits=EDITS).logits, plain(**b, edits=EDITS).logits,
                                   atol=1e-5, rtol=1e-5)
    assert _ours(model) == 0


class _NoDevice(ModelHook):
    pass


@pytest.mark.parametrize("where", ["layer", "parent", "children", "top", "sequential"])
def test_placement_reads_accelerate_execution_device(where):
    """Which hook decides: attach hooks that name the meta device (never run) and check that
    ``_placement`` finds it wherever accelerate would put it."""
    lm = tiny_lm("llama")
    layer = lm.model.layers[1]
    if where == "layer":
        add_hook_to_module(lm, AlignDevicesHook(execution_device="cpu", io_same_device=True))
        add_hook_to_module(layer, AlignDevicesHook(execution_device=META))
    elif where == "parent":  # only a parent block carries a device
        add_hook_to_module(lm, AlignDevicesHook(execution_device="cpu", io_same_device=True))
        add_hook_to_module(lm.model.layers, AlignDevicesHook(execution_device=META))
    elif where == "children":  # what cpu_offload/disk_offload do: the top hook has no device
        cpu_offload(lm, execution_device=META)
        assert not hasattr(layer, "_hf_hook") and lm._hf_hook.execution_device is None
    elif where == "top":  # cpu_offload_with_hook: one hook, on the top module
        cpu_offload_with_hook(lm, execution_device=META)
        assert not hasattr(layer, "_hf_hook")
    else:  # a SequentialHook whose first hook has no device
        add_hook_to_module(layer, _NoDevice())
        add_hook_to_module(layer, AlignDevicesHook(execution_device=META), append=True)
    assert _placement(layer, lm) == (META, torch.float32)
