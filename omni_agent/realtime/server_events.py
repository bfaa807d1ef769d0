"""OpenAI Realtime server events: one pydantic model per event, and their serialisation in GA or Beta flavour.

Client events, session shapes and parsing live in ``events.py`` (which re-exports everything here).
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field


def event_id() -> str:
    return f"event_{uuid.uuid4().hex[:20]}"


# --------------------------------------------------------------------------------------------------
# Server events


class _ServerEvent(BaseModel):
    event_id: str = Field(default_factory=event_id)


class ErrorDetail(BaseModel):
    type: str
    code: str | None = None
    message: str
    param: str | None = None
    event_id: str | None = None


class Error(_ServerEvent):
    type: Literal["error"] = "error"
    error: ErrorDetail


class SessionCreated(_ServerEvent):
    type: Literal["session.created"] = "session.created"
    session: dict[str, Any]


class SessionUpdated(_ServerEvent):
    type: Literal["session.updated"] = "session.updated"
    session: dict[str, Any]


class ConversationItemAdded(_ServerEvent):
    type: Literal["conversation.item.added"] = "conversation.item.added"
    previous_item_id: str | None = None
    item: dict[str, Any]


class ConversationItemDone(_ServerEvent):
    type: Literal["conversation.item.done"] = "conversation.item.done"
    previous_item_id: str | None = None
    item: dict[str, Any]


class ConversationItemCreated(_ServerEvent):
    """Beta's name for ``conversation.item.added``."""

    type: Literal["conversation.item.created"] = "conversation.item.created"
    previous_item_id: str | None = None
    item: dict[str, Any]


class ConversationItemRetrieved(_ServerEvent):
    type: Literal["conversation.item.retrieved"] = "conversation.item.retrieved"
    item: dict[str, Any]


class ConversationItemDeleted(_ServerEvent):
    type: Literal["conversation.item.deleted"] = "conversation.item.deleted"
    item_id: str


class ConversationItemTruncated(_ServerEvent):
    type: Literal["conversation.item.truncated"] = "conversation.item.truncated"
    item_id: str
    content_index: int
    audio_end_ms: int


class InputAudioTranscriptionDelta(_ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.delta"] = (
        "conversation.item.input_audio_transcription.delta")
    item_id: str
    content_index: int = 0
    delta: str


class InputAudioTranscriptionCompleted(_ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.completed"] = (
        "conversation.item.input_audio_transcription.completed")
    item_id: str
    content_index: int = 0
    transcript: str
    language: str | None = None
    """Our extension: the language/dialect the ASR prompt named first."""
    usage: dict[str, Any] = Field(default_factory=lambda: {"type": "duration", "seconds": 0.0})


class InputAudioTranscriptionFailed(_ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.failed"] = (
        "conversation.item.input_audio_transcription.failed")
    item_id: str
    content_index: int = 0
    error: ErrorDetail


class InputAudioBufferCommitted(_ServerEvent):
    type: Literal["input_audio_buffer.committed"] = "input_audio_buffer.committed"
    previous_item_id: str | None = None
    item_id: str


class InputAudioBufferCleared(_ServerEvent):
    type: Literal["input_audio_buffer.cleared"] = "input_audio_buffer.cleared"


class InputAudioBufferSpeechStarted(_ServerEvent):
    type: Literal["input_audio_buffer.speech_started"] = "input_audio_buffer.speech_started"
    audio_start_ms: int
    item_id: str


class InputAudioBufferSpeechStopped(_ServerEvent):
    type: Literal["input_audio_buffer.speech_stopped"] = "input_audio_buffer.speech_stopped"
    audio_end_ms: int
    item_id: str


class InputAudioBufferTimeoutTriggered(_ServerEvent):
    type: Literal["input_audio_buffer.timeout_triggered"] = "input_audio_buffer.timeout_triggered"
    audio_start_ms: int
    audio_end_ms: int
    item_id: str


class ResponseCreated(_ServerEvent):
    type: Literal["response.created"] = "response.created"
    response: dict[str, Any]


class ResponseDone(_ServerEvent):
    type: Literal["response.done"] = "response.done"
    response: dict[str, Any]


class ResponseOutputItemAdded(_ServerEvent):
    type: Literal["response.output_item.added"] = "response.output_item.added"
    response_id: str
    output_index: int
    item: dict[str, Any]


class ResponseOutputItemDone(_ServerEvent):
    type: Literal["response.output_item.done"] = "response.output_item.done"
    response_id: str
    output_index: int
    item: dict[str, Any]


