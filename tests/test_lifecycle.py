"""Hooks exist only while a steered call runs; they are gone after unwrap, after an exception in
generate, after a hook error and after a cancelled thread; nobody else's hooks are touched; threads
never see each other's edits."""

from __future__ import annotations

import threading

import pytest
import torch
from accelerate.hooks import ModelHook, add_hook_to_module, remove_hook_from_module
from transformers import StoppingCriteria, StoppingCriteriaList

import saesteer
from saesteer.runtime.taps import saesteer_hooks
from tiny import D, batch, random_sae, tiny_lm



def _ours(model) -> int:
    return saesteer_hooks(model)


class CountingHook(ModelHook):
    def __init__(self):
        self.calls = 0

    def post_forward(self, module, output):
        self.calls += 1
        return output


class Boom(StoppingCriteria):
    def __init__(self, after: int, exc=RuntimeError):
        self.n, self.after, self.exc = 0, after, exc

    def __call__(self, input_ids, scores, **kw):
        self.n += 1
        if self.n >= self.after:
            raise self.exc("stop right here")
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


@pytest.fixture
def setup():
    lm = tiny_lm("llama")
    layer = lm.model.layers[1]
    foreign_calls = []
    foreign = layer.register_forward_hook(lambda m, a, o: foreign_calls.append(1))
    acc = CountingHook()
    add_hook_to_module(lm.model.layers[0], acc)
    sm = saesteer.wrap(lm, random_sae(), layer=1)
    yield lm, sm, layer, foreign, foreign_calls, acc
    foreign.remove()
    remove_hook_from_module(lm.model.layers[0])


def _foreign_intact(lm, layer, foreign, foreign_calls, acc):
    assert foreign.id in layer._forward_hooks
    assert hasattr(lm.model.layers[0], "_hf_hook")
    before, acc_before = len(foreign_calls), acc.calls
    lm(**batch())
    assert len(foreign_calls) == before + 1 and acc.calls == acc_before + 1


def test_hooks_only_during_calls(setup):
    lm, sm, layer, foreign, calls, acc = setup
    assert _ours(lm) == 0
    inside = []
    with sm.edits({3: 2.0}):
        inside.append(_ours(lm))
    assert inside == [3] and _ours(lm) == 0
    sm.generate(**batch(), edits={3: 2.0}, max_new_tokens=2, do_sample=False)
    assert _ours(lm) == 0
    _foreign_intact(lm, layer, foreign, calls, acc)
    sm.unwrap()
    assert _ours(lm) == 0
    _foreign_intact(lm, layer, foreign, calls, acc)


def test_exception_inside_generate(setup):
    lm, sm, layer, foreign, calls, acc = setup
    ref = lm(**batch()).logits
    with pytest.raises(RuntimeError, match="stop right here"):
        sm.generate(**batch(), edits={3: 9.0}, max_new_tokens=5, do_sample=False,
                    stopping_criteria=StoppingCriteriaList([Boom(2)]))
    assert _ours(lm) == 0
    assert torch.equal(lm(**batch()).logits, ref)
    _foreign_intact(lm, layer, foreign, calls, acc)


def test_hook_error_leaves_nothing(setup):
    lm, sm, layer, foreign, calls, acc = setup
    ref = lm(**batch()).logits
    # a module path whose width the adapter cannot know: the mismatch shows when activations arrive
    bad = saesteer.wrap(lm, random_sae(d_in=D), hook="model.layers.0.mlp.act_fn")
    with pytest.raises(saesteer.HookError, match="does not match the activation width 64"):
        bad(**batch(), edits={1: 1.0})
    assert _ours(lm) == 0
    # per-row edits that do not fit the batch fail before the model runs
    with pytest.raises(saesteer.EditError, match="per-row"):
        sm(**batch(B=3), edits=[{1: 1.0}, None])
    assert _ours(lm) == 0
    assert torch.equal(lm(**batch()).logits, ref)
    _foreign_intact(lm, layer, foreign, calls, acc)


def test_cancelled_thread(setup):
    """A generation thread cancelled mid-way (its stopping criterion raises on a cancel flag)."""
    lm, sm, layer, foreign, calls, acc = setup
    cancel = threading.Event()
    errors = []

    class Cancel(StoppingCriteria):
        def __call__(self, input_ids, scores, **kw):
            cancel.set()
            raise KeyboardInterrupt("cancelled")

    def run():
        try:
            sm.generate(**batch(), edits={3: 9.0}, max_new_tokens=50, do_sample=False,
                        stopping_criteria=StoppingCriteriaList([Cancel()]))
        except BaseException as e:  # noqa: BLE001 - the thread's death is the point
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join(30)
    assert cancel.is_set() and isinstance(errors[0], KeyboardInterrupt)
    assert _ours(lm) == 0
    _foreign_intact(lm, layer, foreign, calls, acc)


def test_threads_do_not_see_each_other():
    lm = tiny_lm("llama")
    sm = saesteer.wrap(lm, random_sae(), layer=1)
    b = batch(B=1, T=6)
    plans = [None] + [{i: 3.0 + i} for i in range(1, 8)]
    gen = dict(max_new_tokens=6, do_sample=False, output_logits=True, return_dict_in_generate=True)
    alone = [sm.generate(**b, edits=p, **gen) for p in plans]
    assert len({tuple(a.sequences[0].tolist()) for a in alone}) > 2  # the edits matter
    results: list = [None] * len(plans)
    barrier = threading.Barrier(len(plans))

    def run(i):
        barrier.wait()
        for _ in range(3):
            out = sm.generate(**b, edits=plans[i], **gen)
            results[i] = out if results[i] is None or torch.equal(results[i].sequences, out.sequences) else "diverged"

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(plans))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for i, (a, r) in enumerate(zip(alone, results)):
        assert r != "diverged" and r is not None, i
        assert torch.equal(a.sequences, r.sequences), i
        torch.testing.assert_close(torch.stack(a.logits), torch.stack(r.logits), atol=1e-5, rtol=1e-5)
    assert _ours(lm) == 0
