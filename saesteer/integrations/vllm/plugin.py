"""saesteer's vLLM general plugin (entry point ``vllm.general_plugins``), loaded by vLLM in each of its
processes: it admits steered requests in the front end (the ``LLM`` object's process, or ``vllm serve``'s
API server), before they are queued.

For a request whose ``SamplingParams.extra_args`` holds ``"saesteer"`` (the OpenAI server fills it from
``extra_body={"vllm_xargs": {"saesteer": ...}}``), the plugin

- refuses it (``VLLMValidationError``, a 400 from the server) unless the engine runs saesteer's worker
  extension eagerly, and unless the edits parse (:mod:`saesteer.edit_schema`, the HF path's schema),
  name attached SAEs and existing features, and fit the model's dtype; a refused request never reaches
  the model;
- gives it a ``cache_salt`` made of its edit set (and its prompt length when the edits say
  ``prompt``/``generated``, which depend on it), joined to any salt the caller gave: the prefix cache then
  shares KV only between requests whose steered KV is the same.

Requests without ``"saesteer"`` pass untouched. vLLM internals used: ``InputProcessor.process_inputs``
of ``vllm.v1.engine.input_processor`` (wrapped), its ``vllm_config``, the ``cache_salt`` and
``prompt_token_ids`` of the ``EngineCoreRequest`` it returns, ``VLLMValidationError``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

from saesteer.adapters import vllm_decoder
from saesteer.edit_schema import SchemaLimits, from_json, to_json
from saesteer.edits import EditSet
from saesteer.errors import EditError, SaesteerError
from saesteer.integrations.vllm.batch import EXTRA_KEY

class _Engine:
    """This process's record of one engine's attachments."""

    def __init__(self, vllm_config: Any) -> None:
        self.config = vllm_config  # kept alive, so its id() is never reused while recorded
        self.saes: dict[str, Any] = {}
        self.loaded: set[str] = set()  # additional_config entries already loaded here


#: front-end record of the SAEs attached to each engine, by id(vllm_config)
_ENGINES: dict[int, _Engine] = {}
_LOCK = threading.Lock()
#: what one request may ask for (a public server can tighten these)
LIMITS = SchemaLimits(max_edits=256)


def _engine(vllm_config: Any) -> _Engine:
    with _LOCK:
        return _ENGINES.setdefault(id(vllm_config), _Engine(vllm_config))


def record(vllm_config: Any, name: str, sae: Any | None) -> None:
    """Note in this process that ``sae`` is attached as ``name`` on the engine of ``vllm_config`` (None:
    detached), so requests are checked against it."""
    eng = _engine(vllm_config)
    with _LOCK:
        if sae is None:
            eng.saes.pop(name, None)
        else:
            eng.saes[name] = sae


def attached(vllm_config: Any) -> dict[str, Any]:
    """The SAEs attached on this engine, by name: those recorded, plus those named in
    ``additional_config["saesteer"]`` (loaded here once, to check requests against)."""
    from saesteer.integrations.vllm.worker import configured
    from saesteer.sae import load_sae

    eng = _engine(vllm_config)
    for c in configured(vllm_config):
        if c["sae"] in eng.loaded:
            continue
        sae = load_sae(c["sae"])
        record(vllm_config, vllm_decoder.canonical(c.get("hook") or sae.cfg.hook_name or "", _n_layers(vllm_config)),
               sae)
        eng.loaded.add(c["sae"])
    with _LOCK:
        return dict(eng.saes)


def _n_layers(vllm_config: Any) -> int:
    hf = vllm_config.model_config.hf_config
    text = hf.get_text_config() if hasattr(hf, "get_text_config") else hf
    return int(getattr(text, "num_hidden_layers", 0) or 0)


def admit(vllm_config: Any, spec: Any) -> EditSet:
    """The EditSet a request's ``"saesteer"`` object asks for on this engine; SaesteerError (EditError,
    CompiledModelError, ...) saying what is wrong otherwise. Cost: a dict walk, and on first use, loading
    the SAEs named in ``additional_config``."""
    from saesteer.integrations.vllm.steering import route
    from saesteer.integrations.vllm.worker import QUALNAME, refuse_compiled
    from saesteer.runtime.checks import check_fits

    if getattr(vllm_config.parallel_config, "worker_extension_cls", "") != QUALNAME:
        raise SaesteerError(f"this vLLM engine runs without saesteer's worker extension, so edits would do "
                            f"nothing: start it with worker_extension_cls={QUALNAME!r}")
    refuse_compiled(vllm_config)
    if isinstance(spec, str):  # the OpenAI server's vllm_xargs carries flat values: the object as JSON text
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError as e:
            raise EditError(f"saesteer: not valid JSON ({e.msg} at character {e.pos})") from None
    es = from_json(spec, LIMITS)
    saes = attached(vllm_config)
    n = _n_layers(vllm_config)
    es = EditSet(tuple(e if e.hook is None else _rehook(e, vllm_decoder.canonical(e.hook, n)) for e in es.edits),
                 es.positions, es.mode, es.zero_others)
    if not saes:
        raise SaesteerError("no SAE is attached on this vLLM engine: attach one with "
                            "saesteer.integrations.vllm.attach(llm, sae) or additional_config")
    dtype = vllm_config.model_config.dtype
    for name, part in route(es, list(saes)).items():
        sae = saes[name]
        for e in part.edits:
            if e.feature is not None:
                sae.check_feature(e.feature)
            check_fits(e, sae, dtype, name)
    return es


def _rehook(e: Any, hook: str) -> Any:
    import dataclasses

    return e if e.hook == hook else dataclasses.replace(e, hook=hook)


def salt(es: EditSet, prompt_len: int, caller_salt: str | None) -> str:
    """The ``cache_salt`` of a request steered by ``es``: the same for requests whose steered KV is the
    same (same edits, and for ``prompt``/``generated`` positions the same prompt length)."""
    kinds = {es.positions.kind, *(e.positions.kind for e in es.edits if e.positions is not None)}
    key = json.dumps(to_json(es), sort_keys=True)
    if kinds & {"prompt", "generated"}:
        key += f"|prompt_len={prompt_len}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"{caller_salt}|saesteer:{digest}" if caller_salt else f"saesteer:{digest}"


def register() -> None:
    """Wrap ``InputProcessor.process_inputs`` once per process (vLLM may call plugins several times)."""
    try:
        from vllm.v1.engine import input_processor
    except ImportError:  # a vLLM without the V1 engine: nothing saesteer can admit
        return
    cls = input_processor.InputProcessor
    orig = cls.process_inputs
    if getattr(orig, "_saesteer", False):
        return

    def process_inputs(self: Any, request_id: str, prompt: Any, params: Any, *args: Any, **kwargs: Any) -> Any:
        extra = getattr(params, "extra_args", None)
        spec = extra.get(EXTRA_KEY) if isinstance(extra, dict) else None
        if spec is None:
            return orig(self, request_id, prompt, params, *args, **kwargs)
        from vllm.exceptions import VLLMValidationError

        try:
            es = admit(self.vllm_config, spec)
        except SaesteerError as e:
            msg = str(e) if str(e).startswith(EXTRA_KEY) else f"{EXTRA_KEY}: {e}"
            raise VLLMValidationError(msg, parameter=EXTRA_KEY) from None
        req = orig(self, request_id, prompt, params, *args, **kwargs)
        req.cache_salt = salt(es, len(req.prompt_token_ids or ()), req.cache_salt)
        if req.sampling_params is not None:  # the worker reads the canonical form, hooks resolved
            req.sampling_params.extra_args = {**(req.sampling_params.extra_args or {}), EXTRA_KEY: to_json(es)}
        return req

    process_inputs._saesteer = True  # type: ignore[attr-defined]
    cls.process_inputs = process_inputs
