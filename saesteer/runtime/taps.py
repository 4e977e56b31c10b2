"""The one activation tap: read (and optionally replace) the tensor a hook point names, or end the
forward there.

A :class:`~saesteer.adapters.base.HookPoint` names a module and whether its input or its output is
meant; modules return a tensor, a tuple (decoder layers), a list or a ModelOutput, and take their
activation as the first positional argument or as ``hidden_states=``. This module is the only place
that knows those shapes. The steering runtime, training, reward backbones, FeatureEdit and the image
metrics all tap through it.

>>> with tap(point, stop=True) as t:      # run only up to the hooked module
...     model(input_ids=ids)
>>> x = t.x
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from saesteer.errors import HookError

#: ``fn(x) -> y``: a replacement for the hooked tensor, or None to leave it as it is
TapFn = Callable[[torch.Tensor], "torch.Tensor | None"]


def first_tensor(value: Any) -> torch.Tensor | None:
    """The activation a module output carries: the tensor itself, the first element of a tuple or
    list, or the first value of a ModelOutput-like mapping; None when there is none."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        return value[0] if value and isinstance(value[0], torch.Tensor) else None
    if hasattr(value, "keys") and hasattr(value, "values"):
        first = next(iter(value.values()), None)
        return first if isinstance(first, torch.Tensor) else None
    return None


def replace_first(output: Any, y: torch.Tensor) -> Any:
    """A module output with its (first) activation tensor replaced by ``y``: tensor, tuple, list or
    a ModelOutput-like mapping."""
    if isinstance(output, torch.Tensor):
        return y
    if isinstance(output, tuple):
        return (y,) + tuple(output[1:])
    if isinstance(output, list):
        return [y] + list(output[1:])
    first = next(iter(output.keys()))
    return type(output)(**{k: (y if k == first else v) for k, v in output.items()})


def register(module: nn.Module, io: str, fn: TapFn, *, prepend: bool = False,
             name: str | None = None) -> RemovableHandle:
    """Register ``fn`` on ``module``'s input (``io="input"``: first positional argument or
    ``hidden_states=``) or output (first tensor of what it returns). ``fn`` returns a replacement
    tensor or None. Returns the hook's handle; nobody else's hooks are touched. ``prepend`` puts the
    hook before the module's other hooks of that kind (so recorders of outputs see an edit)."""
    label = name or type(module).__name__

    if io == "input":
        def on_input(mod: nn.Module, args: tuple, kwargs: dict) -> Any:
            if args and isinstance(args[0], torch.Tensor):
                y = fn(args[0])
                return None if y is None or y is args[0] else ((y,) + tuple(args[1:]), kwargs)
            x = kwargs.get("hidden_states")
            if not isinstance(x, torch.Tensor):
                raise HookError(f"{label}: cannot find the input activation of {type(mod).__name__}")
            y = fn(x)
            return None if y is None or y is x else (args, {**kwargs, "hidden_states": y})

        return module.register_forward_pre_hook(mark(on_input), with_kwargs=True, prepend=prepend)

    def on_output(mod: nn.Module, args: Any, output: Any) -> Any:
        x = first_tensor(output)
        if x is None:
            raise HookError(f"{label}: the output of {type(mod).__name__} holds no tensor")
        y = fn(x)
        return None if y is None or y is x else replace_first(output, y)

    return module.register_forward_hook(mark(on_output), prepend=prepend)


def mark(fn: Callable) -> Callable:
    """Tag ``fn`` as a saesteer hook, so :func:`saesteer_hooks` can count it."""
    fn.__saesteer_hook__ = True  # type: ignore[attr-defined]
    return fn


def saesteer_hooks(model: "nn.Module | Iterable[nn.Module]") -> int:
    """How many saesteer hooks (forward and pre-forward) sit on any module of ``model`` (or on the
    given modules themselves) right now. Other libraries' hooks (accelerate's, transformers' output
    recorders) are not counted."""
    n = 0
    for m in (model.modules() if isinstance(model, nn.Module) else model):
        for hooks in (m._forward_hooks, m._forward_pre_hooks):
            for h in hooks.values():
                n += bool(getattr(getattr(h, "func", h), "__saesteer_hook__", False))
    return n


class Tap:
    """What a :func:`tap` caught: ``x``, the last tensor seen at the hook (None before the first)."""

    def __init__(self) -> None:
        self.x: torch.Tensor | None = None
        self.calls = 0


class _Stop(Exception):
    """Ends a forward at a tap; each tap raises its own instance, so nested taps stop their own."""


@contextmanager
def tap(point: Any, fn: TapFn | None = None, *, stop: bool = False, detach: bool = True,
        prepend: bool = True) -> Iterator[Tap]:
    """Tap ``point`` (a HookPoint) while the block runs: each time the hooked tensor passes, store it
    in ``Tap.x`` (detached unless ``detach=False``), give it to ``fn`` (whose non-None result
    replaces it) and, with ``stop``, end the forward there — the block's forward call then returns
    nothing and the layers after the hook never run. The hook is removed on exit, also on error.
    Cost: one Python call per forward of the hooked module."""
    caught = Tap()
    stopper = _Stop()

    def on(x: torch.Tensor) -> torch.Tensor | None:
        caught.x = x.detach() if detach else x
        caught.calls += 1
        y = fn(x) if fn is not None else None
        if stop:
            raise stopper
        return y

    handle = register(point.module, point.io, on, prepend=prepend, name=point.name)
    try:
        yield caught
    except _Stop as e:
        if e is not stopper:
            raise
    finally:
        handle.remove()


def require(caught: Tap, what: str) -> torch.Tensor:
    """``caught.x``, or a HookError saying the forward never reached ``what``."""
    if caught.x is None:
        raise HookError(f"the forward never reached {what}")
    return caught.x
