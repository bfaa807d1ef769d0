"""OpenAI Realtime protocol events: one pydantic model per client and server event.

GA names are the canonical ones. The Beta protocol differs in a few server event names
(``response.audio.delta`` for ``response.output_audio.delta`` ...), in ``conversation.item.created``
for ``conversation.item.added``, and in the session shape (flat ``input_audio_format`` ...);
:data:`BETA_EVENT_NAMES` maps them and :func:`parse_server_event` accepts both.

Client events and ``parse_client_event`` live here, server events and ``dump_event`` in
``server_events.py`` (re-exported here), transport in ``routes.py``.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

AudioFormatName = Literal["pcm16", "g711_ulaw", "g711_alaw"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Lenient(BaseModel):
    """Config objects: fields we do not implement (tracing, noise_reduction...) are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")


# --------------------------------------------------------------------------------------------------
# Session shapes (client -> server in session.update; server -> client in session.created/updated)


class TurnDetectionIn(_Lenient):
    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    threshold: float | None = Field(None, ge=0.0, le=1.0)
    prefix_padding_ms: int | None = Field(None, ge=0, le=10_000)
    silence_duration_ms: int | None = Field(None, ge=0, le=10_000)
    create_response: bool | None = None
    interrupt_response: bool | None = None
    idle_timeout_ms: int | None = Field(None, ge=100, le=300_000)
    """server_vad: with no speech this long after the last answer finished playing, the server sends
    ``input_audio_buffer.timeout_triggered`` and answers (to prompt the user)."""
    eagerness: str | None = None


class TranscriptionIn(_Lenient):
    model: str | None = None
    language: str | None = None
    """ISO-639-1 code or a dialect name (``Cantonese``, ``Sichuanese``...), passed to the ASR prompt."""
    prompt: str | None = None


class AudioFormatIn(_Lenient):
    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"]
    rate: Literal[24000] | None = None


class AudioInputIn(_Lenient):
    format: AudioFormatIn | None = None
    transcription: TranscriptionIn | None = None
    turn_detection: TurnDetectionIn | None = None
    noise_reduction: Any = None


class AudioOutputIn(_Lenient):
    format: AudioFormatIn | None = None
    voice: str | dict[str, Any] | None = None
    speed: float | None = None


class AudioConfigIn(_Lenient):
    input: AudioInputIn | None = None
    output: AudioOutputIn | None = None


class TokenLimitsIn(_Model):
    post_instructions: int | None = Field(None, ge=1)


class RetentionRatioIn(_Model):
    type: Literal["retention_ratio"]
    retention_ratio: float = Field(ge=0.0, le=1.0)
    token_limits: TokenLimitsIn | None = None


TruncationIn = Literal["auto", "disabled"] | RetentionRatioIn


class ToolIn(_Lenient):
    type: Literal["function"] = "function"
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class SessionIn(_Lenient):
    """A session update in either shape: GA (``type: realtime``, nested ``audio``) or Beta (flat).

    ``protocol`` is our extension: ``"beta"`` makes the server emit Beta event names and the Beta
    session shape (also chosen by the ``OpenAI-Beta: realtime=v1`` header or ``?protocol=beta``).
    """

    type: Literal["realtime"] | None = None
    protocol: Literal["ga", "beta"] | None = None
    model: str | None = None
    instructions: str | None = None
    tools: list[ToolIn] | None = None
    tool_choice: str | dict[str, Any] | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    max_output_tokens: int | Literal["inf"] | None = None
    truncation: TruncationIn | None = None
    tracing: Any = None
    include: list[str] | None = None
    prompt: Any = None
    # GA
    output_modalities: list[Literal["text", "audio"]] | None = None
    audio: AudioConfigIn | None = None
    # Beta
    modalities: list[Literal["text", "audio"]] | None = None
    voice: str | None = None
    input_audio_format: AudioFormatName | None = None
    output_audio_format: AudioFormatName | None = None
    input_audio_transcription: TranscriptionIn | None = None
    turn_detection: TurnDetectionIn | None = None
    max_response_output_tokens: int | Literal["inf"] | None = None
    speed: float | None = None
    input_audio_noise_reduction: Any = None
    # our extensions
    omni: dict[str, Any] | None = None
    """``{"session_id": "..."}``: a stable id under which the server keeps this conversation (resume)."""
    omni_events: bool | None = None
    """Send the ``omni.*`` events (tool progress, artifacts, confirmation requests)."""

    def is_beta_shape(self) -> bool:
        return self.type is None and self.audio is None and self.output_modalities is None and any(
            f in self.model_fields_set for f in ("modalities", "voice", "input_audio_format", "output_audio_format",
                                                 "input_audio_transcription", "turn_detection",
                                                 "max_response_output_tokens"))


