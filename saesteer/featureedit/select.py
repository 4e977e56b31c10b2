"""Rank SAE features (or neurons) by how much more they carry the target facts than the contrast.

Two scores per feature ``i`` of the SAE at each hook, over the *selection positions* of each fact
(its prompt tokens, or only its subject's tokens):

- ``activation``: ``mean_target r_i - mean_contrast r_i`` with ``r_i`` the feature's largest
  activation over the fact's selection positions.
- ``attribution``: ``mean_target a_i - mean_contrast |a_i|`` with
  ``a_i = sum_t f_i(t) * dlogP(answer)/df_i(t)``, the first-order drop in the fact's own answer
  log-probability if the feature were erased at those positions (on a contrast fact any effect,
  up or down, counts against the feature). With the SAE error kept in place,
  ``x = decode(f) + err``, so ``dlogP/df_i = (dlogP/dx) . W_dec[i]`` (times the per-token output
  scale of SAEs that normalise their input): one backward pass gives every feature's score.

The selection positions never include a fact's first token (unless it is the whole prompt):
most LMs park an attention sink there, with activations ~100x the usual norm, and features that
fire on it carry no fact; erasing them breaks every prompt.

Scores across several hooks are ranked together (attribution is in log-probability units at every
hook; activation contrast is in each SAE's own units). For the neuron basis the pair of latents of
a neuron is scored as one unit (:func:`saesteer.featureedit.neurons.pair_scores`).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from saesteer import adapters
from saesteer.errors import EditError, HookError
from saesteer.featureedit.facts import Fact, FactBatch, answer_logprobs, chunks, fact_batch
from saesteer.featureedit.neurons import is_neuron_basis, pair_scores
from saesteer.runtime.taps import register

METHODS = ("activation", "attribution")
POSITIONS = ("all", "subject")


@dataclass(frozen=True)
class SelectedUnit:
    """One chosen unit: a feature of the SAE at ``hook`` (or a neuron, for the neuron basis), its
    score, its mean score term on the target and on the contrast facts, and its label."""

    hook: str
    feature: int
    score: float
    target: float
    contrast: float
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"hook": self.hook, "feature": self.feature, "score": self.score, "target": self.target,
                "contrast": self.contrast, "label": self.label}


class Selection(tuple):
    """The chosen units, best first; ``print`` shows them as a table."""

    def __str__(self) -> str:
        if not self:
            return "(no units)"
        lines = [f"{'#':>3}  {'hook':<28} {'unit':>6} {'score':>9} {'target':>9} {'contrast':>9}  label"]
        for n, u in enumerate(self, 1):
            lines.append(f"{n:>3}  {u.hook:<28} {u.feature:>6} {u.score:>9.4f} {u.target:>9.4f} "
                         f"{u.contrast:>9.4f}  {u.label[:60]}")
        return "\n".join(lines)


def model_device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters() if p.device.type != "meta"), torch.device("cpu"))


@contextmanager
def recording(steered: Any, hooks: Sequence[str], grad: bool) -> Iterator[dict[str, torch.Tensor]]:
    """Record the activation at each attached hook in ``hooks`` during forwards of the host model.

    With ``grad`` the recorded tensors are part of the autograd graph (a tensor that does not need
    grad, e.g. on a frozen model, is swapped for a leaf that does), so ``torch.autograd.grad`` can
    differentiate with respect to them without touching any parameter's ``.grad``. The hooks are
    saesteer's own, removed by handle on exit (also on error)."""
    box: dict[str, torch.Tensor] = {}
    handles = []

    def keep(name: str, x: torch.Tensor) -> torch.Tensor | None:
        if grad and not x.requires_grad:
            x = x.detach().requires_grad_(True)
            box[name] = x
            return x
        box[name] = x
        return None

    try:
        for name in hooks:
            point = steered.attachments[name].point
            handles.append(register(point.module, point.io, lambda x, n=name: keep(n, x), name=name))
        yield box
    finally:
        for h in handles:
            h.remove()


def resolve_hooks(steered: Any, hooks: Sequence[str] | str | None) -> list[str]:
    """Canonical attachment names for ``hooks`` (default: every attached SAE); EditError when a hook
    has no SAE attached."""
    if not steered.attachments:
        raise EditError("the model has no SAE attached: saesteer.wrap(model, sae=..., hook=...) first")
    if hooks is None:
        return list(steered.attachments)
    if isinstance(hooks, str):
        hooks = [hooks]
    out = []
    for h in hooks:
        if h in steered.attachments:
            out.append(h)
            continue
        try:
            out.append(steered.attachment_name(h))
        except EditError:
            raise EditError(f"no SAE attached at {h!r}; attached: {', '.join(steered.attachments)}") from None
    if not out:
        raise EditError("hooks is empty: name at least one hook with an SAE attached")
    for name in out:
        _check_sae_hook(steered, name)
    return list(dict.fromkeys(out))


def _check_sae_hook(steered: Any, name: str) -> None:
    """EditError when the SAE at ``name`` says it was trained for another place in this model."""
    att = steered.attachments[name]
    want = att.sae.cfg.hook_name
    if not want:
        return
    try:
        point = adapters.resolve(steered.model, want)
    except HookError:  # a name from another model family: nothing to compare with
        return
    if point.module is not att.point.module or point.io != att.point.io:
        raise EditError(f"the SAE attached at {att.point.name} was trained for {want} ({point.name}); "
                        "its features mean nothing here: attach it at its own hook")


