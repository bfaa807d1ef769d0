"""``POST /v1/audio/speech``: OpenAI's speech endpoint on the streaming TTS stack.

Body: ``input`` (text, up to 4096 characters), ``voice`` (``luna``, ``eng``, or ``default``/absent
for Ming's per-language pick), ``model`` (accepted, one stack serves it), ``response_format``
(``mp3`` default, ``opus``, ``aac``, ``flac``, ``wav``, ``pcm``: 24 kHz mono) and
``stream_format: "audio"`` (the default). The audio is always streamed as it is synthesised
(chunked transfer), so the SDK's ``audio.speech.create`` gets the whole file and
``with_streaming_response`` gets bytes as each sentence is spoken. Options we do not implement
(``instructions``, ``speed`` other than 1, ``stream_format: "sse"``, OpenAI's voice names) are
refused with a 400 that says so; a client that disconnects cancels the synthesis within one chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from audio.encode import MEDIA_TYPES, EncodeError, StreamEncoder
from audio.voices import BUILTIN
from omni_agent.server.auth import auth_dependency
from omni_agent.server.errors import APIError

log = logging.getLogger(__name__)

MAX_INPUT_CHARS = 4096  # OpenAI's limit


class SpeechRequest(BaseModel):
    """The body of ``POST /v1/audio/speech`` (OpenAI's fields; unknown ones are refused)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    input: str = Field(max_length=MAX_INPUT_CHARS)
    voice: str | None = None
    instructions: str | None = None
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = 1.0
    stream_format: Literal["sse", "audio"] = "audio"


def _check(body: SpeechRequest) -> str | None:
    """The voice to use (None: per language), or an ``APIError`` for what we do not do."""
    if not body.input.strip():
        raise APIError(400, "input is empty: give the text to speak", param="input")
    if body.instructions:
        raise APIError(400, "instructions are not supported: Ming's talker has no style prompt",
                       param="instructions", code="unsupported_parameter")
    if body.speed != 1.0:
        raise APIError(400, f"speed {body.speed} is not supported (only 1.0)", param="speed",
                       code="unsupported_parameter")
    if body.stream_format != "audio":
        raise APIError(400, "stream_format 'sse' is not supported; use 'audio'", param="stream_format",
                       code="unsupported_parameter")
    if body.voice in (None, "", "default"):
        return None
    if body.voice not in BUILTIN:
        raise APIError(400, f"voice {body.voice!r} is not available: use {', '.join(BUILTIN)} or default",
                       param="voice", code="invalid_voice")
    return body.voice


def speech_router(settings: Any, tts: Any) -> APIRouter:
    """The ``/v1/audio/speech`` route on ``tts`` (an ``audio.tts.StreamingTTS``)."""
    router = APIRouter(prefix="/v1", dependencies=[Depends(auth_dependency(settings))])

    @router.post("/audio/speech")
    async def speech(body: SpeechRequest) -> StreamingResponse:
        voice = _check(body)
        try:
            # opening a codec (mp3: ~0.2 s) and encoding are CPU work: off the event loop, like synthesis
            encoder = await asyncio.to_thread(StreamEncoder, body.response_format, tts.sample_rate)
        except EncodeError as e:
            raise APIError(400, str(e), param="response_format", code="unsupported_format") from None
        cancel = asyncio.Event()
        chunks = tts.stream(_one(body.input), voice=voice, cancel=cancel)
        try:  # the first chunk before the status line: a bad input is a 400, not a broken stream
            first = await anext(chunks, None)
        except ValueError as e:  # TalkerError, VoiceError, BPEError, CodecError
            await chunks.aclose()
            raise APIError(400, str(e), param="input", code="invalid_input") from None
        if first is None:
            raise APIError(400, "input has nothing to speak (no words)", param="input")
        return StreamingResponse(_bytes(first, chunks, encoder, cancel), media_type=MEDIA_TYPES[body.response_format])

    return router


async def _one(text: str) -> AsyncIterator[str]:
    yield text


async def _bytes(first: Any, chunks: AsyncIterator[Any], encoder: StreamEncoder,
                 cancel: asyncio.Event) -> AsyncIterator[bytes]:
    """Encoded audio as it is synthesised; a disconnect (the generator closed) cancels synthesis."""
    try:
        yield await asyncio.to_thread(encoder.push, first.pcm)
        async for chunk in chunks:
            out = await asyncio.to_thread(encoder.push, chunk.pcm)
            if out:
                yield out
        yield await asyncio.to_thread(encoder.finish)
    except ValueError as e:  # a failure after the headers went out: the body ends early
        log.warning("speech stream ended early: %s", e)
    finally:
        cancel.set()
        encoder.close()
        with contextlib.suppress(Exception):
            await chunks.aclose()
