"""``saesteer.wrap`` and ``SteeredModel``: put SAEs inside a model you already run, steer per call, take them out.

>>> model = saesteer.wrap(hf_causal_lm, sae="path/to/sae", layer=12)
>>> out = model.generate(**inputs, edits={1234: 8.0})          # clamp feature 1234 to 8.0
>>> with model.edits(saesteer.Erase(77)):
...     out = model.generate(**inputs)
>>> bare = model.unwrap()
"""

from __future__ import annotations

import copy
import dataclasses
import os
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

from saesteer import adapters
from saesteer.edits import Edit, EditSet, EditsLike, Steer, coerce
from saesteer.errors import EditError, HookError, SaesteerError
from saesteer.features import FeatureActivations, decode_tokens
from saesteer.positions import PositionsLike
from saesteer.runtime import call_inputs, checks, compiled, placement
from saesteer.runtime.context import CallState, Plan, current, enter, leave
from saesteer.runtime.hooks import Attachment, HookSet
from saesteer.sae.module import SAE


class SteeredModel:
    """A host model with SAEs attached. Attribute access falls through to the model.

    Between calls the model carries no saesteer hook; a steered call (``__call__``, ``generate``,
    ``features``, or a ``with model.edits(...)`` block) registers them and removes them after,
    also when the call raises.
    """

    def __init__(self, model: nn.Module, tokenizer: Any = None) -> None:
        self.__dict__["model"] = model
        self.tokenizer = tokenizer
        self.attachments: dict[str, Attachment] = {}
        self._aliases: dict[str, str] = {}
        self._hooks = HookSet(model, self.attachments)
        self._closed = False

    # ------------------------------------------------------------------ attach / detach
    def attach(
        self,
        sae: SAE | str | os.PathLike,
        *,
        hook: str | None = None,
        layer: int | None = None,
        sae_dtype: torch.dtype | None = None,
        name: str | None = None,
        force_hook: bool = False,
        hook_out: str | None = None,
        **load_kwargs: Any,
    ) -> str:
        """Attach an SAE (object, local path or hub id) at ``hook`` (or the default hook of
        ``layer``, or the hook named in the SAE's config). Returns the attachment's name: the
        canonical hook name, or ``name`` when given (then only ``name`` refers to it, not the hook's
        names, so a second SAE at the same hook can sit beside it under its own name).

        An SAE that records the hook it was trained at (``sae.cfg.hook_name``) is refused at any other
        hook of the model (HookError): its features mean nothing there and steering gives garbage.
        ``force_hook=True`` attaches it anyway, with a warning.

        A transcoder reads at ``hook`` (``blocks.L.hook_mlp_in``) and writes where it reconstructs:
        ``hook_out``, else its recorded ``hook_name_out``, else the MLP output of the same layer;
        edits there give ``mlp_out + decode(f') - decode(f)``.

        Checks the SAE's width against the layer and moves the SAE to the layer's device and dtype
        (``sae_dtype`` overrides the dtype; a caller's SAE object is copied, not modified).
        Nothing on the model changes here.
        """
        self._check_open()
        if self._hooks.active:
            raise SaesteerError("cannot attach while steered calls are running")
        owned = not isinstance(sae, SAE)
        if owned:
            from saesteer.sae import load_sae

            if "dtype" not in load_kwargs:  # read straight into the model's dtype: no float32 copy on the way
                load_kwargs["dtype"] = sae_dtype or next(
                    (p.dtype for p in self.model.parameters() if p.is_floating_point()), torch.float32)
            sae = load_sae(sae, **load_kwargs)
        elif load_kwargs:
            raise TypeError(f"unexpected arguments for an SAE object: {sorted(load_kwargs)}")
        model = self.model
        compiled.refuse_compiled(model)
        adapter = adapters.adapter_for(model)
        if hook is None:
            if layer is not None:
                hook = adapter.default_hook(model, layer)
            elif sae.cfg.hook_name:
                hook = sae.cfg.hook_name
            else:
                hook = adapter.inferred_hook(model)
                if hook is None:
                    raise HookError("say where the SAE goes: hook='blocks.12.hook_resid_post' or layer=12")
        point = adapter.resolve(model, hook)
        checks.check_trained_hook(model, adapter, sae, point, force_hook)
        if point.width is not None and point.width != sae.d_in:
            raise HookError(
                f"SAE width d_in={sae.d_in} does not match the width {point.width} of {point.name} "
                f"({point.path}); this SAE was made for {sae.cfg.model_name or 'another model'} "
                f"at {sae.cfg.hook_name or 'an unknown hook'}"
            )
        point_out = checks.transcoder_output(model, adapter, sae, point, hook_out)
        key = name or point.name
        if key in self.attachments:
            raise HookError(f"an SAE is already attached at {key}; detach it first")
        device, dtype = placement.placement(point.module, model)
        dtype = sae_dtype or dtype
        if sae.device != device or sae.dtype != dtype:
            sae = (sae if owned else copy.deepcopy(sae)).to(device=device, dtype=dtype)
        sae.eval().requires_grad_(False)
        self.attachments[key] = Attachment(key, sae, point, point_out)
        if name is None:
            self._aliases[hook] = key
        return key

    def detach(self, hook: str) -> SAE:
        """Remove the SAE attached at ``hook`` and return it."""
        if self._hooks.active:
            raise SaesteerError("cannot detach while steered calls are running")
        att = self.attachments.pop(self._canon(hook))
        for alias in [a for a, n in self._aliases.items() if n == att.name]:
            del self._aliases[alias]
        return att.sae

    def unwrap(self) -> nn.Module:
        """Detach every SAE and return the bare model, exactly as it was before ``wrap``."""
        if self._hooks.active:
            raise SaesteerError("cannot unwrap while steered calls are running")
        self.attachments.clear()
        self._closed = True
        return self.model

    @property
    def sae(self) -> SAE:
        """The SAE, when exactly one is attached."""
        return self.attachments[self._only()].sae

    def attachment_name(self, hook: str | None = None) -> str:
        """The name of the attachment ``hook`` refers to (its name, the hook name it was attached
        with, or any name of the same hook point); the only attachment when ``hook`` is None.
        Raises EditError when there is no such attachment (or, for None, not exactly one)."""
        return self._canon(hook) if hook is not None else self._only()

    def attachment(self, hook: str | None = None) -> Attachment:
        """The attachment (SAE and hook point) ``hook`` refers to; see :meth:`attachment_name`."""
        return self.attachments[self.attachment_name(hook)]

    # ------------------------------------------------------------------ edits
    def _canon(self, hook: str) -> str:
        if hook in self.attachments:
            return hook
        if hook in self._aliases:
            return self._aliases[hook]
        try:
            name = adapters.resolve(self.model, hook).name
        except HookError:
            name = hook
        if name not in self.attachments:
            raise EditError(f"no SAE attached at {hook!r}; attached: {', '.join(self.attachments) or 'none'}")
        return name

    def _only(self) -> str:
        if len(self.attachments) != 1:
            raise EditError(
                f"{len(self.attachments)} SAEs are attached ({', '.join(self.attachments)}): "
                "say which with hook= on each edit"
            )
        return next(iter(self.attachments))

    def _validate(self, es: EditSet) -> dict[str, EditSet]:
        """Route each edit to its attachment and check it against that SAE."""
        routed: list[Edit | Steer] = []
        for e in es.edits:
            name = self._canon(e.hook) if e.hook is not None else self._only()
            att = self.attachments[name]
            sae = att.sae
            if isinstance(e, Edit) or e.feature is not None:
                sae.check_feature(e.feature)
            elif e.direction.shape[-1] != sae.d_out:
                raise EditError(f"steering vector has {e.direction.shape[-1]} entries; {name} writes "
                                f"{sae.d_out}-wide activations")
            checks.check_fits(e, sae, next((p.dtype for p in att.point.module.parameters() if p.is_floating_point()),
                                     sae.dtype), name)
            routed.append(e if e.hook == name else dataclasses.replace(e, hook=name))
        es = dataclasses.replace(es, edits=tuple(routed))
        if not es.edits and es.mode == "reconstruct":
            out = {n: es for n in self.attachments}
        else:
            out = {n: es.for_hook(n, False) for n in self.attachments}
        for n, part in out.items():
            if part:
                checks.check_positions(self.attachments[n].point, part)
        return out

    def plan(self, edits: EditsLike, *, positions: PositionsLike = None, mode: str = "error",
             zero_others: bool = False) -> dict[str, Plan]:
        """Check ``edits`` and turn them into one plan per attachment (no model is touched)."""
        self._check_open()
        spec = coerce(edits, positions=positions, mode=mode, zero_others=zero_others)
        if isinstance(spec, EditSet):
            return {n: es for n, es in self._validate(spec).items() if es}
        per_row = [self._validate(es) for es in spec]
        return {n: [row[n] for row in per_row] for n in self.attachments}

    @contextmanager
    def _steering(self, plans: dict[str, Plan], capture: dict | None = None, top_k: int = 10) -> Iterator[CallState]:
        outer = current()
        merged = _merge(outer.plans, plans) if outer is not None else plans
        if not merged and capture is None:  # nothing to do: run the bare model, no hook at all
            yield CallState()
            return
        compiled.refuse_compiled(self.model)  # compiled after wrap: its graph would never run our hooks
        images = {n: a.point.image for n, a in self.attachments.items() if a.point.image is not None}
        state = CallState(plans=merged, capture=capture, capture_top_k=top_k, images=images)
        self._hooks.acquire()
        token = enter(state)
        try:
            yield state
        finally:
            leave(token)
            self._hooks.release()

    @contextmanager
    def edits(self, *edits: Any, positions: PositionsLike = None, mode: str = "error",
              zero_others: bool = False) -> Iterator["SteeredModel"]:
        """Apply edits to every forward run inside the block, in this thread (or task) only.

        Nested blocks add their edits to the outer ones. Calls to the bare model inside the
        block are steered too.
        """
        spec: Any = edits[0] if len(edits) == 1 else list(edits)
        with self._steering(self.plan(spec, positions=positions, mode=mode, zero_others=zero_others)):
            yield self

    # ------------------------------------------------------------------ calls
    def __call__(self, *args: Any, edits: EditsLike = None, positions: PositionsLike = None,
                 mode: str = "error", zero_others: bool = False, **kwargs: Any) -> Any:
        """Forward the model with ``edits`` applied (see :mod:`saesteer.edits`)."""
        plans = self.plan(edits, positions=positions, mode=mode, zero_others=zero_others)
        checks.check_rows(plans, args, kwargs, self.attachments)
        with self._steering(plans) as state:
            state.user_call = (args, kwargs)
            return self.model(*args, **kwargs)

    forward = __call__

    def generate(self, *args: Any, edits: EditsLike = None, positions: PositionsLike = None,
                 mode: str = "error", zero_others: bool = False, **kwargs: Any) -> Any:
        """``model.generate`` with ``edits`` applied at every forward, KV-cached steps included.

        Positions are absolute, so a cached decoding step is steered exactly like the same token
        in a full forward. ``positions="generated"`` steers only new tokens. A steered call runs the
        decoding forward eagerly (``disable_compile=True``); a compiled model is refused
        (CompiledModelError), since its graph would never run saesteer's hooks.
        """
        plans = self.plan(edits, positions=positions, mode=mode, zero_others=zero_others)
        checks.check_rows(plans, args, kwargs, self.attachments)
        with self._steering(plans) as state:
            state.fixed_prompt_len = call_inputs.prompt_lengths(args, kwargs)
            state.user_call = (args, kwargs)
            if state.plans or state.capture is not None:  # hooks are on: no auto-compiled decoding forward
                kwargs = compiled.generate_kwargs(kwargs)
            return self.model.generate(*args, **kwargs)

    def features(self, *args: Any, top_k: int = 10, hook: str | None = None, edits: EditsLike = None,
                 **kwargs: Any) -> FeatureActivations:
        """Run a forward and return the top ``top_k`` features of every token at ``hook`` (the only
        attachment by default). Costs one forward plus a full encode at the hook."""
        name = self._canon(hook) if hook is not None else self._only()
        plans = self.plan(edits)
        capture: dict[str, list] = {name: []}
        with self._steering(plans, capture=capture, top_k=top_k), torch.no_grad():
            self.model(*args, **kwargs)
        if not capture[name]:
            raise HookError(f"the forward never reached {name}")
        vals, inds = capture[name][-1]
        ids = call_inputs.token_ids(args, kwargs)
        valid = call_inputs.valid_mask(args, kwargs, tuple(vals.shape[:2]))
        tokens = decode_tokens(self.tokenizer, ids) if self.tokenizer is not None and ids is not None else None
        labels = getattr(self.attachments[name].sae, "labels", None)
        return FeatureActivations(name, vals.float().cpu(), inds.cpu(), valid.cpu(), tokens, labels)

    # ------------------------------------------------------------------ plumbing
    def _check_open(self) -> None:
        if self._closed:
            raise SaesteerError("this SteeredModel was unwrapped; wrap the model again")

    def __getattr__(self, name: str) -> Any:
        try:
            model = self.__dict__["model"]
        except KeyError:  # during copy/unpickling, before __init__ ran
            raise AttributeError(name) from None
        return getattr(model, name)

    def __repr__(self) -> str:
        atts = ", ".join(f"{n}: {a.sae.extra_repr()}" for n, a in self.attachments.items())
        return f"SteeredModel({type(self.model).__name__}; {atts or 'no SAE'})"


