"""``POST /v1/chat/completions`` through the agent graph (the ``Responder`` protocol).

The request becomes a :class:`Conversation` plus :class:`ResponseOptions` and the responder's frames
become OpenAI bodies: ``TextDelta`` -> content, ``FunctionCallDone`` -> ``tool_calls`` (the client's
declared functions are returned to the client, never run here), ``AudioDelta`` -> ``message.audio``
(``modalities: ["text", "audio"]``: the graph's speak step, the realtime path's talker and codec),
``ResponseFinished`` -> ``finish_reason`` and ``usage``. ``n`` choices are ``n`` runs of the graph
started together (their engine requests batch). The session id is the ``user`` field or an
``X-Session-Id`` header; without one the request is stateless (the history it carries is the whole
conversation).

:func:`check_request` runs first for every request: an unknown ``model`` is a 404
``model_not_found`` (as OpenAI and vLLM answer), impossible option combinations are 400s.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from audio.voices import BUILTIN
from omni_agent.principal import LOCAL_PRINCIPAL, current_principal, scoped_session_id
from omni_agent.realtime.responder import (
    AudioDelta,
    Conversation,
    FunctionCallDone,
    ResponseFinished,
    ResponseOptions,
    TextDelta,
    Usage,
)
from omni_agent.server.convert import FileResolver, sampling_params, to_messages, tool_call_schema
from omni_agent.server.errors import APIError, error_body
from omni_agent.server.outputs import SpeechAnswer
from omni_agent.server.schemas import AUDIO_FORMATS, ChatCompletionRequest, NamedToolChoice
from vision.video import media_token_budget

# A response that fails before its first frame is the request's fault when it failed on one of these
# (engine refusals and processor errors); the HTTP status is 400 with this code.
_CLIENT_ERRORS = {"PromptTooLong": "context_length_exceeded", "CacheFull": "cache_full",
                  "InvalidRequest": "invalid_request", "PromptError": "invalid_prompt",
                  "ImageError": "invalid_prompt", "AudioTooShortError": "invalid_prompt",
                  "PlaceholderMismatchError": "invalid_prompt", "ValueError": "invalid_prompt"}


def served_models(settings: Any) -> list[str]:
    """Model names this server answers to: the checkpoint folder's name, else the preset (``tiny``)."""
    from omni_agent.server.app import model_id

    return [model_id(settings)]


def model_not_found(name: str) -> APIError:
    return APIError(404, f"The model `{name}` does not exist or you do not have access to it.",
                    param="model", code="model_not_found")


def wants_speech(body: ChatCompletionRequest) -> bool:
    return "audio" in (body.modalities or ())