# --------------------------------------------------------------------------------------------------
# Conversation items


class ContentPartIn(_Model):
    """One content part of a message item (GA field names; ``input_video`` is our extension)."""

    type: Literal["input_text", "input_audio", "input_image", "input_video", "output_text", "output_audio",
                  "text", "audio"]
    text: str | None = None
    audio: str | None = None
    """Base64 audio in the session's input format."""
    transcript: str | None = None
    image_url: str | None = None
    """``input_image``: a base64 ``data:image/...`` URL (remote URLs are never fetched)."""
    detail: str | None = None
    """``input_image``: ``auto``/``low``/``high``; accepted for compatibility, images use the processor's rules."""
    timestamp_ms: int | None = Field(None, ge=0)
    """``input_image`` extension: capture time of a camera frame (client clock, ms); timestamped frames
    in a row become one video clip."""
    file_id: str | None = None
    """``input_video``: an upload from ``POST /v1/files``."""
    video_url: str | None = None
    """``input_video``: a base64 ``data:video/...`` URL instead of ``file_id``."""
    fps: float | None = Field(None, gt=0.0, le=30.0)
    """``input_video``: sampling rate (default 2)."""
    max_frames: int | None = Field(None, ge=2, le=768)
    """``input_video``: frame cap (default 128)."""
    include_audio: bool | None = None
    """``input_video``: add the video's audio track to the prompt (default true)."""


class ItemIn(_Model):
    id: str | None = Field(None, max_length=64)
    type: Literal["message", "function_call", "function_call_output"]
    object: Literal["realtime.item"] | None = None
    status: Literal["completed", "incomplete", "in_progress"] | None = None
    role: Literal["user", "assistant", "system"] | None = None
    content: list[ContentPartIn] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None


class ResponseParamsIn(_Lenient):
    """``response.create`` overrides (GA and Beta field names)."""

    instructions: str | None = None
    output_modalities: list[Literal["text", "audio"]] | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    audio: AudioConfigIn | None = None
    voice: str | None = None
    output_audio_format: AudioFormatName | None = None
    tools: list[ToolIn] | None = None
    tool_choice: str | dict[str, Any] | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    max_output_tokens: int | Literal["inf"] | None = None
    max_response_output_tokens: int | Literal["inf"] | None = None
    conversation: Literal["auto", "none"] | str | None = None
    metadata: dict[str, str] | None = None
    input: list[ItemIn] | None = None


# --------------------------------------------------------------------------------------------------
# Client events


class _ClientEvent(_Model):
    event_id: str | None = None


class SessionUpdate(_ClientEvent):
    type: Literal["session.update"]
    session: SessionIn


class InputAudioBufferAppend(_ClientEvent):
    type: Literal["input_audio_buffer.append"]
    audio: str


class InputAudioBufferCommit(_ClientEvent):
    type: Literal["input_audio_buffer.commit"]


class InputAudioBufferClear(_ClientEvent):
    type: Literal["input_audio_buffer.clear"]


class ConversationItemCreate(_ClientEvent):
    type: Literal["conversation.item.create"]
    previous_item_id: str | None = None
    item: ItemIn


class ConversationItemRetrieve(_ClientEvent):
    type: Literal["conversation.item.retrieve"]
    item_id: str


class ConversationItemTruncate(_ClientEvent):
    type: Literal["conversation.item.truncate"]
    item_id: str
    content_index: int = Field(ge=0)
    audio_end_ms: int = Field(ge=0)


