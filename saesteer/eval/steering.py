"""Steering strength, calibrated: sweep edit kinds and strengths for one feature, measure how far each
setting moves the text toward the feature's concept and what it costs in fluency, and pick the setting
that moves it most while staying within a perplexity budget.

>>> res = steering_sweep(sm, 1309)                 # sm: a SteeredModel with its tokenizer
>>> res.chosen                                     # the most steering within 1.5x the unsteered perplexity
>>> out = sm.generate(**enc, edits=res.edits())    # that setting, as an EditSet
>>> html = res.svg()                               # concept vs perplexity ratio, one line per kind

Kinds of edit, all at strength ``s`` in units of the feature's reference activation ``ref`` (its
``max_activation`` in the SAE's labels when it has them, else the largest activation measured on the
sweep's unsteered sequences, first token of each row left out):

- ``clamp``: ``Clamp(f, s * ref)`` at every position;
- ``clamp_generated``: the same clamp on generated positions only (the prompt reads unsteered);
- ``add``: ``Add(f, s * ref)`` at every position: ``s * ref * W_dec[f]`` added, no encode;
- ``add_norm``: ``Steer(f, alpha, norm_scaled=True)``, a step of ``alpha * ||x|| / ||W_dec[f]||`` along
  the decoder row, per token: saesteer's reading of G-SAE's norm-scaled steering (the paper's exact
  steering formula is unconfirmed here). ``alpha = s * ref * ||W_dec[f]|| / median ||x||`` (median
  over the unsteered sequences' tokens), so strength 1 adds a step of about the size ``add`` at
  strength 1 adds.

Every point is read back by the unsteered model: its generated tokens are run through the model with
no edit, and the feature's activation there (``concept``) and the tokens' perplexity are what that
clean reading says. ``kl`` compares the steered model's next-token distributions during generation
with the unsteered model's on the same tokens.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from saesteer.edits import Add, Clamp, EditSet, Steer
from saesteer.errors import EditError, SaesteerError

#: the edit kinds a sweep can try, in the order they are drawn
KINDS = ("clamp", "clamp_generated", "add", "add_norm")
#: neutral prompts: none of them asks for any particular topic or style
DEFAULT_PROMPTS = ("Tell me something interesting.", "What should I cook tonight?", "Describe your morning.",
                   "Give me some advice.", "What is a good hobby?", "How do trees grow?")
#: the small sweep behind :func:`auto_edit` and ``--clamp F=auto``: 3 prompts x (1 baseline + 2 kinds x 3 strengths)
AUTO = dict(strengths=(0.25, 0.5, 1.0), kinds=("clamp", "clamp_generated"), prompts=DEFAULT_PROMPTS[:3],
            max_new_tokens=16)
RULE = ("among the points that raise the concept activation above the unsteered one and whose perplexity is at "
        "most budget x the unsteered perplexity, the one with the highest concept activation (ties: the lower "
        "perplexity, then the earlier point); none when no point fits")
_READ_ROWS = 8  # rows per unsteered read-back forward (its logits are [rows, T, vocab])


@dataclass(frozen=True)
class SweepPoint:
    """One setting and what it did, averaged over the prompts (see :mod:`saesteer.eval.steering`)."""

    kind: str                 # "none" (the baseline), "clamp", "clamp_generated", "add" or "add_norm"
    strength: float           # in units of the feature's reference activation
    value: float              # the value the edit was given (clamp value, add amount, steer alpha)
    concept: float            # the feature's mean activation on the generated tokens, read by the unsteered model
    concept_external: float | None  # the caller's score(text) averaged over outputs; None without one
    perplexity: float         # median over prompts of the generated tokens' perplexity under the unsteered model
    kl: float                 # mean KL(steered || unsteered) of next-token distributions at steered generated steps
    samples: tuple[str, ...]  # the first generated texts


def choose(points: Sequence[SweepPoint], baseline: SweepPoint, budget: float) -> SweepPoint | None:
    """The point :data:`RULE` picks: ``concept > baseline.concept`` (a point that does not move the
    feature on the output is no steering setting, however fluent) and perplexity ``<= budget *
    baseline.perplexity``; of those, the highest ``concept``, then the lower perplexity, then the
    earlier point. None when none fits (a non-finite perplexity or concept never fits)."""
    limit = budget * baseline.perplexity
    fits = [p for p in points if math.isfinite(p.perplexity) and math.isfinite(p.concept)
            and p.perplexity <= limit and p.concept > baseline.concept]
    if not fits:
        return None
    return max(fits, key=lambda p: (p.concept, -p.perplexity))  # max keeps the first of equal keys


def point_edit(kind: str, feature: int, value: float, hook: str | None = None) -> Clamp | Add | Steer:
    """The edit behind one sweep point, with its positions spelled out (so a call's ``positions=``
    does not change what was measured)."""
    if kind == "clamp":
        return Clamp(feature, value, positions="all", hook=hook)
    if kind == "clamp_generated":
        return Clamp(feature, value, positions="generated", hook=hook)
    if kind == "add":
        return Add(feature, value, positions="all", hook=hook)
    if kind == "add_norm":
        return Steer(feature, value, norm_scaled=True, positions="all", hook=hook)
    raise EditError(f"unknown sweep kind {kind!r}; choose from {', '.join(KINDS)}")


@dataclass
class SweepResult:
    """A sweep's points beside the unsteered baseline, and the one :func:`choose` picked."""

    feature: int
    hook: str
    baseline: SweepPoint
    points: list[SweepPoint]
    budget: float
    chosen: SweepPoint | None
    reference: float = 1.0            # the activation strength 1 stands for
    reference_source: str = "labels"  # "labels", "measured" or "norm" (the feature never fired: ||x|| / ||W_dec[f]||)
    prompts: tuple[str, ...] = field(default_factory=tuple)

    def ratio(self, p: SweepPoint) -> float:
        """``p``'s perplexity over the baseline's."""
        b = self.baseline.perplexity
        return p.perplexity / b if b > 0 and math.isfinite(b) else float("nan")

    def edits(self) -> EditSet:
        """The chosen setting as an EditSet; EditError when no point fit the budget."""
        if self.chosen is None:
            raise EditError(f"no setting of feature {self.feature} kept perplexity within {self.budget:g}x the "
                            f"unsteered {self.baseline.perplexity:.3g} (tried {len(self.points)}: "
                            f"{self._closest()}); raise the budget or try lower strengths")
        return self.edits_for(self.chosen)

    def edits_for(self, point: SweepPoint) -> EditSet:
        """Any measured point's setting as an EditSet (the baseline has none: EditError)."""
        if point.kind not in KINDS:
            raise EditError(f"the {point.kind!r} point is the unsteered baseline; it has no edit")
        return EditSet((point_edit(point.kind, self.feature, point.value, self.hook),))

    def _closest(self) -> str:
        ok = [p for p in self.points if math.isfinite(p.perplexity) and p.concept > self.baseline.concept]
        if not ok:
            return "none raised the feature's activation on the output"
        p = min(ok, key=lambda q: q.perplexity)
        return (f"the most fluent that raised the feature was {p.kind} at {p.strength:g}x, "
                f"{self.ratio(p):.2f}x perplexity")

    def summary(self) -> str:
        """One line: the chosen setting, its concept and perplexity against the baseline's."""
        b, c = self.baseline, self.chosen
        if c is None:
            return f"feature {self.feature}: nothing within {self.budget:g}x perplexity ({self._closest()})"
        return (f"feature {self.feature}: {c.kind} at {c.strength:g}x reference {self.reference:.3g} "
                f"(value {c.value:.4g}); concept {b.concept:.3g} -> {c.concept:.3g}, perplexity "
                f"{b.perplexity:.3g} -> {c.perplexity:.3g} ({self.ratio(c):.2f}x, budget {self.budget:g}x)")

    def to_json(self) -> dict[str, Any]:
        def pt(p: SweepPoint) -> dict[str, Any]:
            d = dataclasses.asdict(p)
            d["samples"] = list(p.samples)
            d["perplexity_ratio"] = self.ratio(p)
            return d

        return {"feature": self.feature, "hook": self.hook, "budget": self.budget, "rule": RULE,
                "reference": self.reference, "reference_source": self.reference_source,
                "prompts": list(self.prompts), "baseline": pt(self.baseline), "points": [pt(p) for p in self.points],
                "chosen": None if self.chosen is None else self.points.index(self.chosen)}

    def svg(self, x: str = "ppl") -> str:
        """An inline SVG line chart: concept (y) against the perplexity ratio (``x="ppl"``, log scale,
        with the budget line) or the strength (``x="strength"``), one polyline per kind, the chosen
        point ringed. Hand-written SVG, no plotting library."""
        from saesteer.eval.steering_plot import sweep_svg

        return sweep_svg(self, x=x)


