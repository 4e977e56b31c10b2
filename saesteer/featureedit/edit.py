"""FeatureEdit: find the SAE features that carry a piece of knowledge, erase them, show the effect.

>>> edit = saesteer.FeatureEdit.find(model, target=["Alice Smith lives in Lyon."],
...                                  contrast=["Bob Jones lives in Oslo."], top=8)
>>> print(edit.features)                       # chosen features, scores, labels
>>> report = edit.evaluate(probes)             # reliability, generality, locality, delta perplexity
>>> with model.edits(edit):                    # erase them in every forward inside the block
...     model.generate(...)
>>> edit.save("erase_alice.json"); saesteer.FeatureEdit.load("erase_alice.json", model)

The erasure is ``Erase(feature)`` (``f'_i = 0``, SAE error kept) for each chosen feature, at every
token but the first (``positions="all"``) or only at the tokens of the target facts' subjects, the
first token again excepted (``positions="subject"``; those differ per prompt, so pass
``edits=edit.for_texts(prompts)``).
The first token is left alone because most LMs park an attention sink there (activations ~100x the
usual norm, carried by a few features and coordinates that also fire elsewhere): erasing one of
those at the sink breaks every prompt, and selection never scores that token either.
``units="neurons"`` runs the same selection over the hooked layer's raw coordinates (the neuron
baseline, :mod:`saesteer.featureedit.neurons`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from saesteer.edits import EditSet, Erase
from saesteer.errors import EditError
from saesteer.featureedit import recipe
from saesteer.featureedit.evaluate import EditReport, Probes, evaluate
from saesteer.featureedit.facts import Fact, FactLike, as_fact, as_facts, subject_ranges
from saesteer.featureedit.neurons import PREFIX, is_neuron_basis, neuron_latents, neuron_view
from saesteer.featureedit.select import POSITIONS, SelectedUnit, Selection, rank_units, resolve_hooks
from saesteer.positions import Positions

UNITS = ("features", "neurons")
#: where ``positions="all"`` erases: every token but the first (the attention sink)
ALL_BUT_FIRST = Positions.range((1, None))


@dataclass(frozen=True, eq=False)
class FeatureEdit:
    """One targeted erasure: the chosen units, where they are erased, and what it was made for.

    A FeatureEdit is an edit spec: ``model.edits(edit)``, ``model.generate(..., edits=edit)``.
    ``model`` is the SteeredModel it was found on or bound to (None for a recipe loaded without a
    model: it can be read and saved, not applied, until :meth:`bind` checks it against a model).
    """

    features: Selection
    positions: str = "all"
    units: str = "features"
    method: str = "activation"
    subjects: tuple[str, ...] = ()
    target: tuple[Fact, ...] = ()
    contrast: tuple[Fact, ...] = ()
    identity: Mapping[str, Any] = field(default_factory=dict)
    model: Any = field(default=None, repr=False)
    contrast_weight: float = 1.0

    # ------------------------------------------------------------------ finding
    @classmethod
    def find(cls, model: Any, target: Iterable[FactLike], contrast: Iterable[FactLike], *, top: int = 8,
             method: str = "activation", units: str = "features", positions: str = "all",
             hooks: Sequence[str] | str | None = None, contrast_weight: float = 1.0, tokenizer: Any = None,
             batch_size: int = 16) -> "FeatureEdit":
        """Choose the ``top`` units that separate ``target`` from ``contrast`` (see
        :mod:`saesteer.featureedit.select` for the two ``method`` scores) over ``hooks`` (default:
        every attached SAE). ``units="neurons"`` ranks the raw coordinates at the same hooks.
        ``contrast_weight`` scales the contrast term of the score (more: more local, less reliable).

        ``target``/``contrast``: statements (``"Alice Smith lives in Lyon."``: the last word is the
        answer), ``(prompt, answer[, subject])`` tuples or :class:`Fact`. Cost: one forward (and,
        for attribution, one backward) per batch of facts. Nothing on the model changes.
        """
        t = as_facts(target, "target")
        c = as_facts(contrast, "contrast")
        try:
            contrast_weight = float(contrast_weight)
        except (TypeError, ValueError):
            raise EditError(f"contrast_weight must be a number, got {contrast_weight!r}") from None
        if units not in UNITS:
            raise EditError(f"unknown units {units!r}; choose one of {', '.join(UNITS)}")
        if positions not in POSITIONS:
            raise EditError(f"unknown positions {positions!r}; choose one of {', '.join(POSITIONS)}")
        subjects = tuple(dict.fromkeys(f.subject for f in t if f.subject))
        if positions == "subject" and len(subjects) == 0:
            raise EditError("positions='subject' needs the target facts' subjects: give Fact(prompt, answer, subject=...)")
        tok = _tokenizer(model, tokenizer)
        names = resolve_hooks(model, hooks)
        on = model
        if units == "neurons":
            on = neuron_view(model)
            names = [PREFIX + n if not n.startswith(PREFIX) else n for n in names]
        elif any(is_neuron_basis(model.attachments[n].sae) for n in names):
            units = "neurons"
        chosen = rank_units(on, t, c, top=top, method=method, positions=positions, hooks=names,
                            tokenizer=tok, batch_size=batch_size, contrast_weight=contrast_weight)
        ident = recipe.identity(on, sorted({u.hook for u in chosen}))
        return cls(chosen, positions, units, method, subjects, t, c, ident, on, float(contrast_weight))

    # ------------------------------------------------------------------ as edits
    def erasures(self) -> tuple[Erase, ...]:
        """The ``Erase`` edits of this edit (two latents per neuron for the neuron basis)."""
        out: list[Erase] = []
        for u in self.features:
            if self.units == "neurons":
                d = int(self.identity["saes"][u.hook]["d_in"])
                out += [Erase(i, hook=u.hook) for i in neuron_latents(u.feature, d)]
            else:
                out.append(Erase(u.feature, hook=u.hook))
        return tuple(out)

    def edit_set(self, positions: Any = None) -> EditSet:
        """The erasures as one EditSet at ``positions`` (default: every token but the first)."""
        return EditSet(self.erasures(), positions=ALL_BUT_FIRST if positions is None else positions)

    def __saesteer_edits__(self) -> EditSet:
        self._check_applicable()
        if self.positions == "subject":
            raise EditError("this edit erases at the subject's tokens, which differ per prompt: pass "
                            "edits=edit.for_texts(prompts) (one edit set per row) instead of the edit itself")
        return self.edit_set()

    def for_rows(self, ranges: Sequence[Sequence[tuple[int, int]]]) -> Any:
        """An edit spec for a batch whose rows have the subject token ``ranges`` (ignored for
        ``positions="all"``)."""
        self._check_applicable()
        if self.positions == "all":
            return self.edit_set()
        edits = self.erasures()
        out = []
        for r in ranges:
            spans = [(max(a, 1), b) for a, b in r if b > max(a, 1)]  # never the first token
            out.append(EditSet(edits, positions=Positions.range(*spans)) if spans else EditSet())
        return out

    def for_texts(self, texts: Sequence[str], tokenizer: Any = None) -> Any:
        """Per-row edit sets for a batch of ``texts`` tokenised by ``tokenizer(text)`` (absolute
        positions, padding ignored): the subject's tokens where a target subject occurs, nothing
        elsewhere. With ``positions="all"`` this is just the edit set."""
        self._check_applicable()
        tok = _tokenizer(self.model, tokenizer)
        return self.for_rows([subject_ranges(tok, t, self.subjects) for t in texts])

    def top(self, n: int) -> "FeatureEdit":
        """The same edit with only its ``n`` best units (for sweeps over the number erased)."""
        if n < 1 or n > len(self.features):
            raise EditError(f"top({n}): this edit has {len(self.features)} units")
        return dataclasses.replace(self, features=Selection(self.features[:n]))

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, probes: Probes | Mapping[str, Any] | None = None, *, tokenizer: Any = None,
                 max_heldout_tokens: int = 128, batch_size: int = 16, verbose: bool = True,
                 title: str | None = None, baseline: EditReport | None = None) -> EditReport:
        """Reliability, generality, locality and perplexity change (:mod:`saesteer.featureedit.evaluate`);
        prints the table when ``verbose`` and returns it. ``probes`` groups: ``target`` (default:
        the edit's target facts), ``paraphrases``, ``contrast`` (default: the edit's contrast),
        ``unrelated``, ``heldout`` texts. ``baseline``: an earlier report of this host model on the
        same probes, whose unedited numbers are reused. Cost: two forwards per batch of probes (one
        with ``baseline``); with ``positions="subject"`` only the texts holding a subject run edited."""
        self._check_applicable()
        tok = _tokenizer(self.model, tokenizer)
        title = title if title is not None else (
            f"FeatureEdit: erase {len(self.features)} {self.units} ({self.method}, positions={self.positions})")
        report = evaluate(self.model, tok, self.for_rows, self.subjects, Probes.coerce(probes),
                          default_target=self.target, default_contrast=self.contrast,
                          subject_only=self.positions == "subject", baseline=baseline,
                          max_heldout_tokens=max_heldout_tokens, batch_size=batch_size, title=title)
        if verbose:
            print(report)
        return report

    # ------------------------------------------------------------------ recipe
    def to_dict(self) -> dict[str, Any]:
        return {"model": self.identity.get("model", {}), "saes": self.identity.get("saes", {}),
                "units": self.units, "method": self.method, "positions": self.positions,
                "erased_at": "every token but the first" if self.positions == "all" else "the subjects' tokens",
                "contrast_weight": self.contrast_weight, "subjects": list(self.subjects),
                "features": [u.to_dict() for u in self.features],
                "target": [f.to_dict() for f in self.target], "contrast": [f.to_dict() for f in self.contrast]}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the recipe JSON (model and SAE identity, hooks, units, positions, facts)."""
        return recipe.write(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike, model: Any = None) -> "FeatureEdit":
        """Read a recipe; with ``model``, :meth:`bind` it (refusing a model or SAE that differs).
        For a neuron recipe ``model`` may be the feature model: its neuron view is made here."""
        data = recipe.read(path)
        try:
            units = Selection(SelectedUnit(str(u["hook"]), int(u["feature"]), float(u.get("score", 0.0)),
                                           float(u.get("target", 0.0)), float(u.get("contrast", 0.0)),
                                           str(u.get("label", ""))) for u in data["features"])
            edit = cls(units, str(data["positions"]), str(data["units"]), str(data.get("method", "")),
                       tuple(data.get("subjects", ())), tuple(as_fact(f) for f in data.get("target", ())),
                       tuple(as_fact(f) for f in data.get("contrast", ())),
                       {"model": data["model"], "saes": data["saes"]}, None, float(data.get("contrast_weight", 1.0)))
        except (KeyError, TypeError, ValueError) as e:
            raise EditError(f"{path}: malformed recipe ({e})") from None
        if edit.positions not in POSITIONS or edit.units not in UNITS:
            raise EditError(f"{path}: unknown positions {edit.positions!r} or units {edit.units!r}")
        if any(u.hook not in edit.identity["saes"] for u in units):
            raise EditError(f"{path}: a feature names a hook the recipe does not describe")
        return edit.bind(model) if model is not None else edit

    def bind(self, model: Any) -> "FeatureEdit":
        """This edit attached to ``model`` after checking that the model and the SAEs are the ones
        the recipe was made for; EditError listing every difference otherwise."""
        on = model
        if self.units == "neurons" and not any(n.startswith(PREFIX) for n in model.attachments):
            on = neuron_view(model)
        diffs = recipe.differences(self.identity, on)
        if diffs:
            raise EditError("this recipe was made for another model or SAE:\n  - " + "\n  - ".join(diffs))
        return dataclasses.replace(self, model=on)

    def _check_applicable(self) -> None:
        if self.model is None:
            raise EditError("this FeatureEdit is not bound to a model: FeatureEdit.load(path, model) or "
                            "edit.bind(model) checks the recipe against the model first")

    def __repr__(self) -> str:
        return (f"FeatureEdit({len(self.features)} {self.units} at {', '.join(sorted({u.hook for u in self.features}))}; "
                f"method={self.method}, positions={self.positions})")


def _tokenizer(model: Any, tokenizer: Any) -> Any:
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tok is None:
        raise EditError("FeatureEdit needs a tokenizer: saesteer.wrap(..., tokenizer=tok) or tokenizer=tok")
    return tok

