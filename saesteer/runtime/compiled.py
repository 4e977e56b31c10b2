"""Compiled models are refused, never steered silently wrong.

``torch.compile`` traces a module once: Python hooks registered after the first compiled call are
never run, and nothing warns (measured: every steered call of a compiled model that ran one bare call
first returned the bare output). saesteer's hooks exist only during steered calls, so on a compiled
model an edit would quietly do nothing. Rather than guess which graphs saw which hooks, saesteer
finds every trace of compilation on the model before a steered call and raises
:class:`~saesteer.errors.CompiledModelError` naming it.

What counts as compiled:

* ``torch.compile(model)`` (an ``OptimizedModule``, the model itself or any submodule);
* ``model.compile()`` / ``module.compile()`` (a compiled ``_call_impl`` on any module);
* ``module.forward = torch.compile(module.forward)`` (a compiled function as an instance attribute).

transformers' own ``generate`` auto-compile (static caches on an accelerator) is switched off for
steered ``generate`` calls by :func:`generate_kwargs`, or refused when the caller asks for it.

Cost: one walk over the model's modules per steered call (a few hundred attribute reads).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from saesteer.errors import CompiledModelError


def _is_optimized_module(m: nn.Module) -> bool:
    try:
        from torch._dynamo.eval_frame import OptimizedModule
    except Exception:  # pragma: no cover - a torch without dynamo
        return False
    return isinstance(m, OptimizedModule)


def compiled_parts(model: nn.Module) -> list[str]:
    """Where ``model`` is compiled: one description per compiled module (empty when none is)."""
    found: list[str] = []
    for name, m in model.named_modules():
        where = name or "the model"
        if _is_optimized_module(m):
            found.append(f"{where} is a torch.compile(...) wrapper")
        elif getattr(m, "_compiled_call_impl", None) is not None:
            found.append(f"{where} was compiled with .compile()")
        elif getattr(m.__dict__.get("forward"), "_torchdynamo_orig_callable", None) is not None:
            found.append(f"{where}.forward was replaced by torch.compile(...)")
    return found


def refuse_compiled(model: nn.Module) -> None:
    """Raise CompiledModelError when any part of ``model`` is compiled (see the module docstring)."""
    found = compiled_parts(model)
    if found:
        shown = "; ".join(found[:3]) + (f"; and {len(found) - 3} more" if len(found) > 3 else "")
        raise CompiledModelError(
            f"cannot steer a compiled model exactly: {shown}. A compiled module runs the graph it traced "
            "first and never sees the hooks saesteer adds per call, so every edit would silently do "
            "nothing. Wrap and steer the uncompiled model (the module torch.compile was given, e.g. "
            "compiled._orig_mod); compile only models you do not steer.")


def generate_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``generate`` keyword arguments for a steered call: transformers' auto-compile of the decoding
    forward (static caches on an accelerator) is turned off with ``disable_compile=True``; a caller
    who passes ``disable_compile=False`` explicitly gets CompiledModelError instead."""
    if kwargs.get("disable_compile") is False:
        raise CompiledModelError("disable_compile=False asks generate to compile the decoding forward, "
                                 "which would not see saesteer's per-call hooks: leave it out for steered calls")
    gc = kwargs.get("generation_config")
    if gc is not None and getattr(gc, "disable_compile", None) is False and getattr(gc, "compile_config", None):
        raise CompiledModelError("this generation_config compiles the decoding forward (compile_config set, "
                                 "disable_compile=False), which would not see saesteer's per-call hooks")
    return {**kwargs, "disable_compile": True}
