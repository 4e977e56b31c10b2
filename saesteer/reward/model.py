"""``saesteer.SARM``: a reward model whose every reward is a sum of SAE feature contributions.

>>> rm = saesteer.SARM.from_backbone(hf_causal_lm, sae="path/to/sae", layer=16, tokenizer=tok)
>>> rm.fit(pairs)                       # (prompt, chosen, rejected) triples, Bradley-Terry
>>> r = rm.score(conversations)          # one reward per conversation
>>> why = rm.explain(conversation, top=10)   # w_i * f_i per feature, with labels; sums to r
>>> rm.reweight({feature: 0.0})          # a preference shift, no retraining

The host model is never modified or copied: the forward stops after layer ``L`` (see
:mod:`saesteer.reward.backbone`) and the head reads the SAE features of the last non-pad token.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from saesteer.errors import HookError, RewardError
from saesteer.reward import checkpoint
from saesteer.reward.backbone import TruncatedBackbone, hook_for
from saesteer.reward.conversation import Batch, Conversation, last_positions, render, tokenize
from saesteer.reward.explain import RewardExplanation, SteeringLike, describe, explain_features, parse_steering
from saesteer.reward.fit import FitReport, Pair
from saesteer.reward.head import FeatureRewardHead, apply_feature_edits, check_weight
from saesteer.sae.module import SAE


class SARM:
    """A backbone cut at one layer, an SAE, and a bias-free linear head over its features.

    ``reward = sum_i w_i f_i`` with ``f`` the features at the last non-pad token. Attribute
    ``sae_source`` records where the SAE came from (``{"embedded": name}`` for the bundled one) so
    :meth:`save` can name it instead of copying it.
    """

    def __init__(self, backbone: TruncatedBackbone, head: FeatureRewardHead, tokenizer: Any = None, *,
                 max_length: int | None = None, sae_source: dict[str, Any] | None = None,
                 backbone_source: dict[str, Any] | None = None) -> None:
        self.backbone = backbone
        self.head = head
        self.tokenizer = tokenizer
        self.max_length = max_length if max_length is not None else _context_length(backbone.model, tokenizer)
        self.sae_source = sae_source
        self.backbone_source = backbone_source or _backbone_source(backbone.model)
        self.card: dict[str, Any] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_backbone(cls, model: nn.Module, sae: SAE | str | os.PathLike, *, layer: int | None = None,
                      hook: str | None = None, tokenizer: Any = None, use_topk: bool = True,
                      weight: torch.Tensor | None = None, max_length: int | None = None,
                      sae_dtype: torch.dtype = torch.float32, **load_kwargs: Any) -> "SARM":
        """A SARM on ``model`` (any decoder-only HF model the adapters know, a causal LM or a
        ``*ForSequenceClassification``; a ``SteeredModel`` is read through).

        ``layer`` counts decoder layers kept, as SARM's ``sae_source_layer``: ``layer=16`` reads the
        output of the 16th layer, ``blocks.15.hook_resid_post``; or give ``hook=``; by default the
        SAE's own hook. ``weight`` (``[d_sae]``) starts the head; zeros otherwise. The SAE is loaded
        (or copied) in ``sae_dtype``. Checks the SAE width against the layer and the head width
        against the SAE before anything runs. Cost: loading the SAE; the model is not touched.
        """
        from saesteer.steered import SteeredModel

        if isinstance(model, SteeredModel):
            model = model.model
        source = None
        if isinstance(sae, SAE):
            sae = copy.deepcopy(sae)
        else:
            from saesteer.sae import load_sae

            source = _sae_source(sae)
            sae = load_sae(sae, **load_kwargs)
        sae = sae.to(dtype=sae_dtype)
        point = hook_for(model, layer, hook, sae.cfg.hook_name)
        if point.width is not None and point.width != sae.d_in:
            raise HookError(f"SAE width d_in={sae.d_in} does not match the width {point.width} of {point.name}")
        if _canonical(model, sae.cfg.hook_name) not in (None, point.name):
            warnings.warn(f"the SAE was trained at {sae.cfg.hook_name} but reads {point.name} here "
                          f"(layer={layer} counts layers kept: layer=L reads blocks.(L-1).hook_resid_post)",
                          stacklevel=2)
        if weight is not None:
            check_weight(weight, sae.d_sae)
        backbone = TruncatedBackbone(model, point)
        sae = sae.to(device=backbone.device).eval().requires_grad_(False)
        head = FeatureRewardHead(sae, weight, use_topk=use_topk)
        return cls(backbone, head, tokenizer, max_length=max_length, sae_source=source)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, backbone: nn.Module | None = None, tokenizer: Any = None,
                        dtype: torch.dtype | None = None, max_length: int | None = None) -> "SARM":
        """Load a reward model saved by :meth:`save`, or a SARM release checkpoint (``config.json``
        with ``sarm_param`` and ``model.layers.*``/``score.weight``/``sae.*`` tensors).

        ``backbone``: the host model; for a saesteer folder it is required unless the folder names
        the embedded SmolLM2; for a SARM release it is built from the folder (its ``L`` layers) when
        not given. Cost: reading the head, the SAE, and (when built) the backbone.
        """
        p = Path(os.fspath(path)).expanduser()
        if checkpoint.is_saesteer_folder(p):
            return _from_saesteer_folder(cls, p, backbone, tokenizer, dtype, max_length)
        if not p.exists():
            raise RewardError(f"no such reward model: {p}")
        parts = checkpoint.read_release(p, backbone, dtype)
        model = parts["backbone"]
        rm = cls.from_backbone(model, parts["sae"], layer=parts["layers_kept"], tokenizer=tokenizer or parts["tokenizer"],
                               use_topk=parts["use_topk"], weight=parts["weight"], max_length=max_length)
        rm.backbone_source = {"sarm_release": str(p)}
        return rm

    # ------------------------------------------------------------------ properties
    @property
    def sae(self) -> SAE:
        return self.head.sae

    @property
    def weight(self) -> torch.Tensor:
        """The head ``w [d_sae]`` (a view)."""
        return self.head.weight

    @property
    def labels(self) -> Any:
        return getattr(self.head.sae, "labels", None)

    @property
    def hook(self) -> str:
        return self.backbone.hook

    def __repr__(self) -> str:
        return (f"SARM({type(self.backbone.model).__name__} up to {self.hook}; {self.sae.extra_repr()}; "
                f"head over {'top-k latents' if self.head.use_topk else 'dense pre-activations'})")

    # ------------------------------------------------------------------ text
    def render(self, conv: Conversation, where: str = "conversation") -> str:
        """The text a conversation is scored as (chat template applied, trailing space removed)."""
        return render(conv, self.tokenizer, where)

    def tokenize(self, texts: Sequence[str]) -> Batch:
        """Right-padded ids of rendered texts, cut from the left to ``max_length`` (with a warning)."""
        return tokenize(texts, self.tokenizer, self.max_length)

    # ------------------------------------------------------------------ scoring
    def last_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      steer: SteeringLike = None, *, only_active: bool = False) -> torch.Tensor:
        """Features ``[B, d_sae]`` the head reads (the last non-pad token of each row, left or right
        padding), with ``steer`` edits applied. Cost: the backbone up to the hook, one SAE encode per row."""
        edits = self._edits(steer)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        last = last_positions(attention_mask)
        h = self.backbone.hidden_states(input_ids, attention_mask)
        h_last = h[torch.arange(h.shape[0]), last.to(h.device)]
        with torch.no_grad():
            f = self.head.features(h_last.to(self.sae.device))
            return apply_feature_edits(f, edits, only_active=only_active)

    def rewards(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                steer: SteeringLike = None, *, only_active: bool = False) -> torch.Tensor:
        """Rewards ``[B]`` (float64) of token ids, padded either side (see :meth:`last_features`)."""
        f = self.last_features(input_ids, attention_mask, steer, only_active=only_active)
        return self.head.rewards(f).cpu()

    def score(self, conversations: Conversation | Sequence[Conversation], *, steer: SteeringLike = None,
              only_active: bool = False, batch_size: int = 16) -> torch.Tensor:
        """One reward per conversation (a float64 tensor ``[N]``; a single conversation gives ``[1]``).

        ``steer``: SARM steering JSON (``{"123": ["*", 0.0]}`` or a .json path) or saesteer edits,
        applied to the features before the head. ``"+"`` adds everywhere as SARM does;
        ``only_active=True`` adds only where the feature fires. Cost: one backbone forward up to
        the hook per conversation, in batches of ``batch_size``.
        """
        convs = _as_list(conversations)
        texts = [self.render(c, where=f"conversation {n}") for n, c in enumerate(convs)]
        self._edits(steer)
        out = []
        for s in range(0, len(texts), batch_size):
            b = self.tokenize(texts[s:s + batch_size])
            out.append(self.rewards(b.input_ids, b.attention_mask, steer, only_active=only_active))
        return torch.cat(out)

    def features(self, conversations: Conversation | Sequence[Conversation], *, batch_size: int = 16) -> torch.Tensor:
        """The features ``[N, d_sae]`` the head reads, one row per conversation."""
        convs = _as_list(conversations)
        texts = [self.render(c, where=f"conversation {n}") for n, c in enumerate(convs)]
        rows = []
        for s in range(0, len(texts), batch_size):
            b = self.tokenize(texts[s:s + batch_size])
            rows.append(self.last_features(b.input_ids, b.attention_mask).cpu())
        return torch.cat(rows)

    def explain(self, conversation: Conversation, top: int = 10, *, steer: SteeringLike = None,
                only_active: bool = False) -> RewardExplanation:
        """The reward of one conversation split into ``w_i f_i`` per feature, largest first, with
        the SAE's labels; ``sum(contributions) + rest == reward`` (float64). Cost: one forward."""
        text = self.render(conversation)
        edits = self._edits(steer)
        b = self.tokenize([text])
        f = self.last_features(b.input_ids, b.attention_mask, edits, only_active=only_active)[0]
        contrib = self.head.contributions(f).cpu()
        reward = float(contrib.sum())
        items, rest, active = explain_features(f.cpu(), self.weight.detach().cpu(), contrib, reward, self.labels, top)
        token = None
        if hasattr(self.tokenizer, "convert_ids_to_tokens"):
            ids = b.input_ids[0, : int(b.attention_mask[0].sum())]
            token = self.tokenizer.convert_ids_to_tokens([int(ids[-1])])[0]
        return RewardExplanation(reward, items, rest, active, text, b.truncated[0], token, [describe(e) for e in edits])

    def explain_preference(self, preferred: Conversation, other: Conversation, top: int = 10, *,
                           steer: SteeringLike = None, only_active: bool = False) -> RewardExplanation:
        """Why ``preferred`` outscores (or not) ``other``: the margin ``r(preferred) - r(other)`` split
        into ``w_i (f_i - f'_i)`` per feature, largest first; the shares sum to the margin (float64).
        ``activation`` holds ``f_i - f'_i``. Cost: one forward of two conversations."""
        texts = [self.render(preferred, "preferred"), self.render(other, "other")]
        edits = self._edits(steer)
        b = self.tokenize(texts)
        f = self.last_features(b.input_ids, b.attention_mask, edits, only_active=only_active).cpu()
        diff = f[0] - f[1]
        contrib = self.head.contributions(f[0]).cpu() - self.head.contributions(f[1]).cpu()
        margin = float(contrib.sum())
        items, rest, _ = explain_features(diff, self.weight.detach().cpu(), contrib, margin, self.labels, top)
        active = int(((f[0] != 0) | (f[1] != 0)).sum())
        return RewardExplanation(margin, items, rest, active, None, max(b.truncated), None,
                                 [describe(e) for e in edits], kind="margin")

    # ------------------------------------------------------------------ preference shifts
    def reweight(self, changes: Mapping[int, float], *, copy: bool = False) -> "SARM":
        """Set head weights ``w_i = value`` for each ``{feature: value}``: a preference shift with no
        retraining. It changes a reward only where the feature fires (``f_i != 0``), by
        ``(value - w_i) f_i``. In place (returns self); ``copy=True`` returns a reweighted copy that
        shares the backbone and SAE. All indices and values are checked before any is set."""
        items = []
        for k, v in dict(changes).items():
            i = self.sae.check_feature(k)
            try:
                val = float(v)
            except (TypeError, ValueError):
                raise RewardError(f"weight for feature {i} must be a number, got {v!r}") from None
            if val != val or val in (float("inf"), float("-inf")):
                raise RewardError(f"weight for feature {i} must be finite, got {v!r}")
            items.append((i, val))
        target = self
        if copy:
            target = SARM(self.backbone, FeatureRewardHead(self.sae, self.weight.detach().clone(),
                                                           use_topk=self.head.use_topk),
                          self.tokenizer, max_length=self.max_length, sae_source=self.sae_source,
                          backbone_source=self.backbone_source)
        with torch.no_grad():
            for i, val in items:
                target.head.score.weight[0, i] = val
        return target

    def _edits(self, steer: SteeringLike) -> list:
        edits = parse_steering(steer)
        for e in edits:
            self.sae.check_feature(e.feature)
        return edits

    # ------------------------------------------------------------------ training and saving
    def fit(self, pairs: Sequence[Pair], **kwargs: Any) -> FitReport:
        """Bradley-Terry training on ``(prompt, chosen, rejected)`` triples; see
        :func:`saesteer.reward.fit.fit` for the options (``mode="head"`` or ``"head+sae"``,
        ``heldout=0.1``, ``epochs``, ``lr``, ...). Held-out pairwise accuracy is reported each epoch."""
        from saesteer.reward.fit import fit

        report = fit(self, pairs, **kwargs)
        if report.mode == "head+sae":
            self.sae_source = None  # the SAE changed: save() must write it
        self.card["training"] = report.to_dict()
        return report

    def save(self, folder: str | os.PathLike, *, card: Mapping[str, Any] | None = None) -> Path:
        """Write the head (``score.safetensors``), ``sarm.json`` and, unless it is the bundled SAE,
        the SAE (``sae/``, SAELens format, labels included). Cost: the head is ``d_sae`` floats."""
        from saesteer.sae import save_sae

        out = Path(os.fspath(folder))
        sae_ref = self.sae_source
        if sae_ref is None or "embedded" not in sae_ref:
            with warnings.catch_warnings():  # sae-lens compatibility notes: saesteer reads it back exactly
                warnings.simplefilter("ignore", UserWarning)
                save_sae(self.sae, out / "sae")
            if self.labels is not None and hasattr(self.labels, "save"):
                self.labels.save(out / "sae")
            sae_ref = {"folder": "sae"}
        cfg = {"hook": self.hook, "layers_kept": self.backbone.layers_kept, "use_topk": self.head.use_topk,
               "d_in": self.sae.d_in, "d_sae": self.sae.d_sae, "sae": sae_ref, "backbone": self.backbone_source,
               "max_length": self.max_length, "card": {**self.card, **(card or {})}}
        checkpoint.write(out, cfg, self.weight)
        return out


