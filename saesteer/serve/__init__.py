"""``saesteer serve``: an OpenAI-compatible steering server (see :mod:`saesteer.serve.app`)."""

from __future__ import annotations


from saesteer.serve.app import BadRequest, Server, ServeLimits
from saesteer.serve.batcher import Batcher, Job


def make_server(model: str = "smollm2", sae: str | None = None, *, hook: str | None = None, dtype: str = "float32",
                max_batch: int = 16, api_key: str | None = None, limits: ServeLimits = ServeLimits(),
                force_hook: bool = False, window_s: float = 0.1) -> Server:
    """Load ``model`` (``smollm2``, a folder or a hub id) with ``sae`` (the bundled SAE by default) and
    return the Server behind the endpoints. Cost: loading the model and the SAE."""
    import saesteer
    from saesteer.cli import _default_sae, load_model

    lm, tok = load_model(model, dtype)
    if tok is None:
        raise saesteer.SaesteerError(f"model {model!r} has no tokenizer")
    sm = saesteer.wrap(lm, sae or _default_sae(), hook=hook, tokenizer=tok, force_hook=force_hook)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return Server(sm, tok, model_id=model, limits=limits, max_batch=max_batch, api_key=api_key, window_s=window_s)


def serve(server: Server, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run ``server`` with uvicorn until interrupted (binds ``host``: this machine only by default)."""
    import uvicorn

    from saesteer.serve.http import build_app

    uvicorn.run(build_app(server), host=host, port=port, log_level="warning")


__all__ = ["BadRequest", "Batcher", "Job", "Server", "ServeLimits", "make_server", "serve"]