class _PartEvent(_ServerEvent):
    response_id: str
    item_id: str
    output_index: int = 0
    content_index: int = 0


class ResponseContentPartAdded(_PartEvent):
    type: Literal["response.content_part.added"] = "response.content_part.added"
    part: dict[str, Any]


class ResponseContentPartDone(_PartEvent):
    type: Literal["response.content_part.done"] = "response.content_part.done"
    part: dict[str, Any]


class ResponseOutputTextDelta(_PartEvent):
    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    delta: str


class ResponseOutputTextDone(_PartEvent):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    text: str


class ResponseOutputAudioDelta(_PartEvent):
    type: Literal["response.output_audio.delta"] = "response.output_audio.delta"
    delta: str


class ResponseOutputAudioDone(_PartEvent):
    type: Literal["response.output_audio.done"] = "response.output_audio.done"


class ResponseOutputAudioTranscriptDelta(_PartEvent):
    type: Literal["response.output_audio_transcript.delta"] = "response.output_audio_transcript.delta"
    delta: str


class ResponseOutputAudioTranscriptDone(_PartEvent):
    type: Literal["response.output_audio_transcript.done"] = "response.output_audio_transcript.done"
    transcript: str


class ResponseFunctionCallArgumentsDelta(_ServerEvent):
    type: Literal["response.function_call_arguments.delta"] = "response.function_call_arguments.delta"
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    delta: str


class ResponseFunctionCallArgumentsDone(_ServerEvent):
    type: Literal["response.function_call_arguments.done"] = "response.function_call_arguments.done"
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    name: str
    arguments: str


class RateLimitsUpdated(_ServerEvent):
    type: Literal["rate_limits.updated"] = "rate_limits.updated"
    rate_limits: list[dict[str, Any]]


class OmniToolProgress(_ServerEvent):
    """Our extension (sent only with the session option ``omni_events``)."""

    type: Literal["omni.tool.progress"] = "omni.tool.progress"
    response_id: str
    call_id: str
    message: str
    fraction: float | None = None


class OmniArtifact(_ServerEvent):
    """Our extension: a tool's output file (base64 ``data`` or a ``uri``)."""

    type: Literal["omni.artifact"] = "omni.artifact"
    response_id: str
    kind: str
    mime_type: str
    data: str | None = None
    uri: str | None = None
    name: str | None = None
    call_id: str | None = None


class OmniConfirmationRequest(_ServerEvent):
    """Our extension: a risky action waits for a ``function_call_output`` yes/no."""

    type: Literal["omni.confirmation.request"] = "omni.confirmation.request"
    response_id: str
    call_id: str
    action: str
    reason: str


# GA name -> Beta name, for sessions that speak Beta.
BETA_EVENT_NAMES = {
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "conversation.item.added": "conversation.item.created",
}
GA_EVENT_NAMES = {beta: ga for ga, beta in BETA_EVENT_NAMES.items()}
BETA_ONLY_SKIPPED = frozenset({"conversation.item.done"})  # Beta has no such event
# Content types inside items: GA -> Beta.
BETA_CONTENT_TYPES = {"output_text": "text", "output_audio": "audio"}


def _beta_item(item: dict[str, Any]) -> dict[str, Any]:
    content = item.get("content")
    if not content:
        return item
    return {**item, "content": [{**c, "type": BETA_CONTENT_TYPES.get(c.get("type"), c.get("type"))}
                                for c in content]}


def dump_event(event: _ServerEvent, beta: bool = False) -> str | None:
    """A server event -> JSON text in the session's protocol flavour (None: not sent in Beta)."""
    data = event.model_dump(mode="json")
    if beta:
        if data["type"] in BETA_ONLY_SKIPPED:
            return None
        data["type"] = BETA_EVENT_NAMES.get(data["type"], data["type"])
        if isinstance(data.get("item"), dict):
            data["item"] = _beta_item(data["item"])
        if isinstance(data.get("response"), dict) and data["response"].get("output"):
            data["response"] = {**data["response"],
                                "output": [_beta_item(i) for i in data["response"]["output"]]}
    return json.dumps(data, separators=(",", ":"))


def parse_server_event(raw: str | bytes) -> dict[str, Any]:
    """Server event JSON -> dict with the GA ``type`` (Beta names are mapped); for clients and tests."""
    data = json.loads(raw)
    data["type"] = GA_EVENT_NAMES.get(data.get("type"), data.get("type"))
    return data