def wrap(
    model: nn.Module,
    sae: SAE | str | os.PathLike | None = None,
    *,
    hook: str | None = None,
    layer: int | None = None,
    tokenizer: Any = None,
    sae_dtype: torch.dtype | None = None,
    force_hook: bool = False,
    **load_kwargs: Any,
) -> SteeredModel:
    """Wrap ``model`` and attach ``sae`` at ``hook`` (or ``layer``'s residual output).

    Cost: loading the SAE and a module lookup; the model is not modified. See
    :meth:`SteeredModel.attach` for the checks made.
    """
    steered = model if isinstance(model, SteeredModel) else SteeredModel(model, tokenizer)
    if sae is not None:
        steered.attach(sae, hook=hook, layer=layer, sae_dtype=sae_dtype, force_hook=force_hook, **load_kwargs)
    return steered


def _merge(outer: dict[str, Plan], inner: dict[str, Plan]) -> dict[str, Plan]:
    out = dict(outer)
    for n, p in inner.items():
        q = out.get(n)
        if q is None:
            out[n] = p
        elif isinstance(p, EditSet) and isinstance(q, EditSet):
            out[n] = q + p
        else:
            a = q if isinstance(q, list) else None
            b = p if isinstance(p, list) else None
            rows = len(a or b)  # type: ignore[arg-type]
            if a is not None and b is not None and len(a) != len(b):
                raise EditError(f"nested per-row edits disagree on the row count ({len(a)} vs {len(b)})")
            out[n] = [(a[i] if a else q) + (b[i] if b else p) for i in range(rows)]  # type: ignore[operator,index]
    return out
