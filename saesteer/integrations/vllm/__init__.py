"""Steer vLLM per request with saesteer's edits: a plugin, not a fork.

>>> from vllm import LLM
>>> from saesteer.integrations import vllm as sv
>>> llm = LLM(model, dtype="float32", **sv.engine_args())          # worker extension, eager mode
>>> sv.attach(llm, "path/to/sae")                                   # at the SAE's own hook_name
>>> out = llm.generate(prompts, sv.sampling_params({"clamp": {"1309": 160.0}}, max_tokens=40))

Each request carries its own edits in ``SamplingParams(extra_args={"saesteer": ...})`` (the JSON schema
of :mod:`saesteer.edit_schema`, the HF server's too); requests without it run unsteered, bit-exact, in
the same batches. ``vllm serve MODEL --enforce-eager --worker-extension-cls
saesteer.integrations.vllm.worker.SaesteerWorker --additional-config '{"saesteer": {"attach": [{"sae":
"PATH", "hook": "blocks.15.hook_resid_post"}]}}'`` serves the same; clients send edits as
``extra_body={"vllm_xargs": {"saesteer": {...}}}`` (a JSON string there: vLLM's ``vllm_xargs`` takes
flat values; see README).

Parts: :mod:`.plugin` admits requests in the front end (validation, ``cache_salt``); :mod:`.worker` is
the worker extension; :mod:`.steering` applies the edits in the worker; :mod:`.batch` reads vLLM's
runner state; hook points come from :mod:`saesteer.adapters.vllm_decoder`. vLLM must run eagerly
(``enforce_eager=True``): compiled and CUDA-graph models never call the hooks and are refused.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from saesteer.integrations.vllm.batch import EXTRA_KEY
from saesteer.integrations.vllm.worker import QUALNAME as EXTENSION

__all__ = ["EXTENSION", "EXTRA_KEY", "engine_args", "attach", "detach", "stats", "edits_json", "sampling_params"]


def engine_args(*saes: tuple[str, str | None] | str) -> dict[str, Any]:
    """Keyword arguments for ``vllm.LLM`` (or ``EngineArgs``) that load saesteer: the worker extension,
    eager mode, and ``additional_config`` attaching each SAE (a path, or ``(path, hook)``) at startup."""
    attach_list = [{"sae": s} if isinstance(s, str) else {"sae": str(s[0]), **({"hook": s[1]} if s[1] else {})}
                   for s in saes]
    out: dict[str, Any] = {"worker_extension_cls": EXTENSION, "enforce_eager": True}
    if attach_list:
        out["additional_config"] = {"saesteer": {"attach": attach_list}}
    return out


def _config(llm: Any) -> Any:
    return llm.llm_engine.vllm_config


def attach(llm: Any, sae: Any, hook: str | None = None) -> str:
    """Attach ``sae`` (a path or hub id, or a loaded :class:`~saesteer.SAE`) at ``hook`` (the SAE's own
    ``hook_name`` when None) on every worker of ``llm``; returns the attachment's name. Refuses (before
    any worker is touched) an engine without the extension or in compiled mode. Cost: each worker loads
    the SAE (a loaded SAE is saved to a temporary folder first)."""
    from saesteer.integrations.vllm import plugin
    from saesteer.integrations.vllm.worker import refuse_compiled
    from saesteer.sae import SAE, load_sae, save_sae

    cfg = _config(llm)
    if getattr(cfg.parallel_config, "worker_extension_cls", "") != EXTENSION:
        raise plugin.SaesteerError(f"this LLM was built without saesteer's worker extension: pass "
                                   f"worker_extension_cls={EXTENSION!r} (saesteer.integrations.vllm.engine_args())")
    refuse_compiled(cfg)
    with tempfile.TemporaryDirectory(prefix="saesteer-vllm-") as tmp:
        if isinstance(sae, SAE):
            save_sae(sae, Path(tmp) / "sae")
            path, loaded = str(Path(tmp) / "sae"), sae
        else:
            path, loaded = str(sae), load_sae(sae)
        names = llm.collective_rpc("saesteer_attach", args=(path, hook))
    name = names[0]
    plugin.record(cfg, name, loaded)
    return name


def detach(llm: Any, name: str | None = None) -> list[str]:
    """Remove the attachment ``name`` (every one when None) from every worker; returns the names."""
    from saesteer.integrations.vllm import plugin

    names = llm.collective_rpc("saesteer_detach", args=(name,))[0]
    for n in names:
        plugin.record(_config(llm), n, None)
    return names


def stats(llm: Any) -> list[dict[str, Any]]:
    """Per worker: forwards seen, and per attachment how often its hook ran and the rows it steered."""
    return llm.collective_rpc("saesteer_stats")


def edits_json(edits: Any = None, **kw: Any) -> dict[str, Any]:
    """``edits`` (a JSON object of :mod:`saesteer.edit_schema`, an EditSet, or what
    :func:`saesteer.edits.coerce` takes, with ``positions=``/``mode=``) as the schema's JSON object."""
    from saesteer.edit_schema import from_json, to_json
    from saesteer.edits import EditSet, coerce

    if isinstance(edits, dict) and not kw and all(isinstance(k, str) and not k.isdigit() for k in edits):
        return to_json(from_json(edits))
    es = edits if isinstance(edits, EditSet) else coerce(edits, **kw)
    if not isinstance(es, EditSet):
        raise TypeError("one request takes one edit set; send per-row edits as separate requests")
    return to_json(es)


def sampling_params(edits: Any = None, *, positions: Any = None, mode: str = "error", **kwargs: Any) -> Any:
    """``vllm.SamplingParams(**kwargs)`` carrying ``edits`` for saesteer (none: an unsteered request)."""
    from vllm import SamplingParams

    extra = dict(kwargs.pop("extra_args", None) or {})
    if edits is not None:
        extra[EXTRA_KEY] = edits_json(edits, **({"positions": positions} if positions is not None else {}),
                                      **({"mode": mode} if mode != "error" else {}))
    return SamplingParams(**kwargs, extra_args=extra or None)


def xargs(edits: Any = None, **kw: Any) -> dict[str, str]:
    """``extra_body={"vllm_xargs": xargs(edits)}`` for vLLM's OpenAI server: the edits as a JSON string."""
    return {EXTRA_KEY: json.dumps(edits_json(edits, **kw))}
