"""The FastAPI application: OpenAI-compatible routes over one engine and its scheduler."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import SpiffyError
from .metrics import Metrics
from .protocol import ApiError, ChatRequest, CompletionRequest, error_body, new_id, now
from .scheduler import Cancelled, QueueFull, Scheduler
from .text import TextAssembler

log = logging.getLogger("spiffy.serve")


def create_app(engine, max_queue: int = 64, max_batch: int = 8, batching: bool = True) -> FastAPI:
    metrics = Metrics()
    sched = Scheduler(engine, max_queue=max_queue, max_batch=max_batch, batching=batching, metrics=metrics)

    @asynccontextmanager
    async def lifespan(app):
        sched.start()
        yield
        await run_in_threadpool(sched.stop)   # after uvicorn has drained the open requests

    app = FastAPI(title="spiffy", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.engine, app.state.scheduler, app.state.metrics = engine, sched, metrics

    def count(request: Request, status: int):
        metrics.requests.labels(request.url.path, str(status)).inc()

    def error(request: Request, status: int, body: dict, headers: Optional[dict] = None) -> JSONResponse:
        count(request, status)
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return error(request, e.status, e.body(), e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        errs = e.errors()
        if any(x.get("type") == "json_invalid" for x in errs):
            return error(request, 400, error_body("the request body is not valid JSON", code="json_invalid"))
        first = errs[0] if errs else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        kind = first.get("type", "")
        msg = (f"unknown field {param!r}" if kind == "extra_forbidden"
               else f"{param}: {first.get('msg', 'invalid value')}" if param else first.get("msg", "invalid request"))
        return error(request, 422, error_body(msg, param=param, code=kind or None))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        return error(request, e.status_code, error_body(str(e.detail), code=str(e.status_code)))

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception):
        log.exception("internal error on %s", request.url.path)
        return error(request, 500, error_body(f"internal error ({type(e).__name__})", type="server_error"))

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": engine.name, "kind": engine.kind, "queue_depth": sched.depth,
                "running": sched.running, "batching": sched.batching}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": engine.name, "object": "model", "created": 0, "owned_by": "spiffy"}]}

    @app.get("/metrics")
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def serve(request: Request, req, chat: bool):
        t0 = time.perf_counter()
        if req.model not in (None, "", engine.name):
            raise ApiError(404, f"model {req.model!r} is not served here (GET /v1/models lists {engine.name!r})",
                           param="model", code="model_not_found")
        try:
            ids = await run_in_threadpool(engine.encode, req)
        except SpiffyError as e:
            raise ApiError(422, str(e), param="prompt") from None
        if not ids:
            raise ApiError(422, "the prompt is empty", param="messages" if chat else "prompt")
        plan = engine.plan(req, ids)
        try:
            job = sched.submit(plan, asyncio.get_running_loop())
        except QueueFull as e:
            raise ApiError(429, "the server's request queue is full; retry later", type="rate_limit_error",
                           code="queue_full", headers={"Retry-After": str(e.retry_after)}) from None
        rid = new_id("chatcmpl" if chat else "cmpl")
        text = TextAssembler(engine, plan.max_tokens, plan.stops)
        if req.stream:
            include_usage = bool((req.stream_options or {}).get("include_usage"))
            count(request, 200)
            return StreamingResponse(stream(request, job, text, rid, chat, include_usage, t0),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        outcome = await wait(request, job)
        if outcome is None:   # the client went away
            return Response(status_code=499)
        text.finish(outcome.token_ids)
        done(job, outcome, len(ids), t0)
        count(request, 200)
        return JSONResponse(full_body(rid, chat, text, outcome, plan, len(ids), job, engine.name))

    async def wait(request: Request, job):
        """The job's outcome; None when the client disconnected first (its slot is freed)."""
        while True:
            try:
                kind, value = await asyncio.wait_for(job.events.get(), timeout=0.5)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    sched.cancel(job)
                    return None
                continue
            if kind == "done":
                return value
            if kind == "error":
                if isinstance(value, Cancelled):
                    return None
                log.error("decode failed: %r", value)
                raise ApiError(500, f"decoding failed ({type(value).__name__})", type="server_error")

    async def stream(request: Request, job, text: TextAssembler, rid: str, chat: bool, include_usage: bool, t0: float):
        created = now()
        first = True
        finished = False

        def chunk(delta: Optional[str], reason: Optional[str] = None, extra: Optional[dict] = None) -> str:
            if chat:
                d = {} if delta is None else {"content": delta}
                choice = {"index": 0, "delta": d, "finish_reason": reason}
                body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": engine.name,
                        "choices": [choice]}
            else:
                choice = {"index": 0, "text": delta or "", "finish_reason": reason, "logprobs": None}
                body = {"id": rid, "object": "text_completion", "created": created, "model": engine.name,
                        "choices": [choice]}
            if extra:
                body.update(extra)
            return f"data: {json.dumps(body)}\n\n"

        try:
            if chat:
                yield (f"data: {json.dumps({'id': rid, 'object': 'chat.completion.chunk', 'created': created, 'model': engine.name, 'choices': [{'index': 0, 'delta': {'role': 'assistant', 'content': ''}, 'finish_reason': None}]})}\n\n")
            while True:
                kind, value = await job.events.get()
                if kind == "tokens":
                    delta = text.feed(value)
                    if delta:
                        if first:
                            metrics.first_token.observe(time.perf_counter() - t0)
                            first = False
                        yield chunk(delta)
                    continue
                if kind == "error":
                    msg = "cancelled" if isinstance(value, Cancelled) else f"decoding failed ({type(value).__name__})"
                    yield f"data: {json.dumps(error_body(msg, type='server_error'))}\n\n"
                    finished = True
                    return
                outcome = value
                delta = text.finish(outcome.token_ids)
                done(job, outcome, len(job.plan.prompt_ids), t0)
                yield chunk(delta or None, text.finish_reason,
                            {"spiffy": spiffy_fields(outcome, job.plan, job, text)})
                if include_usage:
                    body = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                            "created": created, "model": engine.name, "choices": [],
                            "usage": usage(len(job.plan.prompt_ids), text)}
                    yield f"data: {json.dumps(body)}\n\n"
                yield "data: [DONE]\n\n"
                finished = True
                return
        finally:
            if not finished:   # the client disconnected mid-stream: free its slot
                sched.cancel(job)

    def done(job, outcome, n_prompt: int, t0: float):
        metrics.latency.observe(time.perf_counter() - t0)
        if job.t_started is not None:
            metrics.queue_wait.observe(job.t_started - job.t_queued)
        metrics.prompt_tokens.inc(n_prompt)
        metrics.generated_tokens.inc(len(outcome.token_ids))
        metrics.model_calls.inc(outcome.model_calls / max(outcome.batch_size, 1))
        if outcome.accepted_per_round is not None:
            metrics.accepted.observe(outcome.accepted_per_round)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, req: ChatRequest):
        return await serve(request, req, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request, req: CompletionRequest):
        return await serve(request, req, chat=False)

    return app


def usage(n_prompt: int, text: TextAssembler) -> dict:
    return {"prompt_tokens": n_prompt, "completion_tokens": text.completion_tokens,
            "total_tokens": n_prompt + text.completion_tokens}


def spiffy_fields(outcome, plan, job, text: TextAssembler) -> dict:
    return {"token_ids": outcome.token_ids, "model_calls": outcome.model_calls, "batch_size": outcome.batch_size,
            "accepted_per_round": outcome.accepted_per_round, "settings": plan.settings,
            "queue_s": round((job.t_started or job.t_queued) - job.t_queued, 4)}


def full_body(rid: str, chat: bool, text: TextAssembler, outcome, plan, n_prompt: int, job, model: str) -> dict:
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": text.text}, "finish_reason": text.finish_reason}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text.text, "finish_reason": text.finish_reason, "logprobs": None}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": now(), "model": model, "choices": [choice], "usage": usage(n_prompt, text),
            "spiffy": spiffy_fields(outcome, plan, job, text)}