def steering_sweep(model: Any, feature: int, *, prompts: Sequence[str] | None = None,
                   strengths: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
                   kinds: Sequence[str] = KINDS, max_new_tokens: int = 24, budget: float = 1.5,
                   score: Callable[[str], float] | None = None, hook: str | None = None, chat: bool = True,
                   progress: bool = True) -> SweepResult:
    """Try every ``kind`` x ``strength`` edit of ``feature`` on ``prompts`` (default
    :data:`DEFAULT_PROMPTS`) and pick the one that raises the feature's activation on the output most
    while keeping perplexity within ``budget`` x the unsteered perplexity (:func:`choose`).

    Generation is greedy, batched over prompts with left padding, in the tokenizer's chat template
    when it has one and ``chat`` is set. ``score(text) -> float``, when given, is averaged over each
    point's outputs as ``concept_external`` (e.g. a lexicon rate).

    Cost: ``1 + len(kinds)`` batched greedy ``generate`` calls of ``max_new_tokens`` tokens (the
    baseline, then one per kind over ``len(strengths) x len(prompts)`` rows) and as many unsteered
    read-back forwards over the same rows. The defaults make 126 generations of 24 tokens.
    """
    from tqdm.auto import tqdm

    tok = model.tokenizer
    if tok is None:
        raise SaesteerError("steering_sweep needs the tokenizer: saesteer.wrap(model, sae, tokenizer=tok)")
    name = model.attachment_name(hook)
    att = model.attachments[name]
    feature = att.sae.check_feature(feature)
    kinds = tuple(kinds)
    for k in kinds:
        if k not in KINDS:
            raise EditError(f"unknown sweep kind {k!r}; choose from {', '.join(KINDS)}")
    strengths = tuple(float(s) for s in strengths)
    if not strengths or not kinds or not all(math.isfinite(s) for s in strengths):
        raise EditError("give at least one kind and one finite strength")
    if not (math.isfinite(budget) and budget > 0):
        raise EditError(f"the perplexity budget is a factor > 0, got {budget!r}")
    prompts = tuple(prompts if prompts is not None else DEFAULT_PROMPTS)
    if not prompts:
        raise EditError("give at least one prompt")
    enc, n = _encode(tok, prompts, chat)
    eos = _eos_ids(tok, model)
    pad = _pad_id(tok, eos)
    bar = tqdm(total=1 + len(kinds) * len(strengths), desc=f"steering sweep, feature {feature}", unit="point",
               disable=not progress, leave=False)
    with bar, torch.no_grad():
        seqs, logits = _generate(model, enc, None, max_new_tokens, pad)
        base = _read(model, att, feature, enc, n, seqs, logits, eos, steered_from=None)
        bar.update(1)
        ref, source = _reference(att, feature, base)
        wnorm = float(att.sae.W_dec[feature].float().norm())
        xnorm = max(base["xnorm"], 1e-12)
        baseline = _point("none", 0.0, 0.0, base, tok, n, seqs, range(len(prompts)), score)
        points: list[SweepPoint] = []
        for kind in kinds:
            values = [s * ref * (wnorm / xnorm if kind == "add_norm" else 1.0) for s in strengths]
            rows = [EditSet((point_edit(kind, feature, v, name),)) for v in values for _ in prompts]
            big = {k: v.repeat(len(strengths), 1) for k, v in enc.items()}
            seqs, logits = _generate(model, big, rows, max_new_tokens, pad)
            first = 1 if kind == "clamp_generated" else 0  # step 0 reads the prompt's last token: unsteered there
            r = _read(model, att, feature, big, n, seqs, logits, eos, steered_from=first)
            for j, (s, v) in enumerate(zip(strengths, values)):
                idx = range(j * len(prompts), (j + 1) * len(prompts))
                points.append(_point(kind, s, v, r, tok, n, seqs, idx, score))
            bar.update(len(strengths))
    return SweepResult(feature, name, baseline, points, float(budget), choose(points, baseline, budget),
                       reference=ref, reference_source=source, prompts=prompts)


