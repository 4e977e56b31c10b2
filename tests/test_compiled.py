"""Compiled models are refused loudly, never steered silently wrong.

A compiled module traces once and never runs hooks added after that trace: before saesteer refused
them, every steered call of a compiled model that had run one bare call returned the bare output.
"""

from __future__ import annotations

import pytest
import torch

import saesteer
from saesteer.errors import CompiledModelError
from saesteer.runtime import compiled
from saesteer.runtime.taps import saesteer_hooks
from tiny import batch, random_sae, tiny_lm


def _compile(lm, how: str, backend: str):
    if how == "method":
        lm.compile(backend=backend)
        return lm
    if how == "function":
        return torch.compile(lm, backend=backend)
    lm.model.layers[1].forward = torch.compile(lm.model.layers[1].forward, backend=backend)
    return lm


@pytest.mark.parametrize("backend", ["eager", pytest.param("inductor", marks=pytest.mark.slow)])
@pytest.mark.parametrize("how", ["method", "function", "forward"])
def test_compiled_before_wrap_is_refused(how, backend):
    """Compiled, one bare call, then wrap: refused at wrap, with the model untouched."""
    lm = tiny_lm("llama")
    b = batch(B=1, T=6)
    with torch.no_grad():
        ref = lm(**b).logits
    host = _compile(lm, how, backend)
    with torch.no_grad():
        bare = host(**b).logits  # the first compiled call traces the graph
    torch.testing.assert_close(bare, ref, atol=1e-4, rtol=1e-4)
    with pytest.raises(CompiledModelError, match="compiled"):
        saesteer.wrap(host, random_sae(), layer=1)
    assert saesteer_hooks(host) == 0
    with torch.no_grad():
        torch.testing.assert_close(host(**b).logits, bare, atol=0, rtol=0)


@pytest.mark.parametrize("backend", ["eager", pytest.param("inductor", marks=pytest.mark.slow)])
@pytest.mark.parametrize("how", ["method", "forward"])
def test_compiled_after_wrap_is_refused_at_every_steered_call(how, backend):
    """Wrapped, steered, then compiled in place and run bare: every later steered call (forward and
    generate, any edit) raises before the model runs; bare calls still work; no hook is left."""
    lm = tiny_lm("llama")
    sm = saesteer.wrap(lm, random_sae(), layer=1)
    b = batch(B=1, T=6)
    with torch.no_grad():
        bare_ref = lm(**b).logits
        steered_ref = sm(**b, edits={3: 6.0}).logits
    assert not torch.allclose(steered_ref, bare_ref, atol=1e-3)
    _compile(lm, how, backend)
    with torch.no_grad():
        torch.testing.assert_close(lm(**b).logits, bare_ref, atol=1e-4, rtol=1e-4)
    for edits in ({3: 6.0}, saesteer.Erase(5), [saesteer.Scale(2, 3.0), saesteer.Add(7, 1.0)]):
        with pytest.raises(CompiledModelError):
            sm(**b, edits=edits)
        with pytest.raises(CompiledModelError):
            sm.generate(**b, edits=edits, max_new_tokens=3, do_sample=False)
        with pytest.raises(CompiledModelError), sm.edits(edits):
            pass
        assert saesteer_hooks(lm) == 0
        with torch.no_grad():
            torch.testing.assert_close(sm(**b).logits, bare_ref, atol=1e-4, rtol=1e-4)  # no edits: the bare model


def test_compiled_parts_names_each_kind():
    lm = tiny_lm("llama")
    assert compiled.compiled_parts(lm) == []
    lm.model.layers[2].compile(backend="eager")
    wrapper = torch.compile(lm, backend="eager")
    found = compiled.compiled_parts(wrapper)
    assert any("torch.compile(...) wrapper" in f for f in found)
    assert any("layers.2 was compiled with .compile()" in f for f in found)


def test_steered_generate_turns_off_auto_compile():
    """transformers may compile the decoding forward inside generate (static caches on accelerators):
    a steered generate passes disable_compile=True, and an explicit disable_compile=False is refused."""
    assert compiled.generate_kwargs({"max_new_tokens": 2})["disable_compile"] is True
    with pytest.raises(CompiledModelError):
        compiled.generate_kwargs({"disable_compile": False})
    lm = tiny_lm("llama")
    sm = saesteer.wrap(lm, random_sae(), layer=1)
    b = batch(B=1, T=5)
    seen = {}
    orig = lm.generate

    def spy(*a, **kw):
        seen.update(kw)
        return orig(*a, **kw)

    lm.generate = spy
    try:
        sm.generate(**b, edits={3: 6.0}, max_new_tokens=2, do_sample=False)
        assert seen["disable_compile"] is True
        seen.clear()
        sm.generate(**b, max_new_tokens=2, do_sample=False)  # no edits: the caller's kwargs untouched
        assert "disable_compile" not in seen
        with pytest.raises(CompiledModelError):
            sm.generate(**b, edits={3: 6.0}, max_new_tokens=2, disable_compile=False)
    finally:
        del lm.generate