def _canonical(model: nn.Module, hook: str | None) -> str | None:
    """The canonical name of an SAE's recorded hook on ``model`` (None when it does not resolve)."""
    from saesteer import adapters

    try:
        return adapters.resolve(model, hook).name if hook else None
    except HookError:
        return None


def _as_list(conversations: Any) -> list:
    if isinstance(conversations, str):
        return [conversations]
    if isinstance(conversations, (tuple, list)) and conversations and (
            isinstance(conversations[0], dict) or (len(conversations) == 2 and isinstance(conversations, tuple)
                                                   and all(isinstance(c, str) or c is None for c in conversations))):
        return [conversations]  # one message list, or one (prompt, response) tuple
    if not isinstance(conversations, (tuple, list)) or not conversations:
        raise RewardError("expected a conversation or a non-empty list of conversations")
    return list(conversations)


def _sae_source(sae: Any) -> dict[str, Any] | None:
    from saesteer.embedded.default import ASSETS

    try:
        p = Path(os.fspath(sae)).expanduser().resolve()
    except TypeError:
        return None
    if p.parent == ASSETS.resolve():
        return {"embedded": p.name}
    return None


def _backbone_source(model: nn.Module) -> dict[str, Any]:
    cfg = getattr(model, "config", None)
    name = getattr(cfg, "_name_or_path", None) or ""
    return {"name_or_path": str(name), "class": type(model).__name__}


