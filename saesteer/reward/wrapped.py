"""Reward models that already have their own head: an SAE attached with ``saesteer.wrap`` inside any
``*ForSequenceClassification`` model, feature edits applied at the SAE's layer, and the reward
change they cause reported.

>>> rm = saesteer.wrap(llama_for_sequence_classification, sae="path/to/sae", layer=8, tokenizer=tok)
>>> saesteer.reward.reward_change(rm, {123: 0.0}, texts=["...", "..."])   # before, after, delta
>>> saesteer.reward.erase_effects(rm, texts="...", top=5)                 # each active feature erased

The reward is the model's own ``logits`` (column 0 when it has one label). Unlike a SARM head,
the layers after the SAE are non-linear, so a feature's effect is measured by running the edit,
not read off a weight. Both calls run one forward of a batch holding the unedited rows and the
edited rows side by side (per-row edits), so the comparison shares every other computation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from saesteer.edits import EditSet, Erase, EditsLike, coerce
from saesteer.errors import EditError, RewardError
from saesteer.positions import PositionsLike
from saesteer.reward.conversation import last_positions, pad_id, render, tokenize


@dataclass
class RewardChange:
    """Rewards without (``before``) and with (``after``) the edits; ``[B]`` or ``[B, num_labels]``."""

    before: torch.Tensor
    after: torch.Tensor

    @property
    def delta(self) -> torch.Tensor:
        return self.after - self.before

    def __str__(self) -> str:
        rows = [f"{'row':>4} {'before':>10} {'after':>10} {'change':>10}"]
        b, a = self.before.reshape(self.before.shape[0], -1), self.after.reshape(self.after.shape[0], -1)
        for i in range(b.shape[0]):
            rows.append(f"{i:>4} {b[i, 0].item():>+10.4f} {a[i, 0].item():>+10.4f} {(a[i, 0] - b[i, 0]).item():>+10.4f}")
        return "\n".join(rows)


@dataclass(frozen=True)
class FeatureEffect:
    """A feature active at the token the reward is read from, and the reward change when it is
    erased at every position."""

    feature: int
    activation: float
    reward_change: float
    label: str | None = None


def _inputs(model: Any, texts: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    if texts is None:
        if "input_ids" not in inputs:
            raise RewardError("give texts= (with a tokenizer on the wrapped model) or input_ids=")
        ids = inputs["input_ids"]
        if not isinstance(ids, torch.Tensor) or ids.ndim != 2:
            raise RewardError("input_ids must be a [batch, tokens] tensor")
        return {"input_ids": ids, "attention_mask": inputs.get("attention_mask", torch.ones_like(ids)),
                **{k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}}
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise RewardError("texts= needs a tokenizer: saesteer.wrap(model, ..., tokenizer=tok)")
    texts = [texts] if isinstance(texts, (str, tuple)) else list(texts)
    rendered = [render(t, tok, f"text {n}") for n, t in enumerate(texts)]
    cfg_pad = getattr(getattr(model, "config", None), "pad_token_id", None)
    batch = tokenize(rendered, tok, None)
    pad = cfg_pad if isinstance(cfg_pad, int) else pad_id(tok)
    ids = batch.input_ids.masked_fill(batch.attention_mask == 0, pad)
    return {"input_ids": ids, "attention_mask": batch.attention_mask, **inputs}


def _reward(logits: torch.Tensor) -> torch.Tensor:
    logits = logits.detach().float().cpu()
    return logits[:, 0] if logits.ndim == 2 and logits.shape[1] == 1 else logits


def _run_rows(model: Any, inputs: dict[str, Any], rows: list[EditSet], positions: PositionsLike) -> torch.Tensor:
    """One forward with the batch repeated once per entry of ``rows`` (row r of the batch gets
    edit set ``rows[r // B]``); returns rewards ``[len(rows) * B, ...]``."""
    n = len(rows)
    B = inputs["input_ids"].shape[0]
    rep = {k: (v.repeat(n, *([1] * (v.ndim - 1))) if isinstance(v, torch.Tensor) and v.shape[:1] == (B,) else v)
           for k, v in inputs.items()}
    per_row = [es for es in rows for _ in range(B)]
    with torch.no_grad():
        out = model(**rep, edits=per_row, positions=positions)
    logits = out.logits if hasattr(out, "logits") else out[0]
    return _reward(logits)


def reward_change(model: Any, edits: EditsLike, *, texts: Any = None, positions: PositionsLike = None,
                  **inputs: Any) -> RewardChange:
    """Rewards of a wrapped reward model without and with ``edits`` (any saesteer edit spec,
    including ``__saesteer_edits__`` recipes). Edits are checked before the model runs. Cost: one
    forward of twice the batch."""
    _check_wrapped(model)
    spec = coerce(edits, positions=positions)
    if not isinstance(spec, EditSet):
        raise EditError("reward_change takes one set of edits for every row")
    model.plan(spec)  # validates features, hooks and values against the attached SAEs
    x = _inputs(model, texts, inputs)
    B = x["input_ids"].shape[0]
    r = _run_rows(model, x, [EditSet(), spec], positions)
    return RewardChange(r[:B], r[B:])


def erase_effects(model: Any, *, texts: Any = None, top: int = 10, hook: str | None = None,
                  **inputs: Any) -> list[FeatureEffect]:
    """For one conversation: the ``top`` features most active at the token the reward is read from
    (the last non-pad token), each with the reward change when it is erased at every position,
    largest change first. Cost: one feature read and one forward of ``top + 1`` rows."""
    _check_wrapped(model)
    x = _inputs(model, texts, inputs)
    if x["input_ids"].shape[0] != 1:
        raise RewardError("erase_effects explains one conversation at a time")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise RewardError(f"top must be an int >= 1, got {top!r}")
    acts = model.features(input_ids=x["input_ids"], attention_mask=x["attention_mask"], top_k=top, hook=hook)
    last = int(last_positions(x["attention_mask"])[0])
    vals, inds = acts.values[0, last], acts.indices[0, last]
    feats = [(int(i), float(v)) for v, i in zip(vals, inds) if v != 0]
    if not feats:
        return []
    name = acts.hook
    rows = [EditSet()] + [EditSet((Erase(i, hook=name),)) for i, _ in feats]
    r = _run_rows(model, x, rows, None)
    base = r[0]
    labels = acts.labels
    out = [FeatureEffect(i, v, float((r[n + 1] - base).reshape(-1)[0]), _label(labels, i))
           for n, (i, v) in enumerate(feats)]
    return sorted(out, key=lambda e: -abs(e.reward_change))


def _label(labels: Any, i: int) -> str | None:
    if labels is None:
        return None
    try:
        return labels[i]
    except (KeyError, IndexError):
        return None


def _check_wrapped(model: Any) -> None:
    from saesteer.steered import SteeredModel

    if not isinstance(model, SteeredModel):
        raise RewardError("expected a model wrapped with saesteer.wrap(model, sae=...)")
    if not model.attachments:
        raise RewardError("no SAE is attached to this model")
