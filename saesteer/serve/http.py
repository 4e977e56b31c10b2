"""The FastAPI app of ``saesteer serve``: OpenAI shapes in and out, errors as OpenAI-style JSON."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request  # this module is imported only to serve: FastAPI is needed then
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from saesteer.errors import SaesteerError
from saesteer.serve.app import BadRequest, Server, new_id, now, sse


def _error(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None) -> Any:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status_code=status)


def _logprob_entry(server: Server, item: Any, chat: bool) -> Any:
    tok, lp, top = item
    text = server.token_text(tok)
    if chat:
        return {"token": text, "logprob": lp, "bytes": list(text.encode()),
                "top_logprobs": [{"token": server.token_text(i), "logprob": v, "bytes": list(server.token_text(i).encode())}
                                 for i, v in top]}
    return text, lp, {server.token_text(i): v for i, v in top}


def _collect(server: Server, job: Any, stop: list[str], chat: bool) -> tuple[str, str, list[Any]]:
    text, reason, lps = "", "length", []
    for kind, value, lp in server.run(job, stop):
        if kind == "done":
            reason = value
        else:
            text += value
            lps += [_logprob_entry(server, x, chat) for x in lp or []]
    return text, reason, lps


def build_app(server: Server) -> Any:
    """The FastAPI application serving ``server``."""
    app = FastAPI(title="saesteer serve", docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def auth(request: Request, call_next: Any) -> Any:
        if not server.check_key(request.headers.get("authorization")):
            return _error(401, "missing or wrong API key: send Authorization: Bearer <key>", "authentication_error",
                          "invalid_api_key")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: Exception) -> Any:
        return _error(400, f"malformed request: {exc}")

    async def body_of(request: Request) -> Any:
        try:
            return json.loads(await request.body() or b"null")
        except ValueError as e:
            raise BadRequest(f"the body is not JSON: {e}") from None

    @app.get("/v1/models")
    def models() -> Any:
        return {"object": "list", "data": [{"id": server.model_id, "object": "model", "created": now(),
                                            "owned_by": "saesteer"}]}

    def completion(body: Any, chat: bool) -> Any:
        try:
            job, stop = server.job(body, chat)
        except BadRequest as e:
            return _error(400, str(e))
        rid, created = new_id("chatcmpl" if chat else "cmpl"), now()
        n_prompt = len(job.prompt_ids)
        if body.get("stream"):
            return StreamingResponse(_stream(server, job, stop, chat, rid, created), media_type="text/event-stream")
        try:
            text, reason, lps = _collect(server, job, stop, chat)
        except SaesteerError as e:
            return _error(400, str(e))
        except Exception as e:  # noqa: BLE001 - this request failed alone; the server goes on
            return _error(500, f"{type(e).__name__}: {e}", "server_error")
        usage = {"prompt_tokens": n_prompt, "completion_tokens": job.produced, "total_tokens": n_prompt + job.produced}
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason,
                      "logprobs": {"content": lps} if job.logprobs is not None else None}
            return {"id": rid, "object": "chat.completion", "created": created, "model": server.model_id,
                    "choices": [choice], "usage": usage}
        logprobs = None
        if job.logprobs is not None:
            logprobs = {"tokens": [t for t, _, _ in lps], "token_logprobs": [v for _, v, _ in lps],
                        "top_logprobs": [d for _, _, d in lps], "text_offset": []}
        return {"id": rid, "object": "text_completion", "created": created, "model": server.model_id,
                "choices": [{"index": 0, "text": text, "finish_reason": reason, "logprobs": logprobs}], "usage": usage}

    def completion_route(chat: bool) -> Any:
        async def route(request: Request) -> Any:
            try:
                body = await body_of(request)
            except BadRequest as e:
                return _error(400, str(e))
            return await run_in_threadpool(completion, body, chat)  # the batcher blocks: off the event loop

        return route

    app.add_api_route("/v1/chat/completions", completion_route(True), methods=["POST"])
    app.add_api_route("/v1/completions", completion_route(False), methods=["POST"])

    @app.get("/v1/saesteer/stats")
    def stats() -> Any:
        """How many requests each batched generate served (the last 1000 batches)."""
        return {"max_batch": server.batcher.max_batch, "batches": server.batcher.batches[-1000:]}

    @app.get("/v1/saesteer/features")
    def features(search: str = "", top: int = 10) -> Any:
        labels = server.sm.sae.labels
        if labels is None:
            return _error(404, "this SAE has no labels (saesteer label --sae ...)", code="no_labels")
        if len(search) > 200 or not 1 <= top <= 100:
            return _error(400, "search is at most 200 characters and top in [1, 100]")
        return {"data": [{"feature": m.feature, "score": m.score, "label": m.label}
                         for m in labels.search(search, top=top)]}

    @app.get("/v1/saesteer/features/{i}")
    def feature(i: int) -> Any:
        sae = server.sm.sae
        if not 0 <= i < sae.d_sae:
            return _error(400, f"feature {i} does not exist: this SAE has features 0 to {sae.d_sae - 1}")
        labels = sae.labels
        info = labels.info(i) if labels is not None and i in labels else {"feature": i}
        return {"feature": i, "label": labels[i] if labels is not None and i in labels else None,
                "density": info.get("density"), "max_activation": info.get("max_activation"),
                "contexts": info.get("contexts", []), "logit_tokens": info.get("logit_tokens", [])}

    @app.post("/v1/saesteer/activations")
    async def activations(request: Request) -> Any:
        try:
            body = await body_of(request)
            if not isinstance(body, dict) or not isinstance(body.get("text"), str) or not body["text"]:
                raise BadRequest("give {\"text\": \"...\", \"top_k\": 5}")
            if len(body["text"]) > server.limits.max_prompt_chars:
                raise BadRequest(f"text longer than {server.limits.max_prompt_chars} characters")
            k = body.get("top_k", 5)
            if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 50:
                raise BadRequest("top_k must be a whole number in [1, 50]")
        except BadRequest as e:
            return _error(400, str(e))
        def run() -> Any:
            acts = server.sm.features(**server.tok(body["text"], return_tensors="pt"), top_k=k)
            return {"hook": acts.hook, "tokens": acts.to_records()}

        return await run_in_threadpool(run)

    return app


def _stream(server: Server, job: Any, stop: list[str], chat: bool, rid: str, created: int) -> Any:
    kind_name = "chat.completion.chunk" if chat else "text_completion"

    def chunk(delta: str | None, reason: str | None, lps: list[Any]) -> str:
        if chat:
            d = {} if delta is None else {"content": delta}
            choice: dict[str, Any] = {"index": 0, "delta": d, "finish_reason": reason,
                                      "logprobs": {"content": lps} if job.logprobs is not None and lps else None}
        else:
            choice = {"index": 0, "text": delta or "", "finish_reason": reason, "logprobs": None}
        return sse({"id": rid, "object": kind_name, "created": created, "model": server.model_id, "choices": [choice]})

    if chat:
        yield sse({"id": rid, "object": kind_name, "created": created, "model": server.model_id,
                   "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
    try:
        for kind, value, lp in server.run(job, stop):
            if kind == "done":
                yield chunk(None, value, [])
            elif value:
                yield chunk(value, None, [_logprob_entry(server, x, True) for x in lp or []] if chat else [])
    except Exception as e:  # noqa: BLE001 - the stream says what went wrong; the server goes on
        yield sse({"error": {"message": f"{type(e).__name__}: {e}", "type": "server_error"}})
    yield "data: [DONE]\n\n"