def _context_length(model: nn.Module, tokenizer: Any) -> int | None:
    n = getattr(tokenizer, "model_max_length", None)
    if isinstance(n, int) and 0 < n < 1_000_000:
        return n
    cfg = getattr(model, "config", None)
    n = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    return int(n) if n else None


def _from_saesteer_folder(cls: type, p: Path, backbone: Any, tokenizer: Any, dtype: Any, max_length: Any) -> SARM:
    cfg, weight = checkpoint.read(p)
    src = cfg.get("backbone") or {}
    if backbone is None:
        if src.get("embedded") != "smollm2":
            raise RewardError(f"{p} was trained on {src.get('name_or_path') or 'an unnamed model'}: pass backbone=")
        from saesteer.embedded.smollm2 import load_smollm2

        backbone, tok = load_smollm2(dtype=dtype or torch.float32)
        tokenizer = tokenizer or tok
    sae_ref = cfg.get("sae") or {}
    if "embedded" in sae_ref:
        from saesteer.embedded.default import ASSETS

        sae_path: Path = ASSETS / sae_ref["embedded"]
    elif "folder" in sae_ref:
        sae_path = p / sae_ref["folder"]
    else:
        raise RewardError(f"{p / checkpoint.CONFIG} names no SAE")
    rm = cls.from_backbone(backbone, sae_path, hook=cfg["hook"], tokenizer=tokenizer, use_topk=cfg.get("use_topk", True),
                           weight=weight, max_length=max_length or cfg.get("max_length"))
    rm.backbone_source = src
    rm.card = dict(cfg.get("card") or {})
    return rm
