"""The worker extension vLLM mixes into its worker class (``worker_extension_cls``): the calls
``LLM.collective_rpc`` reaches on every worker (every tensor/pipeline-parallel rank).

``LLM(model, worker_extension_cls="saesteer.integrations.vllm.worker.SaesteerWorker", enforce_eager=True)``
(or ``vllm serve ... --worker-extension-cls saesteer.integrations.vllm.worker.SaesteerWorker``). SAEs
named in ``additional_config={"saesteer": {"attach": [{"sae": path, "hook": name}, ...]}}`` are attached
right after the model loads; :func:`saesteer.integrations.vllm.attach` adds more later.

vLLM internals used: the worker's ``model_runner`` (``get_model()``), ``vllm_config`` (its
``model_config.enforce_eager``, ``compilation_config.mode``, ``speculative_config``, ``additional_config``),
and ``Worker.load_model`` of ``vllm.v1.worker.gpu_worker`` (wrapped once, on import of this module, to
attach the configured SAEs after loading: vLLM refuses extension methods that share a worker method's name).
"""

from __future__ import annotations

from typing import Any

from saesteer.errors import CompiledModelError

#: the qualified name to pass as ``worker_extension_cls``
QUALNAME = "saesteer.integrations.vllm.worker.SaesteerWorker"


def refuse_compiled(vllm_config: Any) -> None:
    """CompiledModelError unless vLLM runs the model eagerly: a compiled or CUDA-graph model never calls
    the Python hooks saesteer adds, so edits would silently do nothing."""
    from vllm.config import CompilationMode

    eager = bool(getattr(vllm_config.model_config, "enforce_eager", False))
    mode = getattr(vllm_config.compilation_config, "mode", None)
    if not eager or (mode is not None and mode != CompilationMode.NONE):
        raise CompiledModelError(
            "saesteer cannot steer a compiled vLLM model (its graph never calls the hooks): start vLLM with "
            "enforce_eager=True (`vllm serve ... --enforce-eager`)")
    if getattr(vllm_config, "speculative_config", None) is not None:
        raise CompiledModelError("saesteer does not steer vLLM with speculative decoding (draft tokens would "
                                 "be steered as if accepted); start vLLM without it")


def configured(vllm_config: Any) -> list[dict[str, Any]]:
    """The ``additional_config["saesteer"]["attach"]`` entries (checked for shape, not loaded)."""
    extra = (getattr(vllm_config, "additional_config", None) or {})
    conf = extra.get("saesteer") if isinstance(extra, dict) else None
    if conf is None:
        return []
    items = conf.get("attach", []) if isinstance(conf, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) and isinstance(i.get("sae"), str) and
                                              isinstance(i.get("hook", ""), str) for i in items):
        raise ValueError('additional_config["saesteer"] must be {"attach": [{"sae": "<path or hub id>", '
                         '"hook": "blocks.L.hook_resid_post"}, ...]}')
    return items


class SaesteerWorker:
    """Extension methods, prefixed ``saesteer_`` so they never shadow a worker's own."""

    def saesteer_steering(self) -> Any:
        from saesteer.integrations.vllm.steering import VllmSteering

        st = getattr(self, "_saesteer_steering", None)
        if st is None:
            refuse_compiled(self.vllm_config)
            st = self._saesteer_steering = VllmSteering(self.model_runner)
        return st

    def saesteer_attach(self, sae: str, hook: str | None = None) -> str:
        """Load the SAE at ``sae`` (a path, or a hub id when online) and attach it at ``hook`` (its own
        ``hook_name`` when None). Returns the attachment's name (the canonical hook name)."""
        from saesteer.sae import load_sae

        st = self.saesteer_steering()
        loaded = load_sae(sae)
        return st.attach(loaded, hook or loaded.cfg.hook_name)

    def saesteer_detach(self, name: str | None = None) -> list[str]:
        return self.saesteer_steering().detach(name)

    def saesteer_stats(self) -> dict[str, Any]:
        st = getattr(self, "_saesteer_steering", None)
        return {"forwards": 0, "attachments": {}} if st is None else st.stats()

    def saesteer_attach_configured(self) -> list[str]:
        return [self.saesteer_attach(i["sae"], i.get("hook") or None) for i in configured(self.vllm_config)]


def _wrap_load_model() -> None:
    try:
        from vllm.v1.worker import gpu_worker
    except ImportError:  # imported outside a vLLM install (docs, tests of the steering alone)
        return

    orig = gpu_worker.Worker.load_model
    if getattr(orig, "_saesteer", False):
        return

    def load_model(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = orig(self, *args, **kwargs)
        if isinstance(self, SaesteerWorker) and configured(self.vllm_config):
            self.saesteer_attach_configured()
        return out

    load_model._saesteer = True  # type: ignore[attr-defined]
    gpu_worker.Worker.load_model = load_model


_wrap_load_model()