def auto_sweep(model: Any, feature: int, **kw: Any) -> SweepResult:
    """A small, fast sweep (:data:`AUTO`: strengths 0.25, 0.5, 1 of clamp and clamp_generated on 3 prompts,
    16 new tokens; any :func:`steering_sweep` argument overrides). Cost: 3 batched generates (3 and
    2 x 9 rows) and their read-backs."""
    return steering_sweep(model, feature, **{**AUTO, **kw})


def auto_edit(model: Any, feature: int, **kw: Any) -> EditSet:
    """The chosen edit of :func:`auto_sweep` (EditError when nothing fits the budget)."""
    return auto_sweep(model, feature, **kw).edits()


# ------------------------------------------------------------------------------------------- internals
def _encode(tok: Any, prompts: Sequence[str], chat: bool) -> tuple[dict[str, torch.Tensor], int]:
    """The prompts (in the chat template when there is one and ``chat``), tokenised one by one and
    left-padded by hand, so a tokenizer the caller shares is never reconfigured."""
    rows = []
    for p in prompts:
        text = p
        if chat and getattr(tok, "chat_template", None):
            text = tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        rows.append([int(i) for i in tok(text)["input_ids"]])
    n = max(map(len, rows))
    pad = _pad_id(tok, _eos_ids(tok, None))
    ids = torch.tensor([[pad] * (n - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (n - len(r)) + [1] * len(r) for r in rows])
    return {"input_ids": ids, "attention_mask": mask}, n


def _eos_ids(tok: Any, model: Any) -> set[int]:
    ids = {getattr(tok, "eos_token_id", None)}
    gc = getattr(getattr(model, "model", None), "generation_config", None) if model is not None else None
    e = getattr(gc, "eos_token_id", None)
    ids |= set(e) if isinstance(e, (list, tuple)) else {e}
    return {int(i) for i in ids if i is not None}


def _pad_id(tok: Any, eos: set[int]) -> int:
    pad = getattr(tok, "pad_token_id", None)
    return int(pad) if pad is not None else (min(eos) if eos else 0)


def _generate(model: Any, enc: dict, rows: list | None, max_new_tokens: int,
              pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy ``generate``; returns the sequences and the raw logits of every step ``[B, S, V]``."""
    device = next(model.model.parameters()).device
    out = model.generate(**{k: v.to(device) for k, v in enc.items()}, edits=rows, max_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=pad, return_dict_in_generate=True, output_logits=True)
    return out.sequences.cpu(), torch.stack([s.float().cpu() for s in out.logits], 1)


def _read(model: Any, att: Any, feature: int, enc: dict, n: int, seqs: torch.Tensor, logits: torch.Tensor,
          eos: set[int], steered_from: int | None) -> dict[str, Any]:
    """Read ``seqs`` back with the unsteered model: per row, the feature's mean activation and the
    perplexity of the generated tokens (up to and including the first end token), and the mean KL of
    the generation's logits against the clean ones at steps ``>= steered_from`` (None: no KL)."""
    from saesteer.runtime import taps

    gen = seqs[:, n:]
    gmask = torch.ones_like(gen, dtype=torch.bool)
    for r in range(gen.shape[0]):
        hit = [t for t, i in enumerate(gen[r].tolist()) if i in eos]
        if hit:
            gmask[r, hit[0] + 1:] = False
    mask = torch.cat([enc["attention_mask"].bool(), gmask], 1)
    pos = (mask.long().cumsum(-1) - 1).masked_fill(~mask, 1)
    device = next(model.model.parameters()).device
    sae = att.sae
    idx = torch.tensor([feature], device=sae.device)
    acts, norms, ppl, kl_sum, kl_n = [], [], [], [], []
    for lo in range(0, seqs.shape[0], _READ_ROWS):
        sl = slice(lo, lo + _READ_ROWS)
        with taps.tap(att.point) as t:
            out = model.model(input_ids=seqs[sl].to(device), attention_mask=mask[sl].long().to(device),
                              position_ids=pos[sl].to(device))
        x = taps.require(t, att.name)
        acts.append(sae.encode_subset(x.to(sae.device, sae.dtype), idx)[..., 0].float().cpu())
        norms.append(x.float().norm(dim=-1).cpu())
        logp = torch.log_softmax(out.logits[:, n - 1:-1].float().cpu(), -1)  # predicts generated token t at n-1+t
        lp_tok = logp.gather(-1, gen[sl, :, None]).squeeze(-1)
        for r in range(lp_tok.shape[0]):
            m = gmask[sl][r]
            ppl.append(float(torch.exp(-lp_tok[r][m].mean())) if m.any() else float("nan"))
        if steered_from is not None:
            ls = torch.log_softmax(logits[sl], -1)
            p = ls.exp()
            kl = torch.where(p > 0, p * (ls - logp), torch.zeros(())).sum(-1)  # [rows, S]
            m = gmask[sl].clone()
            m[:, :steered_from] = False
            kl_sum += (kl * m).sum(-1).tolist()
            kl_n += m.sum(-1).tolist()
    acts_t, norms_t = torch.cat(acts), torch.cat(norms)
    concept = [float(acts_t[r, n:][gmask[r]].mean()) if gmask[r].any() else float("nan") for r in range(len(gen))]
    body = mask.clone()
    body[torch.arange(len(mask)), mask.long().argmax(1)] = False  # each row's first token: the attention sink
    return {"concept": concept, "ppl": ppl, "kl_sum": kl_sum, "kl_n": kl_n,
            "max_act": float(acts_t[body].max()) if body.any() else 0.0,
            "xnorm": float(norms_t[body].median()) if body.any() else 1.0}


def _reference(att: Any, feature: int, base: dict) -> tuple[float, str]:
    """What strength 1 means: the labels' ``max_activation``, else the largest activation measured
    on the unsteered sequences, else (the feature never fired) ``median ||x|| / ||W_dec[f]||``."""
    labels = getattr(att.sae, "labels", None)
    if labels is not None:
        try:
            v = float(labels.info(feature).get("max_activation") or 0)
        except (KeyError, TypeError, ValueError):
            v = 0.0
        if v > 0 and math.isfinite(v):
            return v, "labels"
    if base["max_act"] > 0:
        return base["max_act"], "measured"
    w = float(att.sae.W_dec[feature].float().norm())
    return base["xnorm"] / max(w, 1e-12), "norm"


def _point(kind: str, strength: float, value: float, r: dict, tok: Any, n: int, seqs: torch.Tensor,
           idx: range, score: Callable[[str], float] | None) -> SweepPoint:
    texts = [tok.decode(seqs[i, n:].tolist(), skip_special_tokens=True).strip() for i in idx]
    concept = [r["concept"][i] for i in idx if math.isfinite(r["concept"][i])]
    ppl = [r["ppl"][i] for i in idx if math.isfinite(r["ppl"][i])]
    ext = statistics.fmean(float(score(t)) for t in texts) if score is not None else None
    kl_n = sum(r["kl_n"][i] for i in idx) if r["kl_n"] else 0  # no KL rows: the baseline, KL 0 by definition
    kl = sum(r["kl_sum"][i] for i in idx) / kl_n if kl_n else (0.0 if not r["kl_n"] else float("nan"))
    return SweepPoint(kind, float(strength), float(value), statistics.fmean(concept) if concept else float("nan"),
                      ext, statistics.median(ppl) if ppl else float("nan"), float(kl), tuple(texts[:2]))