class ConversationItemDelete(_ClientEvent):
    type: Literal["conversation.item.delete"]
    item_id: str


class ResponseCreate(_ClientEvent):
    type: Literal["response.create"]
    response: ResponseParamsIn | None = None


class ResponseCancel(_ClientEvent):
    type: Literal["response.cancel"]
    response_id: str | None = None


ClientEvent = Annotated[
    SessionUpdate | InputAudioBufferAppend | InputAudioBufferCommit | InputAudioBufferClear
    | ConversationItemCreate | ConversationItemRetrieve | ConversationItemTruncate | ConversationItemDelete
    | ResponseCreate | ResponseCancel,
    Field(discriminator="type"),
]
_CLIENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(ClientEvent)
CLIENT_EVENT_TYPES = frozenset({
    "session.update", "input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear",
    "conversation.item.create", "conversation.item.retrieve", "conversation.item.truncate",
    "conversation.item.delete", "response.create", "response.cancel",
})


class ProtocolError(Exception):
    """A client event that cannot be used; becomes an ``error`` server event."""

    def __init__(self, code: str, message: str, event_id: str | None = None, param: str | None = None,
                 type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.code, self.message, self.event_id, self.param, self.type = code, message, event_id, param, type


_EVENT_ID = re.compile(rb'"event_id"\s*:\s*"([^"\\]{1,128})"')


def peek_event_id(data: str | bytes) -> str | None:
    """The ``event_id`` of an event that cannot be parsed (bad JSON, too large, rate limited), found in its
    first or last 4 KiB."""
    for part in (data[:4096], data[-4096:]):
        m = _EVENT_ID.search(part.encode(errors="replace") if isinstance(part, str) else part)
        if m:
            return m.group(1).decode(errors="replace")
    return None


_APPEND = re.compile(rb'"type"\s*:\s*"input_audio_buffer\.append"')


def looks_like_append(data: str | bytes) -> bool:
    """Whether an unparsed event is an ``input_audio_buffer.append`` (its type within the first or last
    512 bytes; base64 audio cannot contain quotes, so the match is the event's own type)."""
    return any(_APPEND.search(part.encode(errors="replace") if isinstance(part, str) else part)
               for part in (data[:512], data[-512:]))


def parse_client_event(raw: str | bytes) -> Any:
    """JSON text -> a client event model.

    Raises:
        ProtocolError: ``invalid_json``, ``missing_type``, ``unknown_event`` or ``invalid_value``
            (wrong field types or values), carrying the event's ``event_id`` when it had one.
    """
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProtocolError("invalid_json", f"event is not valid JSON: {e}", peek_event_id(raw)) from None
    except RecursionError:
        raise ProtocolError("invalid_json", "event is nested too deeply", peek_event_id(raw)) from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise ProtocolError("invalid_json", f"event has a value that cannot be read: {e}", peek_event_id(raw),
                            ) from None
    if not isinstance(obj, dict):
        raise ProtocolError("invalid_json", "event must be a JSON object")
    eid = obj.get("event_id") if isinstance(obj.get("event_id"), str) else None
    etype = obj.get("type")
    if not isinstance(etype, str):
        raise ProtocolError("missing_type", "event has no string 'type'", eid, "type")
    if etype not in CLIENT_EVENT_TYPES:
        raise ProtocolError("unknown_event", f"unknown client event type {etype!r}", eid, "type")
    try:
        return _CLIENT_ADAPTER.validate_python(obj)
    except ValidationError as e:
        err = e.errors()[0]
        loc = [str(p) for p in err["loc"] if p != etype]
        param = ".".join(loc) or None
        raise ProtocolError("invalid_value", f"invalid {etype}: {param or 'event'}: {err['msg']}", eid,
                            param) from None


# Server events live in ``server_events.py``; re-exported here so ``events.X`` names every event.
from omni_agent.realtime.server_events import *  # noqa: E402, F403
from omni_agent.realtime.server_events import _ServerEvent  # noqa: E402, F401
