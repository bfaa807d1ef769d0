"""The OpenAI-compatible HTTP app: ``/v1/chat/completions``, ``/v1/models``, ``/health``, ``/metrics``.

``create_app(settings, engine, extra_routers=...)`` is the one place routes are assembled; other
parts (realtime websocket, files) arrive as ``APIRouter``s through ``extra_routers`` (see
``omni_agent/commands/serve.py``). Chat completions are answered by the responder (the agent graph,
:mod:`omni_agent.server.chat`); only ``response_format`` requests go to the engine directly (``_chat``).
The app starts the engine loop and opens the responder's sessions database on startup (before the
first request is accepted) and stops both on shutdown.

Safe defaults: every ``/v1`` route authenticates (:mod:`omni_agent.server.auth`; the principal it
finds owns the sessions, files and artifacts made under it); bodies past ``server.max_request_bytes``
(``max_upload_bytes`` for ``/v1/files``) get 413 before they are read; CORS is off unless
``server.allowed_origins`` names origins; keys never reach the access log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from omni_agent.engine.request import EngineError, GenerationOutput, GenerationRequest
from omni_agent.server.auth import auth_dependency, install_log_redaction
from omni_agent.server.chat import agent_chat, check_request, model_not_found, served_models
from omni_agent.server.convert import (
    FileResolver,
    check_text_fits,
    parse_tool_call,
    sampling_params,
    to_messages,
    tool_call_schema,
)
from omni_agent.server.errors import (
    APIError,
    api_error_handler,
    error_body,
    from_engine_error,
    http_error_handler,
    unhandled_error_handler,
    validation_error_handler,
)
from omni_agent.server.images import images_router
from omni_agent.server.limits import BodySizeLimit
from omni_agent.server.media_refs import resolve_media_refs
from omni_agent.server.outputs import LogprobsWriter
from omni_agent.server.schemas import ChatCompletionRequest
from vision.video import media_token_budget

log = logging.getLogger(__name__)


def model_id(settings: Any) -> str:
    """The name ``/v1/models`` lists: the checkpoint folder name, else the preset."""
    if settings.model.path:
        return str(settings.model.path).rstrip("/").rsplit("/", 1)[-1]
    return settings.model.preset


def create_app(settings: Any, engine: Any, *, extra_routers: Sequence[APIRouter] = (),
               file_resolver: FileResolver | None = None, responder: Any = None) -> FastAPI:
    """Build the HTTP app around a (not yet started) ``AsyncEngine``.

    Args:
        settings: the runtime ``Settings``.
        engine: the ``AsyncEngine``; started and shut down with the app.
        extra_routers: routers other parts mount (realtime websocket, files); they apply their own auth.
        file_resolver: ``file-<id>`` -> bytes, for video parts that reference an upload.
        responder: what answers chat completions (``AgentResponder``: the agent graph); None builds
            ``AgentResponder.build(settings, engine)``. Closed (``aclose``) on shutdown.
    """
    if responder is None:
        from omni_agent.agent.responder import AgentResponder

        responder = AgentResponder.build(settings, engine, None)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await engine.start()  # bind the engine loop to the server's event loop
        if hasattr(responder, "start"):
            await responder.start()  # the sessions database, before the first request is accepted
        try:
            yield
        finally:
            await responder.aclose()  # the session database
            await engine.shutdown()  # abort what is running and stop the worker thread

    app = FastAPI(title="omni-agent", version="0.1.0", lifespan=lifespan)
    app.state.engine = engine
    app.state.settings = settings
    app.state.file_resolver = file_resolver
    app.state.responder = responder
    srv = settings.server
    if srv.allowed_origins:  # closed by default: a web page elsewhere cannot read this server's answers
        app.add_middleware(CORSMiddleware, allow_origins=srv.allowed_origins, allow_methods=["*"],
                           allow_headers=["*"])
    app.add_middleware(BodySizeLimit, max_bytes=srv.max_request_bytes,
                       per_path={"/v1/files": srv.max_upload_bytes})
    install_log_redaction()
    app.add_exception_handler(APIError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(Exception, unhandled_error_handler)

    @app.get("/health")
    async def health() -> Response:
        """200 ``ok`` when every part can serve; 503 ``degraded`` (naming the part) otherwise."""
        store = await responder.health() if hasattr(responder, "health") else {"ok": True}
        body = {"status": "ok" if store["ok"] else "degraded", "model": model_id(settings),
                "engine": engine.stats(), "sessions_store": store}
        return JSONResponse(body, status_code=200 if store["ok"] else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(auth_dependency(settings))])

    def model_card(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "omni-agent", "root": model_id(settings)}

    @v1.get("/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card(name) for name in served_models(settings)]}

    @v1.get("/models/{name:path}")
    async def retrieve_model(name: str) -> dict[str, Any]:
        if name not in served_models(settings):
            raise model_not_found(name)
        return model_card(name)

    @v1.post("/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        check_request(body, request, settings)  # unknown model (404), impossible options (400): before any work
        cache = getattr(engine, "cache", None)  # the embedded engine's KV cache may hold less than a context
        limit = min(engine.max_model_len, cache.capacity_tokens) if cache is not None else engine.max_model_len
        # tokenizing is CPU work; a message far over the context is refused after counting the limit only
        await asyncio.to_thread(check_text_fits, body, engine.processor.tokenizer, limit)
        body = await asyncio.to_thread(resolve_media_refs, body, app.state.file_resolver)  # file parts; no remote URLs
        if body.response_format is not None or body.logprobs:  # JSON-schema answers, token logprobs: the engine
            return await _chat(body, request, settings, engine, app.state.file_resolver)
        return await agent_chat(body, request, settings, engine, app.state.file_resolver, app.state.responder)

    app.include_router(v1)
    app.include_router(images_router(settings, engine))  # POST /v1/images/generations, /v1/images/edits
    for router in extra_routers:
        app.include_router(router)
    return app


async def _chat(body: ChatCompletionRequest, request: Request, settings: Any, engine: Any,
                resolver: FileResolver | None) -> Response:
    """The engine directly, without the agent graph.

    Only for what the graph cannot do: ``response_format`` (a whole answer constrained to a JSON schema;
    the graph constrains tool arguments only) and ``logprobs`` (the graph passes text, not tokens).
    Everything else goes through :func:`agent_chat`.
    """
    schema = tool_call_schema(body)
    sp = sampling_params(body, settings.engine.default_max_tokens, schema)
    if body.logprobs:
        sp.logprobs = body.top_logprobs or 0
    # decoding media and tokenising are CPU work: keep them off the event loop
    budget = media_token_budget(engine.max_model_len)
    messages = await asyncio.to_thread(to_messages, body, resolver, budget)
    try:
        prompt = await asyncio.to_thread(engine.processor, messages)
    except ValueError as e:  # PromptError, ImageError, AudioTooShortError, PlaceholderMismatchError
        raise APIError(400, str(e), param="messages", code="invalid_prompt") from None
    rid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    gen = engine.generate(GenerationRequest(rid, prompt, sp))
    try:
        first = await anext(gen)  # wait for the first token so that refusals are 400s, not broken streams
    except EngineError as e:
        raise from_engine_error(e) from None
    tool_mode = "forced" if schema is not None else ("auto" if body.tools and body.tool_choice != "none" else None)
    logprobs = LogprobsWriter(engine.processor.tokenizer, body.top_logprobs or 0) if body.logprobs else None
    ctx = _Completion(rid, model_id(settings), body, tool_mode, logprobs)
    if body.stream:
        return StreamingResponse(ctx.sse(first, gen), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    last = first
    text = first.text
    ctx.add_logprobs(first)
    async for out in gen:  # the rest of the completion, step by step
        text += out.text
        ctx.add_logprobs(out)
        last = out
    return JSONResponse(ctx.full(text, last))


class _Completion:
    """Builds the response bodies of one chat completion."""

    def __init__(self, rid: str, model: str, body: ChatCompletionRequest, tool_mode: str | None,
                 logprobs: LogprobsWriter | None = None):
        self.rid, self.model, self.body, self.tool_mode = rid, model, body, tool_mode
        self.created = int(time.time())
        self.logprobs = logprobs

    def add_logprobs(self, out: GenerationOutput) -> dict[str, Any] | None:
        """OpenAI's ``logprobs`` for this output's tokens (None when the request did not ask)."""
        return None if self.logprobs is None else {"content": self.logprobs.add(out)}

    def _tool_call(self, text: str) -> dict[str, Any] | None:
        call = parse_tool_call(text, self.body.tools) if self.tool_mode else None
        if call is None:
            return None
        return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                "function": {"name": call[0], "arguments": call[1]}}

    @staticmethod
    def _finish(out: GenerationOutput, tool_call: dict | None) -> str:
        if tool_call is not None:
            return "tool_calls"
        return "length" if out.finish_reason == "length" else "stop"

    @staticmethod
    def _usage(out: GenerationOutput) -> dict[str, Any]:
        return {"prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens,
                "total_tokens": out.prompt_tokens + out.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": out.cached_tokens}}

    def full(self, text: str, last: GenerationOutput) -> dict[str, Any]:
        call = self._tool_call(text)
        message: dict[str, Any] = {"role": "assistant", "content": None if call else text}
        if call:
            message["tool_calls"] = [call]
        return {"id": self.rid, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "message": message, "finish_reason": self._finish(last, call),
                             "logprobs": None if self.logprobs is None else {"content": self.logprobs.content}}],
                "usage": self._usage(last)}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, logprobs: dict[str, Any] | None = None) -> str:
        body = {"id": self.rid, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}]}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    async def sse(self, first: GenerationOutput, gen: AsyncIterator[GenerationOutput]) -> AsyncIterator[str]:
        """Server-sent events; a tool call is held back and sent whole once its JSON is complete."""
        yield self._chunk({"role": "assistant", "content": ""})
        text, held, last = "", "", first
        try:
            out: GenerationOutput | None = first
            while out is not None:
                last = out
                text += out.text
                lp = self.add_logprobs(out)
                if self.tool_mode == "forced" or (self.tool_mode == "auto" and text.lstrip()[:1] in ("{", "<")):
                    held += out.text  # may turn out to be a tool call: decide at the end
                elif held + out.text or (lp and lp["content"]):
                    yield self._chunk({"content": held + out.text}, logprobs=lp)
                    held = ""
                out = None if out.finished else await anext(gen, None)  # next engine step for this request
        except EngineError as e:
            yield f"data: {json.dumps(error_body(str(e), code=e.code))}\n\n"
            yield "data: [DONE]\n\n"
            return
        call = self._tool_call(text)
        if call is not None:
            yield self._chunk({"tool_calls": [{"index": 0, **call}]})
        elif held:
            yield self._chunk({"content": held})
        yield self._chunk({}, self._finish(last, call))
        if self.body.stream_options and self.body.stream_options.include_usage:
            usage = {"id": self.rid, "object": "chat.completion.chunk", "created": self.created,
                     "model": self.model, "choices": [], "usage": self._usage(last)}
            yield f"data: {json.dumps(usage)}\n\n"
        yield "data: [DONE]\n\n"
