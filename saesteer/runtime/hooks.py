"""Forward hooks: registered for the duration of steered calls only, removed after.

Hooks are ref-counted across threads: the first steered call registers them, the last one to end
removes them, so between calls the model carries no saesteer hook at all. Nobody else's hooks are
removed or reordered (saesteer's own are appended and removed by handle).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from saesteer.adapters.base import HookPoint
from saesteer.edits import EditSet
from saesteer.errors import HookError
from saesteer.runtime.apply import edit_activations
from saesteer.runtime import taps
from saesteer.runtime.context import CallState, current
from saesteer.sae.module import SAE


@dataclass
class Attachment:
    """One SAE at one hook point. ``sae`` already sits on the layer's device and dtype; copies for
    other devices (accelerate offload executing elsewhere) are made once and cached.

    A transcoder reads at ``point`` (its input, e.g. the MLP input) and writes at ``point_out`` (the
    tensor it reconstructs, e.g. the MLP output); an SAE reads and writes at ``point``."""

    name: str
    sae: SAE
    point: HookPoint
    point_out: HookPoint | None = None
    _by_device: dict[torch.device, SAE] = field(default_factory=dict, repr=False)

    def sae_for(self, device: torch.device) -> SAE:
        if self.sae.device == device:
            return self.sae
        sae = self._by_device.get(device)
        if sae is None:
            sae = self._by_device[device] = _copy_to(self.sae, device)
        return sae


def _copy_to(sae: SAE, device: torch.device) -> SAE:
    import copy

    return copy.deepcopy(sae).to(device)


def run_attachment(att: Attachment, state: CallState, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Capture features and apply this call's edits for one attachment; returns the edited tensor, or
    the tensor untouched (the same object) when there is nothing to do. For a transcoder ``x`` is its
    input and ``y`` the tensor it writes into (returned edited); for an SAE both are ``x``."""
    plan = state.plans.get(att.name)
    capture = state.capture
    target = x if y is None else y
    if not plan and (capture is None or att.name not in capture):
        return target
    if x.shape[-1] != att.sae.d_in:
        raise HookError(
            f"SAE width {att.sae.d_in} does not match the activation width {x.shape[-1]} at {att.name}"
        )
    if target.shape[-1] != att.sae.d_out:
        raise HookError(f"transcoder output width {att.sae.d_out} does not match {target.shape[-1]} at "
                        f"{att.point_out.name if att.point_out else att.name}")
    squeeze = x.ndim == 2
    if squeeze:
        x, target = x.unsqueeze(1), target.unsqueeze(1)
    sae = att.sae_for(x.device)
    N, T = x.shape[0], x.shape[1]
    image = att.point.image  # image tokens: rows are images (or crops), no text bookkeeping
    if capture is not None and att.name in capture and (y is None or att.point_out is None):
        with torch.no_grad():
            f = sae.encode(x.to(sae.dtype))
            k = min(state.capture_top_k, f.shape[-1])
            vals, inds = f.topk(k, dim=-1)
        capture[att.name].append((vals, inds))
        if y is None and att.point_out is not None:  # a transcoder's read side: capture only
            return target.squeeze(1) if squeeze else target
    tc = y is not None
    out = target
    if isinstance(plan, EditSet):
        out = edit_activations(sae, x, plan, lambda p: state.mask(p, None, (N, T), x.device, image),
                               out=target if tc else None)
    elif plan:
        if image is not None:
            which = state.image_rows(image, N, len(plan))
        else:
            rep = max(N // len(plan), 1)
            which = [r // rep for r in range(N)]
        groups: dict[EditSet, list[int]] = {}
        for r in range(N):
            es = plan[which[r]]
            if es:
                groups.setdefault(es, []).append(r)
        if groups:
            out = target.clone()
            for es, rows in groups.items():
                key = tuple(rows)
                r = torch.tensor(rows, device=x.device)
                out[r] = edit_activations(
                    sae, x[r], es, lambda p, key=key: state.mask(p, key, (len(key), T), x.device, image),
                    out=target[r] if tc else None,
                )
    return out.squeeze(1) if squeeze else out


def _edit_hook(att: Attachment, x: torch.Tensor) -> torch.Tensor | None:
    """The tap function of one attachment: this call's edits, or nothing outside a steered call."""
    state = current()
    return None if state is None else run_attachment(att, state, x)


def _read_hook(att: Attachment, x: torch.Tensor) -> None:
    """A transcoder's read side: keep its input for the write side of the same module call."""
    state = current()
    if state is not None:
        state.inputs[att.name] = x
        if state.capture is not None and att.name in state.capture:
            run_attachment(att, state, x)


def _write_hook(att: Attachment, y: torch.Tensor) -> torch.Tensor | None:
    """A transcoder's write side: this call's edits, features read from the kept input."""
    state = current()
    if state is None:
        return None
    x = state.inputs.pop(att.name, None)
    if x is None:
        raise HookError(f"{att.name}: the transcoder's output hook ran without its input hook "
                        f"({att.point.name} before {att.point_out.name if att.point_out else '?'})")
    return run_attachment(att, state, x, y)


@taps.mark
def _top_pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
    state = current()
    if state is not None:
        state.begin_forward(args, kwargs)


@taps.mark
def _top_post_hook(module: nn.Module, args: Any, output: Any) -> None:
    state = current()
    if state is not None:
        state.end_forward()


class HookSet:
    """The hooks of one wrapped model, registered while at least one steered call is running."""

    def __init__(self, top: nn.Module, attachments: dict[str, Attachment]) -> None:
        self.top = top
        self.attachments = attachments
        self._lock = threading.Lock()
        self._users = 0
        self._handles: list[RemovableHandle] = []

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def acquire(self) -> None:
        with self._lock:
            if self._users == 0:
                self._register()
            self._users += 1

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self._remove()

    def _register(self) -> None:
        hs = self._handles
        try:
            hs.append(self.top.register_forward_pre_hook(_top_pre_hook, with_kwargs=True))
            hs.append(self.top.register_forward_hook(_top_post_hook, always_call=True))
            for att in self.attachments.values():
                # outputs first, so hooks that record outputs (transformers' hidden_states) see the edit
                if att.point_out is None:
                    hs.append(taps.register(att.point.module, att.point.io, partial(_edit_hook, att),
                                            prepend=att.point.io == "output", name=att.name))
                    continue
                hs.append(taps.register(att.point.module, att.point.io, partial(_read_hook, att), name=att.name))
                hs.append(taps.register(att.point_out.module, att.point_out.io, partial(_write_hook, att),
                                        prepend=att.point_out.io == "output", name=att.name))
        except BaseException:
            self._remove()
            raise

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
