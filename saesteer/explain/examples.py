"""Examples of a feature for explaining and scoring, sampled as delphi samples them.

An :class:`Example` is a window of ``window`` tokens (32, as delphi) with the feature's activation on
each token. :func:`feature_windows` reads many windows through the model once and gives every asked
feature its activating and non-activating windows; :func:`delphi_split` draws delphi's sets from them:

- explanation (train) examples: 40, stratified over 10 activation quantiles;
- test examples: 50 activating, stratified over 10 quantiles (seed 22), disjoint from the train ones;
- non-activating examples: 50 at random from windows where the feature never fires.

delphi reads 256-token contexts over 10M tokens and skips latents with fewer than 200 activating
examples; here the corpus is smaller, so :func:`delphi_split` takes what there is and says how many
(``Split.n_activating``), and callers skip a feature below ``min_examples``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from saesteer.errors import SaesteerError


@dataclass(frozen=True)
class Example:
    """One window: its tokens (decoded, one string each) and the feature's activation per token."""

    tokens: tuple[str, ...]
    acts: tuple[float, ...]

    @property
    def max_act(self) -> float:
        return max(self.acts) if self.acts else 0.0

    @property
    def text(self) -> str:
        return "".join(self.tokens)


@dataclass(frozen=True)
class Split:
    """delphi's sets for one feature (see the module doc)."""

    train: list[Example]
    test: list[Example]
    negatives: list[Example]
    n_activating: int
    train_negatives: tuple[Example, ...] = ()  # non-activating, disjoint from ``negatives``: for held-in checks


def quantile_sample(examples: Sequence[Example], n: int, n_quantiles: int = 10, seed: int = 22) -> list[Example]:
    """``n`` examples stratified over ``n_quantiles`` bins of the examples sorted by max activation
    (``n // n_quantiles`` from each bin, bins of near-equal size; fewer when a bin is short), drawn with
    ``random.Random(seed)``. The returned list runs from the highest quantile down."""
    ordered = sorted(examples, key=lambda e: -e.max_act)
    if not ordered:
        return []
    rng = random.Random(seed)
    q = max(1, min(n_quantiles, len(ordered)))
    per = max(1, n // q)
    out: list[Example] = []
    for b in range(q):
        lo, hi = b * len(ordered) // q, (b + 1) * len(ordered) // q
        chunk = ordered[lo:hi]
        out += rng.sample(chunk, min(per, len(chunk)))
    return out


def delphi_split(activating: Sequence[Example], non_activating: Sequence[Example], *, n_train: int = 40,
                 n_test: int = 50, n_negative: int = 50, n_train_negative: int = 10, n_quantiles: int = 10,
                 seed: int = 22) -> Split:
    """delphi's train / test / non-activating sets (module doc), plus ``n_train_negative`` more
    non-activating windows for held-in checks. The train examples are drawn first (seed ``seed + 1``)
    and the test ones from the rest, so no window is both; likewise the two negative sets."""
    n_train = min(n_train, len(activating) // 2)  # a scarce feature keeps half its windows for testing
    train = quantile_sample(activating, n_train, n_quantiles, seed + 1)
    ids = {id(e) for e in train}
    rest = [e for e in activating if id(e) not in ids]
    test = quantile_sample(rest, n_test, n_quantiles, seed)
    rng = random.Random(seed)
    pool = rng.sample(list(non_activating), min(n_negative + n_train_negative, len(non_activating)))
    return Split(train, test, pool[:n_negative], len(activating), tuple(pool[n_negative:]))


@torch.no_grad()
def feature_windows(steered: Any, texts: Sequence[str], features: Sequence[int], *, window: int = 32,
                    max_windows: int = 2000, batch: int = 16, hook: str | None = None,
                    progress: bool = True) -> dict[int, tuple[list[Example], list[Example]]]:
    """``feature -> (activating, non_activating)`` windows: each text is tokenised and cut into
    ``window``-token pieces (at most ``max_windows``; the first token of each piece is left out of the
    activations, where attention sinks fire), run through ``steered``'s model unsteered, and the
    features' activations read at the SAE's hook. Cost: one forward per ``batch`` windows plus an
    ``encode_subset`` of ``len(features)`` columns."""
    from tqdm.auto import tqdm

    from saesteer.runtime import taps

    tok = steered.tokenizer
    if tok is None:
        raise SaesteerError("explaining needs the tokenizer: saesteer.wrap(model, sae, tokenizer=tok)")
    att = steered.attachment(hook)
    feats = [att.sae.check_feature(f) for f in features]
    pieces: list[list[int]] = []
    for t in texts:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        pieces += [ids[i:i + window] for i in range(0, len(ids) - window + 1, window)]
        if len(pieces) >= max_windows:
            break
    pieces = pieces[:max_windows]
    if not pieces:
        raise SaesteerError(f"no text is {window} tokens long")
    idx = torch.tensor(feats, device=att.sae.device)
    device = next(steered.model.parameters()).device
    acts = []
    for lo in tqdm(range(0, len(pieces), batch), desc="feature windows", unit="batch", disable=not progress):
        ids = torch.tensor(pieces[lo:lo + batch], device=device)
        with taps.tap(att.point, stop=True) as t:  # the layers after the hook never run
            steered.model(input_ids=ids)
        x = taps.require(t, att.name)
        a = att.sae.encode_subset(x.to(att.sae.device, att.sae.dtype), idx).float().cpu()
        a[:, 0] = 0.0
        acts.append(a)
    A = torch.cat(acts)  # [W, window, F]
    strs = [tuple(tok.decode([i]) for i in p) for p in pieces]
    out = {}
    for j, f in enumerate(feats):
        on, off = [], []
        for w in range(len(pieces)):
            e = Example(strs[w], tuple(float(v) for v in A[w, :, j]))
            (on if e.max_act > 0 else off).append(e)
        out[f] = (on, off)
    return out


@torch.no_grad()
def max_activations(steered: Any, feature: int, texts: Sequence[str], *, hook: str | None = None,
                    max_len: int = 64) -> list[float]:
    """The feature's largest activation on each text (its first token left out), read through
    ``steered``'s model unsteered: the probe a hypothesis-testing loop runs. Cost: one forward per text."""
    from saesteer.runtime import taps

    att = steered.attachment(hook)
    f = att.sae.check_feature(feature)
    idx = torch.tensor([f], device=att.sae.device)
    device = next(steered.model.parameters()).device
    out = []
    for t in texts:
        ids = steered.tokenizer(t, add_special_tokens=False, truncation=True, max_length=max_len)["input_ids"]
        if len(ids) < 2:
            out.append(0.0)
            continue
        with taps.tap(att.point, stop=True) as tp:
            steered.model(input_ids=torch.tensor([ids], device=device))
        x = taps.require(tp, att.name)
        a = att.sae.encode_subset(x.to(att.sae.device, att.sae.dtype), idx)[0, 1:, 0]
        out.append(float(a.max()))
    return out
