"""Per-call state, kept in a ``contextvars.ContextVar``.

Edits belong to a call, not to the model: each thread (each Gradio user) has its own context, so
two threads steering one model never see each other's edits. The top-level forward pre-hook
records, for every forward, where each token of the batch sits (absolute position, pad or not), as
:mod:`saesteer.runtime.call_inputs` reads it from the top-level call; the layer hooks read it. Hooks on image tokens
(a vision tower) use none of that text bookkeeping: their rows are images (or crops of images, as the
adapter's ``ImageTokens.rows`` says from the top-level call's inputs) and every token is real.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any

import torch

from saesteer.edits import EditSet
from saesteer.errors import EditError
from saesteer.positions import Positions
from saesteer.runtime import call_inputs

Plan = EditSet | list[EditSet]


@dataclass
class BatchInfo:
    """Where the tokens of the current forward sit: ``pos [B, T]`` absolute positions,
    ``valid [B, T]`` non-pad mask."""

    pos: torch.Tensor
    valid: torch.Tensor


@dataclass
class CallState:
    """Everything one steered call needs: the edits per attachment and the token bookkeeping."""

    plans: dict[str, Plan] = field(default_factory=dict)
    capture: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] | None = None
    capture_top_k: int = 10
    batch: BatchInfo | None = None
    prompt_len: torch.Tensor | None = None
    fixed_prompt_len: torch.Tensor | None = None
    #: attachment name -> ImageTokens, for the hooks that read image tokens
    images: dict[str, Any] = field(default_factory=dict)
    #: the current top-level forward's (args, kwargs), read by image hooks to map rows to images
    call: tuple[tuple, dict[str, Any]] | None = None
    #: the (args, kwargs) the caller gave the steered call or generate: generate may run the vision
    #: tower outside any top-level forward (transformers 5 encodes images before the prefill)
    user_call: tuple[tuple, dict[str, Any]] | None = None
    #: transcoder attachment name -> its input in the current module call (read side -> write side)
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    _masks: dict[tuple, torch.Tensor] = field(default_factory=dict)

    def begin_forward(self, args: tuple, kwargs: dict[str, Any]) -> None:
        """Read the top-level call's inputs (through :mod:`saesteer.runtime.call_inputs`, the one
        reader of host arguments): rows, tokens, pads, absolute positions, past length."""
        self._masks.clear()
        self.call = (args, kwargs)
        got = call_inputs.read(args, kwargs).token_positions()
        if got is None:
            self.batch = None
            return
        pos, valid, past = got
        B = pos.shape[0]
        if self.fixed_prompt_len is not None:  # set by generate(): survives use_cache=False
            n = self.fixed_prompt_len
            self.prompt_len = n.repeat_interleave(B // n.shape[0]) if B % n.shape[0] == 0 else None
        elif past == 0:  # a new sequence: what it holds is the prompt
            self.prompt_len = valid.sum(1)
        self.batch = BatchInfo(pos, valid)
        self._check_rows(B)

    def _check_rows(self, B: int) -> None:
        for name, plan in self.plans.items():
            if name in self.images:  # rows are images there, checked by image_rows()
                continue
            if isinstance(plan, list) and (B % len(plan) != 0):
                raise EditError(
                    f"{len(plan)} per-row edit sets for '{name}' but the batch has {B} rows"
                )

    def end_forward(self) -> None:
        self.batch = None
        self.call = None
        self._masks.clear()

    def image_rows(self, image: Any, n_rows: int, n_plans: int) -> list[int]:
        """Which of ``n_plans`` per-image edit sets each of the ``n_rows`` rows a vision tower sees
        takes. The adapter maps rows to images (a tower may see several crops per image) from the
        current top-level call or else from the caller's; when neither tells, row i is image i if there
        is one set per row, else it is an error, never a guess. With ``n_plans`` dividing the image
        count, consecutive images share a set, as text rows do."""
        img, n_img = torch.arange(n_rows), n_rows
        for call in (self.call, self.user_call):
            got = image.rows(*call) if call is not None and image.rows is not None else None
            if got is not None and got[0].numel() == n_rows:
                img, n_img = got[0].cpu(), int(got[1])
                break
        else:
            if n_rows != n_plans:
                raise EditError(f"cannot tell which image each of the {n_rows} rows the vision tower sees belongs "
                                f"to, for {n_plans} per-image edit sets: pass per-image edits to the steered "
                                "call itself (model(...) or model.generate(...) of the wrapped model)")
        if n_img % n_plans:
            raise EditError(f"{n_plans} per-image edit sets but this forward has {n_img} images")
        return (img // (n_img // n_plans)).tolist()

    def mask(self, positions: Positions, rows: tuple[int, ...] | None, shape: tuple[int, int], device,
             image: Any = None) -> torch.Tensor:
        """``[N, T]`` mask of the steered tokens for ``rows`` (all rows when None); cached per forward.
        With ``image`` (the hook's ImageTokens) ``T`` runs along one image's tokens instead."""
        key = (rows, shape, positions, None if image is None else image.cls_tokens)
        m = self._masks.get(key)
        if m is not None:
            return m
        N, T = shape
        if image is not None:
            m = positions.image_mask(N, T, image.cls_tokens, device)
            self._masks[key] = m
            return m
        b = self.batch
        if b is None or b.pos.shape[1] != T:  # no top-level call seen: positions 0..T-1, no pads
            pos = torch.arange(T, device=device).unsqueeze(0).expand(N, T)
            valid = torch.ones(N, T, dtype=torch.bool, device=device)
            prompt = None
        else:
            pos, valid, prompt = b.pos, b.valid, self.prompt_len
            if rows is not None:
                r = torch.tensor(rows, device=pos.device)
                pos, valid = pos[r], valid[r]
                prompt = None if prompt is None else prompt[r]
        m = positions.mask(pos.to(device), valid.to(device), prompt)
        self._masks[key] = m
        return m


_CALL: contextvars.ContextVar[CallState | None] = contextvars.ContextVar("saesteer_call", default=None)


def current() -> CallState | None:
    """The calling thread's steered-call state, or None when no steered call is running."""
    return _CALL.get()


def enter(state: CallState) -> contextvars.Token:
    return _CALL.set(state)


def leave(token: contextvars.Token) -> None:
    _CALL.reset(token)

