"""How a response is produced: the ``Responder`` protocol and its event frames.

The realtime server and the HTTP chat route produce every response through a ``Responder``; the
agent graph (issue 9) is the default one, :class:`DirectResponder` (engine text -> streaming TTS)
the simplest. Frames are plain dataclasses (internal hot path, no validation); the realtime
session turns them into protocol events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# What a responder is given


@dataclass
class Conversation:
    """The conversation a response continues.

    Attributes:
        messages: the history in the processor's chat format (``{"role", "content"}`` with parts
            ``{"type": "text"|"audio", ...}``; audio is 16 kHz float32), system instructions first.
        items: the same history as realtime conversation items (JSON-able dicts, audio left out),
            for responders that need item ids or function-call structure.
    """

    messages: list[dict[str, Any]]
    items: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ResponseOptions:
    """Per-response settings, resolved from the session and the ``response.create`` overrides."""

    response_id: str = field(default_factory=lambda: f"resp_{uuid.uuid4().hex[:20]}")
    modalities: tuple[str, ...] = ("audio",)
    """``("audio",)`` speaks (with a transcript), ``("text",)`` writes."""
    voice: str | None = None
    temperature: float = 0.8
    max_output_tokens: int | None = None
    """None means the engine's default."""
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str = "auto"
    metadata: dict[str, str] | None = None
    session_id: str | None = None
    """A stable id for the conversation's stored state (the agent's checkpoint thread): the client's
    ``?session_id=`` / ``omni.session_id``, else the server's session id. None for stateless requests."""
    latency: dict[str, float] = field(default_factory=dict)
    """Filled by the responder as things happen (``ttft_ms``, ``first_audio_ms``), so the figures
    survive a cancelled response whose ``ResponseFinished`` never comes."""
    context_tokens: int | None = None
    """Tokens the conversation may take in the prompt (after instructions, tools and room for the
    answer), from the session's truncation; responders that keep their own history cut it to this."""
    retention_ratio: float | None = None
    usage: Usage = field(default_factory=lambda: Usage())
    """Filled by the responder as tokens are counted, for the same reason (a cancelled response's usage)."""


# --------------------------------------------------------------------------------------------------
# What a responder yields


@dataclass
class TextDelta:
    """New text: the audio transcript when speaking, the message text otherwise."""

    text: str


@dataclass
class AudioDelta:
    """New speech, mono float32 at ``sample_rate`` (24 kHz from StreamingTTS)."""

    pcm: np.ndarray
    sample_rate: int = 24000
    text: str = ""
    """The sentence this audio speaks (for truncating the transcript with the audio)."""


@dataclass
class FunctionCallDelta:
    call_id: str
    name: str
    arguments_delta: str


@dataclass
class FunctionCallDone:
    call_id: str
    name: str
    arguments: str
    """The complete JSON arguments."""


@dataclass
class ToolProgress:
    call_id: str
    message: str
    fraction: float | None = None


@dataclass
class Artifact:
    """Something a tool made (an image, a screenshot) that the client may show."""

    kind: str
    mime_type: str
    data: bytes | None = None
    uri: str | None = None
    name: str | None = None
    call_id: str | None = None


@dataclass
class ConfirmationRequest:
    """A risky action waits for the user's yes/no (answered with a function_call_output item)."""

    call_id: str
    action: str
    reason: str


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0


@dataclass
class ResponseFinished:
    """The last frame: why it ended, token usage and the model's own timings."""

    status: Literal["completed", "cancelled", "failed", "incomplete"] = "completed"
    reason: str | None = None
    """``max_output_tokens``, ``turn_detected``, ``client_cancelled`` or an error message."""
    usage: Usage = field(default_factory=Usage)
    latency: dict[str, float] = field(default_factory=dict)
    """Milliseconds: ``ttft_ms`` (first token), ``first_audio_ms`` (first audio chunk, model compute
    from the start of ``respond``), ``total_ms``."""


ResponseEvent = (
    TextDelta | AudioDelta | FunctionCallDelta | FunctionCallDone | ToolProgress | Artifact
    | ConfirmationRequest | ResponseFinished
)


@runtime_checkable
class Responder(Protocol):
    """Produces one response to a conversation."""

    def respond(
        self, conversation: Conversation, options: ResponseOptions, cancel: asyncio.Event
    ) -> AsyncIterator[ResponseEvent]:
        """Stream the response; stop within one audio chunk once ``cancel`` is set.

        The last event is a :class:`ResponseFinished`.
        """
        ...


# --------------------------------------------------------------------------------------------------
# The simplest responder: the thinker's text spoken by the streaming TTS

_END = object()  # queue sentinel


