"""saesteer's edits inside one vLLM worker: SAEs attached at hook points of the runner's model, and per
forward, each request's own edits applied to its own rows.

A forward pre-hook on the model reads, through :mod:`.batch` (the one reader of vLLM's runner state),
which request owns which rows and where their tokens sit; each attachment's hook groups the rows by
edit set and hands them to :func:`saesteer.runtime.apply.edit_activations`, the same math as the HF
path, tokens as rows (``[n, 1, d]``) with their own absolute positions and prompt lengths. Rows of
unsteered requests are never written: they come back bit-exact. A forward that had steered rows for an
attachment whose hook did not run raises (a hook the engine skipped is never a silent no-op).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from saesteer.adapters import vllm_decoder
from saesteer.edit_schema import from_json
from saesteer.edits import EditSet
from saesteer.errors import EditError, HookError
from saesteer.integrations.vllm import batch
from saesteer.runtime.apply import edit_activations
from saesteer.sae.module import SAE


@dataclass
class _Group:
    """The rows of one forward that share one edit set on one attachment."""

    rows: torch.Tensor
    pos: torch.Tensor
    prompt_len: torch.Tensor


@dataclass
class _Step:
    """What the current forward steers: per attachment, edit set -> rows."""

    groups: dict[str, dict[EditSet, _Group]] = field(default_factory=dict)
    fired: set[str] = field(default_factory=set)


@dataclass
class VllmAttachment:
    name: str
    sae: SAE
    point: vllm_decoder.VllmPoint
    calls: int = 0
    steered_rows: int = 0


def route(es: EditSet, names: list[str]) -> dict[str, EditSet]:
    """``es`` split per attachment: edits naming a hook go there, edits naming none go to the only
    attachment; reconstruct mode with no edit reconstructs at every attachment. EditError otherwise."""
    for e in es.edits:
        if e.hook is None and len(names) != 1:
            raise EditError(f"{len(names)} SAEs are attached ({', '.join(names)}): say which with \"hook\" "
                            "on each edit")
        if e.hook is not None and e.hook not in names:
            raise EditError(f"no SAE attached at {e.hook!r}; attached: {', '.join(names) or 'none'}")
    if not es.edits and es.mode == "reconstruct":
        return {n: es for n in names}
    return {n: part for n in names if (part := es.for_hook(n, len(names) == 1))}


class VllmSteering:
    """The attachments of one worker and the hooks that apply each request's edits."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.model: nn.Module = runner.get_model() if hasattr(runner, "get_model") else runner.model
        self.attachments: dict[str, VllmAttachment] = {}
        self._handles: dict[str, list[RemovableHandle]] = {}
        self._top: list[RemovableHandle] = []
        self._step: _Step | None = None
        self._parsed: dict[str, EditSet] = {}
        self._by_id: dict[int, tuple[Any, EditSet]] = {}
        self.forwards = 0

    # ------------------------------------------------------------------ attach / detach
    def attach(self, sae: SAE, hook: str) -> str:
        """Attach ``sae`` at ``hook`` (an HF-path hook name); returns the attachment's name."""
        point = vllm_decoder.resolve(self.model, hook)
        if sae.cfg.transcoder:
            raise HookError("transcoders are not supported on vLLM yet: attach an SAE (reads and writes one hook)")
        if point.width is not None and sae.d_in != point.width:
            raise HookError(f"SAE width {sae.d_in} does not match {point.name} (width {point.width})")
        if point.name in self.attachments:
            raise HookError(f"an SAE is already attached at {point.name}; detach it first")
        device = next((p.device for p in point.module.parameters()), torch.device("cpu"))
        att = VllmAttachment(point.name, sae.to(device).eval(), point)
        hs: list[RemovableHandle] = []
        if point.io == "input":
            hs.append(point.module.register_forward_pre_hook(partial(self._pre_hook, att)))
        else:
            hs.append(point.module.register_forward_hook(partial(self._post_hook, att)))
        self.attachments[att.name] = att
        self._handles[att.name] = hs
        if not self._top:
            self._top = [self.model.register_forward_pre_hook(self._begin, with_kwargs=True),
                         self.model.register_forward_hook(self._end, always_call=True)]
        return att.name

    def detach(self, name: str | None = None) -> list[str]:
        """Remove the attachment ``name`` (every one when None); returns the names removed."""
        names = list(self.attachments) if name is None else [name]
        for n in names:
            if n not in self.attachments:
                raise HookError(f"no SAE attached at {n!r}; attached: {', '.join(self.attachments) or 'none'}")
        for n in names:
            for h in self._handles.pop(n):
                h.remove()
            del self.attachments[n]
        if not self.attachments:
            for h in self._top:
                h.remove()
            self._top = []
        return names

    def stats(self) -> dict[str, Any]:
        """Forwards seen, and per attachment how often its hook ran and how many rows it steered."""
        return {"forwards": self.forwards,
                "attachments": {n: {"calls": a.calls, "steered_rows": a.steered_rows, "d_sae": a.sae.d_sae}
                                for n, a in self.attachments.items()}}

    # ------------------------------------------------------------------ per forward
    def _edits(self, spec: Any) -> EditSet:
        """The EditSet of a request's (already admitted, see plugin.py) saesteer object, parsed once:
        a request's object is the same one at every step, so it is looked up by identity first."""
        hit = self._by_id.get(id(spec))
        if hit is not None and hit[0] is spec:
            return hit[1]
        key = json.dumps(spec, sort_keys=True)
        es = self._parsed.get(key)
        if es is None:
            es = self._parsed[key] = from_json(spec)
        if len(self._by_id) > 4096:
            self._by_id.clear()
        if len(self._parsed) > 4096:
            self._parsed.clear()
        self._by_id[id(spec)] = (spec, es)  # the object is kept, so its id is not reused while cached
        return es

    def _begin(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.forwards += 1
        self._step = None
        rows = [r for r in batch.step_rows(self.runner) if r.spec]
        if not rows:
            return
        pos = batch.positions_of(args, kwargs)
        if pos is None:
            raise HookError("saesteer: the vLLM model forward got no `positions` tensor; cannot place edits")
        if max(r.stop for r in rows) > pos.shape[0]:  # a dummy run over stale batch state: nothing to steer
            return
        names = list(self.attachments)
        spans: dict[str, dict[EditSet, list[batch.RequestRows]]] = {}
        for r in rows:
            for n, es in route(self._edits(r.spec), names).items():
                spans.setdefault(n, {}).setdefault(es, []).append(r)
        step = _Step()
        for n, by_set in spans.items():
            step.groups[n] = {}
            for es, rs in by_set.items():
                rows = [i for r in rs for i in range(r.start, r.stop)]
                plen = [r.prompt_len for r in rs for _ in range(r.stop - r.start)]
                idx = torch.tensor(rows, device=pos.device)
                step.groups[n][es] = _Group(idx, pos[idx].unsqueeze(1), torch.tensor(plen, device=pos.device))
        self._step = step

    def _end(self, module: nn.Module, args: Any, output: Any) -> None:
        step, self._step = self._step, None
        if step is None:
            return
        missed = set(step.groups) - step.fired
        if missed:
            raise HookError(f"saesteer: the hook at {', '.join(sorted(missed))} never ran in a forward that had "
                            "steered requests (a compiled or CUDA-graph model?); refusing to return unsteered "
                            "output for steered requests")

    def _apply(self, att: VllmAttachment, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        step = self._step
        att.calls += 1
        groups = step.groups.get(att.name) if step is not None else None
        if not groups:
            return None
        step.fired.add(att.name)
        out = x.clone()
        touched = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        ones = None
        for es, g in groups.items():
            xs = x[g.rows].unsqueeze(1)
            if ones is None or ones.shape[0] != xs.shape[0]:
                ones = torch.ones(xs.shape[0], 1, dtype=torch.bool, device=x.device)
            valid = ones

            def mask_of(p, g=g, valid=valid):
                return p.mask(g.pos, valid, g.prompt_len)

            out[g.rows] = edit_activations(att.sae, xs, es, mask_of).squeeze(1)
            touched[g.rows] = True
            att.steered_rows += int(g.rows.numel())
        return out, touched

    def _pre_hook(self, att: VllmAttachment, module: nn.Module, args: tuple) -> tuple | None:
        x = att.point.read(args)
        got = self._apply(att, x)
        return None if got is None else att.point.write(args, None, *got)

    def _post_hook(self, att: VllmAttachment, module: nn.Module, args: tuple, output: Any) -> Any:
        x = att.point.read(args, output)
        got = self._apply(att, x)
        return None if got is None else att.point.write(args, output, *got)
