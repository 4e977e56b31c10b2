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