async def _drain(queue: asyncio.Queue) -> AsyncIterator[Any]:
    while (item := await queue.get()) is not _END:
        yield item


class DirectResponder:
    """``engine.generate`` text deltas -> ``StreamingTTS.stream`` -> audio; no tools, no graph.

    Args:
        engine: an ``omni_agent.engine.AsyncEngine`` (started).
        tts: an ``audio.tts.StreamingTTS``; None answers in text only.
    """

    def __init__(self, engine: Any, tts: Any | None = None) -> None:
        self.engine = engine
        self.tts = tts
        self._warned = False

    def _hidden_fits(self) -> bool:
        """Thinker states condition the talker only when their widths agree (a preset mismatch would fail)."""
        want = getattr(getattr(getattr(self.tts, "talker", None), "config", None), "thinker_hidden_size", None)
        have = getattr(getattr(self.engine, "thinker", None), "hidden_size", None)
        if want is not None and have is not None and want != have:
            if not self._warned:
                log.warning("talker expects %d-wide thinker states, thinker gives %d: speaking from text only",
                            want, have)
                self._warned = True
            return False
        return True

    def _request(self, conversation: Conversation, options: ResponseOptions, speak: bool) -> Any:
        from omni_agent.engine import GenerationRequest, SamplingParams

        prompt = self.engine.processor(conversation.messages, add_generation_prompt=True)
        sampling = SamplingParams(temperature=options.temperature)
        if options.max_output_tokens:
            sampling.max_tokens = options.max_output_tokens
        return GenerationRequest(request_id=options.response_id, prompt=prompt, sampling=sampling,
                                 return_hidden=speak and self._hidden_fits())

    async def respond(
        self, conversation: Conversation, options: ResponseOptions, cancel: asyncio.Event
    ) -> AsyncIterator[ResponseEvent]:
        t0 = time.perf_counter()
        speak = "audio" in options.modalities and self.tts is not None
        loop = asyncio.get_running_loop()
        # Tokenising and encoding the input audio is CPU work: keep it off the event loop.
        request = await loop.run_in_executor(None, self._request, conversation, options, speak)
        out: asyncio.Queue = asyncio.Queue()
        text_q: asyncio.Queue = asyncio.Queue()
        hidden_q: asyncio.Queue = asyncio.Queue()
        usage = options.usage
        latency = options.latency
        finish: dict[str, Any] = {"reason": None}

        async def think() -> None:
            try:
                async for o in self.engine.generate(request):
                    if o.ttft_s is not None and "ttft_ms" not in latency:
                        latency["ttft_ms"] = o.ttft_s * 1000
                    usage.input_tokens = o.prompt_tokens
                    usage.output_tokens = o.completion_tokens
                    usage.cached_tokens = o.cached_tokens
                    if o.text:
                        await out.put(TextDelta(o.text) if not speak else ("text", o.text))
                        if speak:
                            await text_q.put(o.text)
                    if speak and request.return_hidden and o.hidden is not None:
                        await hidden_q.put(o.hidden)
                    if o.finished:
                        finish["reason"] = o.finish_reason
                    if cancel.is_set():
                        break
            finally:
                await text_q.put(_END)
                await hidden_q.put(_END)

        async def speak_() -> None:
            hidden = _drain(hidden_q) if request.return_hidden else None
            async for chunk in self.tts.stream(_drain(text_q), hidden=hidden,
                                               voice=options.voice, cancel=cancel):
                if "first_audio_ms" not in latency:
                    latency["first_audio_ms"] = (time.perf_counter() - t0) * 1000
                await out.put(AudioDelta(chunk.pcm, self.tts.sample_rate, chunk.text))

        async def run() -> None:
            try:
                tasks = [think()] + ([speak_()] if speak else [])
                await asyncio.gather(*tasks)
            except Exception as e:  # reported to the client as a failed response
                finish["error"] = f"{type(e).__name__}: {e}"
            finally:
                await out.put(_END)

        runner = asyncio.create_task(run())
        try:
            async for ev in _drain(out):
                if isinstance(ev, tuple):  # spoken text: the transcript comes with the audio
                    yield TextDelta(ev[1])
                else:
                    yield ev
        finally:
            if not runner.done():
                self.engine.abort(request.request_id)
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await runner
        latency["total_ms"] = (time.perf_counter() - t0) * 1000
        if "error" in finish:
            yield ResponseFinished("failed", finish["error"], usage, latency)
        elif cancel.is_set() or finish["reason"] == "abort":
            yield ResponseFinished("cancelled", "client_cancelled", usage, latency)
        elif finish["reason"] == "length":
            yield ResponseFinished("incomplete", "max_output_tokens", usage, latency)
        else:
            yield ResponseFinished("completed", None, usage, latency)