def check_request(body: ChatCompletionRequest, request: Request, settings: Any) -> None:
    """What is wrong with a request before any work is done: 404 for an unknown model, 400 otherwise."""
    if not body.model:
        raise APIError(400, "you must provide a model parameter", param="model", code="missing_model")
    if body.model not in served_models(settings):
        raise model_not_found(body.model)
    direct = body.response_format is not None or body.logprobs  # answered by the engine, not the graph
    if body.top_logprobs is not None and not body.logprobs:
        raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
    if body.n > 1 and session_id(body, request):
        raise APIError(400, "n > 1 cannot continue a session (user / X-Session-Id): each choice would "
                            "become the session's history", param="n")
    if body.n > 1 and direct:
        raise APIError(400, "n > 1 together with response_format or logprobs is not supported", param="n")
    if body.audio is not None and not wants_speech(body):
        raise APIError(400, "audio output needs modalities: [\"text\", \"audio\"]", param="modalities")
    if not wants_speech(body):
        return
    if body.audio is None:
        raise APIError(400, "modalities with \"audio\" need the audio parameter ({\"voice\", \"format\"})",
                       param="audio")
    if body.audio.voice not in ("default", *BUILTIN):  # the same voices as /v1/audio/speech
        raise APIError(400, f"voice {body.audio.voice!r} is not available: use {', '.join(BUILTIN)} or default",
                       param="audio.voice", code="invalid_voice")
    if body.audio.format not in AUDIO_FORMATS:
        raise APIError(400, f"audio format {body.audio.format!r} is not supported (supported: "
                            f"{', '.join(AUDIO_FORMATS)})", param="audio.format")
    if body.stream and body.audio.format != "pcm16":
        raise APIError(400, "streamed audio is sent as pcm16 (24 kHz mono); set audio.format to \"pcm16\"",
                       param="audio.format")
    if direct:
        raise APIError(400, "audio output together with response_format or logprobs is not supported",
                       param="modalities")
    if getattr(request.app.state, "tts", None) is None:
        raise APIError(400, "this server was started without the speech stack (talker + codec); audio output "
                            "needs `omni-agent serve`", param="modalities", code="audio_not_available")


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
    speech = wants_speech(body)
    options = ResponseOptions(modalities=("audio",) if speech else ("text",),
                              voice=body.audio.voice if speech and body.audio else None,
                              tools=tools, tool_choice=choice or "auto",
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


@dataclasses.dataclass
class _Choice:
    """One running answer: its frames, the first one already read, and how to stop it."""

    index: int
    first: Any
    events: AsyncIterator[Any]
    cancel: asyncio.Event

    async def close(self) -> None:
        self.cancel.set()
        with contextlib.suppress(Exception):
            await self.events.aclose()


async def _start(responder: Any, messages: list[dict[str, Any]], options: ResponseOptions,
                 extra: dict[str, Any], index: int) -> _Choice:
    """Start choice ``index`` and read its first frame (which decides between a 400 and an answer)."""
    cancel = asyncio.Event()
    options = dataclasses.replace(options, response_id=f"resp_{uuid.uuid4().hex[:20]}", latency={},
                                  usage=Usage())  # each choice counts its own tokens
    sampling = dict(extra)
    if index and "seed" in sampling:
        sampling["seed"] += index  # seeded choices stay reproducible, and differ from each other
    events = responder.respond(Conversation(messages=[dict(m) for m in messages]), options, cancel,
                               sampling=sampling, server_tools=False)
    try:
        first = await anext(events)
    except BaseException:
        cancel.set()
        await events.aclose()
        raise
    if isinstance(first, ResponseFinished) and first.status == "failed":
        await events.aclose()
        raise _failure(first)
    return _Choice(index, first, events, cancel)


async def agent_chat(body: ChatCompletionRequest, request: Request, settings: Any, engine: Any,
                     resolver: FileResolver | None, responder: Any) -> Response:
    """One chat completion (``n`` choices) produced by ``responder`` (the agent graph)."""
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
    # All choices start together, so their engine requests share the batch (and the prompt's prefix).
    started = await asyncio.gather(*(_start(responder, messages, options, extra, i) for i in range(body.n)),
                                   return_exceptions=True)
    choices = [c for c in started if isinstance(c, _Choice)]
    errors = [e for e in started if isinstance(e, BaseException)]
    if errors:
        for c in choices:
            await c.close()
        raise errors[0]
    bodies = _Bodies(f"chatcmpl-{uuid.uuid4().hex[:24]}", settings, body)
    if body.stream:
        return _EventStream(bodies.sse(choices), media_type="text/event-stream",
                            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return JSONResponse(await bodies.full(choices))


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
    """Builds the OpenAI bodies of one completion from the responder frames of its choices."""

    def __init__(self, rid: str, settings: Any, body: ChatCompletionRequest):
        from omni_agent.server.app import model_id

        self.rid, self.model, self.body = rid, model_id(settings), body
        self.created = int(time.time())
        self.speech_format = body.audio.format if wants_speech(body) and body.audio else None

    @staticmethod
    def _call(ev: FunctionCallDone) -> dict[str, Any]:
        return {"id": ev.call_id, "type": "function", "function": {"name": ev.name, "arguments": ev.arguments}}

    @staticmethod
    def _finish(fin: ResponseFinished | None, calls: list) -> str:
        if calls:
            return "tool_calls"
        return "length" if fin is not None and fin.status == "incomplete" else "stop"

    @staticmethod
    def _usage(usages: list[Usage]) -> dict[str, Any]:
        """The prompt is counted once (every choice reads the same one, as OpenAI bills ``n``); the
        completion tokens are every choice's."""
        first = usages[0] if usages else Usage()
        completion = sum(u.output_tokens for u in usages)
        return {"prompt_tokens": first.input_tokens, "completion_tokens": completion,
                "total_tokens": first.input_tokens + completion,
                "prompt_tokens_details": {"cached_tokens": first.cached_tokens}}

    @staticmethod
    async def _frames(choice: _Choice) -> AsyncIterator[Any]:
        """All frames; closing early (client gone) cancels the graph, which aborts the engine request."""
        try:
            yield choice.first
            async for ev in choice.events:
                yield ev
        finally:
            await choice.close()

    async def _collect(self, choice: _Choice) -> tuple[dict[str, Any], Usage]:
        text: list[str] = []
        calls: list[dict[str, Any]] = []
        speech = SpeechAnswer(self.speech_format) if self.speech_format else None
        fin: ResponseFinished | None = None
        async for ev in self._frames(choice):
            if isinstance(ev, TextDelta):
                text.append(ev.text)
            elif isinstance(ev, AudioDelta) and speech is not None:
                speech.add(ev.pcm, ev.sample_rate)
            elif isinstance(ev, FunctionCallDone):
                calls.append(self._call(ev))
            elif isinstance(ev, ResponseFinished):
                fin = ev
        if fin is not None and fin.status == "failed":
            raise _failure(fin)
        message: dict[str, Any] = {"role": "assistant", "content": None if calls or speech else "".join(text)}
        if calls:
            message["tool_calls"] = calls
        if speech is not None and not calls:
            message["audio"] = speech.message_audio("".join(text))
        return ({"index": choice.index, "message": message, "finish_reason": self._finish(fin, calls),
                 "logprobs": None}, fin.usage if fin is not None else Usage())

    async def full(self, choices: list[_Choice]) -> dict[str, Any]:
        results = await asyncio.gather(*(self._collect(c) for c in choices), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            for c in choices:
                await c.close()
            raise errors[0]
        return {"id": self.rid, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [r[0] for r in results], "usage": self._usage([r[1] for r in results])}

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None = None) -> str:
        body = {"id": self.rid, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}]}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    async def sse(self, choices: list[_Choice]) -> AsyncIterator[str]:
        """Server-sent events, the choices' frames interleaved as they come. A tool call is sent in one
        ``tool_calls`` delta once its arguments are complete (``FunctionCallDone``); speech is sent as
        ``delta.audio`` (base64 pcm16 ``data``, ``transcript`` pieces)."""
        queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
        end = object()

        async def pump(choice: _Choice) -> None:
            async with contextlib.aclosing(self._frames(choice)) as frames:
                async for ev in frames:
                    await queue.put((choice.index, ev))
            await queue.put((choice.index, end))

        speech = {c.index: SpeechAnswer("pcm16") for c in choices} if self.speech_format else {}
        calls: dict[int, list[dict[str, Any]]] = {c.index: [] for c in choices}
        fins: dict[int, ResponseFinished] = {}
        for c in choices:
            yield self._chunk(c.index, {"role": "assistant", "content": None if speech else ""})
        tasks = [asyncio.create_task(pump(c)) for c in choices]
        try:
            open_ = len(choices)
            while open_:
                index, ev = await queue.get()
                if ev is end:
                    open_ -= 1
                    fin = fins.get(index)
                    if fin is not None and fin.status == "failed":
                        yield f"data: {json.dumps(error_body(fin.reason or 'response failed', 'server_error'))}\n\n"
                        yield "data: [DONE]\n\n"
                        return
                    yield self._chunk(index, {}, self._finish(fin, calls[index]))
                elif isinstance(ev, TextDelta) and ev.text:
                    yield self._chunk(index, {"audio": speech[index].delta(transcript=ev.text)} if speech
                                      else {"content": ev.text})
                elif isinstance(ev, AudioDelta) and speech:
                    yield self._chunk(index, {"audio": speech[index].delta(pcm=ev.pcm, sample_rate=ev.sample_rate)})
                elif isinstance(ev, FunctionCallDone):
                    call = self._call(ev)
                    yield self._chunk(index, {"tool_calls": [{"index": len(calls[index]), **call}]})
                    calls[index].append(call)
                elif isinstance(ev, ResponseFinished):
                    fins[index] = ev
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.body.stream_options and self.body.stream_options.include_usage:
            usage = {"id": self.rid, "object": "chat.completion.chunk", "created": self.created,
                     "model": self.model, "choices": [],
                     "usage": self._usage([fins[c.index].usage for c in choices if c.index in fins])}
            yield f"data: {json.dumps(usage)}\n\n"
        yield "data: [DONE]\n\n"