def _selection_mask(batch: FactBatch, positions: str) -> torch.Tensor:
    if positions == "subject":
        missing = [b for b in range(batch.input_ids.shape[0]) if not batch.subject_mask[b].any()]
        if missing:
            raise EditError(f"positions='subject' needs a subject in every fact; rows {missing} have none "
                            "(give Fact(prompt, answer, subject=...))")
        m = batch.subject_mask.clone()
        m[:, 0] = False  # never the first token (see the module doc); a subject there scores nothing
        return m
    m = batch.prompt_mask.clone()
    m[:, 0] &= m.sum(1) == 1  # the first token (an attention sink in most LMs) only when it is all there is
    return m


def fact_terms(steered: Any, facts: Sequence[Fact], hooks: Sequence[str], *, method: str, positions: str,
               tokenizer: Any, batch_size: int = 16) -> dict[str, torch.Tensor]:
    """Per-fact score terms ``{hook: [n_facts, d_sae]}`` (``r`` or ``a`` of the module doc).

    Cost: one forward per batch (activation) or one forward and one backward (attribution), plus a
    full SAE encode of the selection positions at each hook."""
    model = steered.model
    dev = model_device(model)
    out: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
    grad = method == "attribution"
    for sl in chunks(len(facts), batch_size):
        batch = fact_batch(tokenizer, facts[sl], device=dev)
        sel = _selection_mask(batch, positions)
        with recording(steered, hooks, grad) as box, torch.set_grad_enabled(grad):
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
            missing = [h for h in hooks if h not in box]
            if missing:
                raise HookError(f"the forward never reached {', '.join(missing)}")
            xs = [box[h] for h in hooks]
            gs = (torch.autograd.grad(answer_logprobs(logits, batch)[0].sum(), xs) if grad else [None] * len(xs))
        for h, x, g in zip(hooks, xs, gs):
            sae = steered.attachments[h].sae
            with torch.no_grad():
                xa = x.detach().to(sae.dtype)
                f = sae.encode(xa).float()
                m = sel.to(f.device).unsqueeze(-1)
                if grad:
                    _, _, scale = sae.normalize(xa)
                    gx = g.to(sae.dtype) * (scale if scale is not None else 1)
                    term = (f * (gx @ sae.W_dec.T).float() * m).sum(1)
                else:
                    term = f.masked_fill(~m, float("-inf")).amax(1).clamp_min(0)
            out[h].append(term.cpu())
    return {h: torch.cat(v) for h, v in out.items()}


def rank_units(steered: Any, target: Sequence[Fact], contrast: Sequence[Fact], *, top: int,
               method: str = "activation", positions: str = "all", hooks: Sequence[str] | str | None = None,
               tokenizer: Any = None, batch_size: int = 16, contrast_weight: float = 1.0) -> Selection:
    """The ``top`` units with the highest ``mean_target - mean_contrast`` score over ``hooks``.

    Units are features, or neurons when the attached SAE is the neuron basis. ``contrast_weight``
    (w) scores ``mean_target - w * mean_contrast``: above 1 it trades reliability for locality."""
    if method not in METHODS:
        raise EditError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if positions not in POSITIONS:
        raise EditError(f"unknown positions {positions!r} for a FeatureEdit; choose one of {', '.join(POSITIONS)}")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise EditError(f"top must be a positive int, got {top!r}")
    if not contrast_weight >= 0 or contrast_weight == float("inf"):
        raise EditError(f"contrast_weight must be a finite number >= 0, got {contrast_weight!r}")
    names = resolve_hooks(steered, hooks)
    kw = dict(method=method, positions=positions, tokenizer=tokenizer, batch_size=batch_size)
    t_terms = fact_terms(steered, target, names, **kw)
    c_terms = fact_terms(steered, contrast, names, **kw)
    cands: list[tuple[float, float, float, str, int]] = []
    for h in names:
        sae = steered.attachments[h].sae
        t, c = t_terms[h], c_terms[h]
        if is_neuron_basis(sae):
            t, c = pair_scores(t), pair_scores(c)
        if method == "attribution":  # any effect on a contrast fact counts against a unit, whatever its sign
            c = c.abs()
        tm, cm = t.mean(0), c.mean(0)
        score = tm - contrast_weight * cm
        k = min(top, score.numel())
        vals, idx = score.topk(k)
        cands += [(float(v), float(tm[i]), float(cm[i]), h, int(i)) for v, i in zip(vals, idx)]
    cands.sort(key=lambda c: (-c[0], c[3], c[4]))
    return Selection(SelectedUnit(h, i, s, t, c, unit_label(steered, h, i)) for s, t, c, h, i in cands[:top])


def unit_label(steered: Any, hook: str, unit: int) -> str:
    sae = steered.attachments[hook].sae
    if is_neuron_basis(sae):
        return f"neuron {unit}"
    labels = getattr(sae, "labels", None)
    try:
        return str(labels[unit]) if labels is not None else ""
    except KeyError:
        return ""
