"""``saesteer check`` / ``saesteer.check``: passes on the tiny-model grid, and FAILs when steering is
not exact (here: a position reader that ignores what transformers 5.24+ passes)."""

from __future__ import annotations

import pytest
import torch
import transformers
from packaging.version import Version

import saesteer
from saesteer.runtime import call_inputs
from saesteer.runtime.taps import saesteer_hooks
from tiny import MODEL_TYPES, random_sae, tiny_lm


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_check_passes_on_the_tiny_grid(model_type):
    lm = tiny_lm(model_type)
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    report = saesteer.check(lm, random_sae(architecture="topk" if model_type == "gpt2" else "relu"), layer=1,
                            progress=False, max_new_tokens=5)
    assert report.passed, report.table()
    assert len(report.results) == 14
    assert saesteer_hooks(lm) == 0 and not lm._forward_hooks and not lm._forward_pre_hooks
    assert all(torch.equal(before[k], v) for k, v in lm.state_dict().items())
    assert "14 passed, 0 failed" in report.table()


@pytest.mark.skipif(Version(transformers.__version__) < Version("5.24"),
                    reason="before 5.24 generate passes the attention mask and cache_position, which the old reader read")
def test_check_fails_when_decoding_steps_read_as_new_prompts(monkeypatch):
    """What the reader did before the fix on transformers 5.24+ (no mask, no cache_position, the cache
    under ``cache``): without a mask every forward reads as a new sequence at positions 0..T-1."""

    def old(self):
        ids = self.tokens
        B, T = ids.shape[:2]
        if self.attention_mask is not None and self.attention_mask.shape[1] >= T:
            m = self.attention_mask != 0
            return (m.long().cumsum(1) - 1)[:, -T:], m[:, -T:], self.attention_mask.shape[1] - T
        return torch.arange(T).expand(B, T), torch.ones(B, T, dtype=torch.bool), 0

    monkeypatch.setattr(call_inputs.CallInputs, "token_positions", old)
    report = saesteer.check(tiny_lm("llama"), random_sae(), layer=1, progress=False, max_new_tokens=5)
    failed = {r.name for r in report.results if not r.passed}
    assert not report.passed
    assert "positions='prompt' = range(0, P), 1 unpadded prompt" in failed
    assert "positions='generated' = range(P, end), 1 unpadded prompt" in failed
    assert not any("left-padded" in n for n in failed)  # padded batches carry a mask: they worked


def test_check_fails_when_the_edit_changes_nothing():
    """A clamp of a feature that never fires to 0 moves nothing: the suite would prove nothing, so
    that row FAILs (and says to pass another feature/value)."""
    sae = random_sae()
    with torch.no_grad():
        sae.b_enc[3] = -1e4  # feature 3 never fires
    report = saesteer.check(tiny_lm("llama"), sae, layer=1, feature=3, value=0.0, progress=False, max_new_tokens=3)
    moved = next(r for r in report.results if "changes the logits" in r.name)
    assert not moved.passed and moved.measured == "max |dlogit| = 0" and not report.passed
