"""``POST /v1/chat/completions`` through the agent graph (the ``Responder`` protocol).

The request becomes a :class:`Conversation` plus :class:`ResponseOptions` and the responder's frames
become OpenAI bodies: ``TextDelta`` -> content, ``FunctionCallDone`` -> ``tool_calls`` (the client's
declared functions are returned to the client, never run here), ``ResponseFinished`` ->
``finish_reason`` and ``usage``. The session id is the ``user`` field or an ``X-Session-Id`` header;
without one the request is stateless (the history it carries is the whole conversation).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from omni_agent.principal import LOCAL_PRINCIPAL, current_principal, scoped_session_id
from omni_agent.realtime.responder import (
    Conversation,
    FunctionCallDone,
    ResponseFinished,
    ResponseOptions,
    TextDelta,
    Usage,
)
from omni_agent.server.convert import FileResolver, sampling_params, to_messages, tool_call_schema
from omni_agent.server.errors import APIError, error_body
from omni_agent.server.schemas import ChatCompletionRequest, NamedToolChoice
from vision.video import media_token_budget

# A response that fails before its first frame is the request's fault when it failed on one of these
# (engine refusals and processor errors); the HTTP status is 400 with this code.
_CLIENT_ERRORS = {"PromptTooLong": "context_length_exceeded", "CacheFull": "cache_full",
                  "InvalidRequest": "invalid_request", "PromptError": "invalid_prompt",
                  "ImageError": "invalid_prompt", "AudioTooShortError": "invalid_prompt",
                  "PlaceholderMismatchError": "invalid_prompt", "ValueError": "invalid_prompt"}


def session_id(body: ChatCompletionRequest, request: Request) -> str | None:
    """The agent session (checkpoint thread) of a request: ``user``, else ``X-Session-Id``, else None;
    scoped to the request's principal, so knowing another client's ``user`` reaches nothing of theirs."""
    sid = body.user or request.headers.get("x-session-id") or None
    return scoped_session_id(current_principal() or LOCAL_PRINCIPAL, sid) if sid else None


def _options(body: ChatCompletionRequest, request: Request, default_max_tokens: int
             ) -> tuple[ResponseOptions, dict[str, Any]]:
    sp = sampling_params(body, default_max_tokens, tool_call_schema(body))  # validates the knobs (400s)
    choice = body.tool_choice
    if isinstance(choice, NamedToolChoice):
        choice = choice.function.name
    tools = [t.model_dump(exclude_none=True) for t in body.tools or []] if choice != "none" else []
    sid = session_id(body, request)
    options = ResponseOptions(modalities=("text",), tools=tools, tool_choice=choice or "auto",
                              temperature=sp.temperature, max_output_tokens=sp.max_tokens,
                              metadata={"session_id": sid} if sid else None)
    # Engine knobs the realtime protocol has no field for; the graph applies them to the answer.
    extra: dict[str, Any] = {"top_p": sp.top_p, "top_k": sp.top_k, "repetition_penalty": sp.repetition_penalty,
                             "stop": sp.stop, "stop_token_ids": sp.stop_token_ids}
    if sp.seed is not None:
        extra["seed"] = sp.seed
    return options, extra


def _failure(fin: ResponseFinished) -> APIError:
    name = (fin.reason or "").split(":", 1)[0].strip()
    message = (fin.reason or "response failed").split(":", 1)[-1].strip() or "response failed"
    if name in _CLIENT_ERRORS:
        return APIError(400, message, param="messages", code=_CLIENT_ERRORS[name])
    if name == "SessionStoreError":  # the sessions database is down or busy: retry later, not a bug
        return APIError(503, message, type="server_error", code="session_store_unavailable",
                        headers={"Retry-After": "2"})
    return APIError(500, fin.reason or "response failed", type="server_error")


async def agent_chat(body: ChatCompletionRequest, request: Request, settings: Any, engine: Any,
                     resolver: FileResolver | None, responder: Any) -> Response:
    """One chat completion produced by ``responder`` (the agent graph)."""
    options, extra = _options(body, request, settings.engine.default_max_tokens)
    budget = media_token_budget(engine.max_model_len)
    # Decoding media is CPU work: off the event loop. The graph shows the tools to the model itself.
    plain = body.model_copy(update={"tools": None})
    messages = await asyncio.to_thread(to_messages, plain, resolver, budget)
    for msg, orig in zip(messages, plain.messages, strict=True):  # one message each (no tools preamble)
        if orig.role == "tool":  # a tool result answers our call: a ToolMessage in the graph, not user text
            text = orig.content if isinstance(orig.content, str) else " ".join(
                getattr(p, "text", "") for p in orig.content or [])
            msg.update(role="tool", content=text, tool_call_id=orig.tool_call_id or "")
    cancel = asyncio.Event()
    events = responder.respond(Conversation(messages=messages), options, cancel, sampling=extra,
                               server_tools=False)
    try:
        # The first frame decides between a 400 (a refused prompt) and a response.
        first = await anext(events)
    except BaseException:
        cancel.set()
        await events.aclose()
        raise
    if isinstance(first, ResponseFinished) and first.status == "failed":
        await events.aclose()
        raise _failure(first)
    body_ = _Bodies(f"chatcmpl-{uuid.uuid4().hex[:24]}", settings, body)
    if body.stream:
        return _EventStream(body_.sse(first, events, cancel), media_type="text/event-stream",
                            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return JSONResponse(await body_.full(first, events, cancel))


class _EventStream(StreamingResponse):
    """A stream that closes its body generator however the response ends.

    On a client disconnect Starlette cancels the send loop and leaves the generator suspended at a
    ``yield``; closing it here stops the graph and aborts the engine request now, not at some later
    garbage collection.
    """

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()  # type: ignore[union-attr]


class _Bodies:
    """Builds the OpenAI bodies of one completion from responder frames."""

    def __init__(self, rid: str, settings: Any, body: ChatCompletionRequest):
        from omni_agent.server.app import model_id

        self.rid, self.model, self.body = rid, model_id(settings), body
        self.created = int(time.time())

    @staticmethod
    def _call(ev: FunctionCallDone) -> dict[str, Any]:
        return {"id": ev.call_id, "type": "function", "function": {"name": ev.name, "arguments": ev.arguments}}

    @staticmethod
    def _finish(fin: ResponseFinished | None, calls: list) -> str:
        if calls:
            return "tool_calls"
        return "length" if fin is not None and fin.status == "incomplete" else "stop"

    @staticmethod
    def _usage(usage: Usage) -> dict[str, Any]:
        return {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens,
                "prompt_tokens_details": {"cached_tokens": usage.cached_tokens}}

    @staticmethod
    async def _frames(first: Any, events: AsyncIterator[Any], cancel: asyncio.Event) -> AsyncIterator[Any]:
        """All frames; closing early (client gone) cancels the graph, which aborts the engine request."""
        try:
            yield first
            async for ev in events:
                yield ev
        finally:
            cancel.set()
            with contextlib.suppress(Exception):
                await events.aclose()

    async def full(self, first: Any, events: AsyncIterator[Any], cancel: asyncio.Event) -> dict[str, Any]:
        text: list[str] = []
        calls: list[dict[str, Any]] = []
        fin: ResponseFinished | None = None
        async for ev in self._frames(first, events, cancel):
            if isinstance(ev, TextDelta):
                text.append(ev.text)
            elif isinstance(ev, FunctionCallDone):
                calls.append(self._call(ev))
            elif isinstance(ev, ResponseFinished):
                fin = ev
        if fin is not None and fin.status == "failed":
            raise _failure(fin)
        message: dict[str, Any] = {"role": "assistant", "content": None if calls else "".join(text)}
        if calls:
            message["tool_calls"] = calls
        return {"id": self.rid, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "message": message, "finish_reason": self._finish(fin, calls),
                             "logprobs": None}],
                "usage": self._usage(fin.usage if fin is not None else Usage())}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> str:
        body = {"id": self.rid, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    async def sse(self, first: Any, events: AsyncIterator[Any], cancel: asyncio.Event) -> AsyncIterator[str]:
        """Server-sent events. A tool call is sent in one ``tool_calls`` delta once its arguments are
        complete (``FunctionCallDone``), as the engine path does; argument deltas are not streamed."""
        yield self._chunk({"role": "assistant", "content": ""})
        calls: list[dict[str, Any]] = []
        fin: ResponseFinished | None = None
        async with contextlib.aclosing(self._frames(first, events, cancel)) as frames:
            async for ev in frames:
                if isinstance(ev, TextDelta) and ev.text:
                    yield self._chunk({"content": ev.text})
                elif isinstance(ev, FunctionCallDone):
                    call = self._call(ev)
                    yield self._chunk({"tool_calls": [{"index": len(calls), **call}]})
                    calls.append(call)
                elif isinstance(ev, ResponseFinished):
                    fin = ev
        if fin is not None and fin.status == "failed":
            yield f"data: {json.dumps(error_body(fin.reason or 'response failed', 'server_error'))}\n\n"
            yield "data: [DONE]\n\n"
            return
        yield self._chunk({}, self._finish(fin, calls))
        if self.body.stream_options and self.body.stream_options.include_usage:
            usage = {"id": self.rid, "object": "chat.completion.chunk", "created": self.created,
                     "model": self.model, "choices": [], "usage": self._usage(fin.usage if fin else Usage())}
            yield f"data: {json.dumps(usage)}\n\n"
        yield "data: [DONE]\n\n"
