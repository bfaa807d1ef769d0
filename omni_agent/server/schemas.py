"""OpenAI chat-completions request and response bodies (pydantic; validated once at the HTTP edge).

Content parts: ``text``, ``image_url`` (a ``data:image/...;base64,`` URL), ``input_audio`` (base64
WAV/FLAC/OGG) and two spellings of the video extension: ``video_url`` (vLLM's name) and ``video``::

    {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,...", "fps": 2.0, "max_frames": 64}}

``url`` may also be ``file-<id>`` for a file uploaded through ``/v1/files`` (when that router is
mounted), and a ``file`` part (``{"type": "file", "file": {"file_id": "file-..."}}`` or with base64
``file_data``) names an uploaded image, audio or video file. Remote ``http(s)://`` URLs are refused
with a 400 (the server fetches nothing). Fields OpenAI defines that we do not use are accepted and
ignored; unknown fields too.

Output: ``n`` choices, ``logprobs``/``top_logprobs``, and spoken answers with
``modalities: ["text", "audio"]`` and ``audio: {"voice", "format"}``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class ImageURL(_Lenient):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Lenient):
    type: Literal["image_url"]
    image_url: ImageURL


class InputAudio(_Lenient):
    data: str
    """Base64 of a whole audio file."""
    format: Literal["wav", "mp3", "flac", "ogg"] = "wav"


class AudioPart(_Lenient):
    type: Literal["input_audio"]
    input_audio: InputAudio


class VideoRef(_Lenient):
    url: str
    """``data:video/...;base64,...`` or ``file-<id>`` (an upload from the files router)."""
    fps: float = Field(2.0, gt=0, le=30)
    """Frames sampled per second of video."""
    max_frames: int = Field(128, ge=4, le=768)
    """Most frames sampled (long videos are sampled more sparsely)."""


class VideoURLPart(_Lenient):
    type: Literal["video_url"]
    video_url: VideoRef


class VideoPart(_Lenient):
    type: Literal["video"]
    video: VideoRef


class FileRef(_Lenient):
    file_id: str | None = None
    """``file-<id>`` of an upload (``POST /v1/files``)."""
    file_data: str | None = None
    """The file itself: base64, or a ``data:<mime>;base64,`` URL."""
    filename: str | None = None


class FilePart(_Lenient):
    type: Literal["file"]
    file: FileRef


ContentPart = Annotated[TextPart | ImagePart | AudioPart | VideoURLPart | VideoPart | FilePart,
                        Field(discriminator="type")]


class FunctionCall(_Lenient):
    name: str
    arguments: str = "{}"


class ToolCall(_Lenient):
    id: str = ""
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class FunctionDef(_Lenient):
    name: str = Field(pattern=r"^[A-Za-z0-9_\-\.]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class Tool(_Lenient):
    type: Literal["function"] = "function"
    function: FunctionDef


class NamedFunction(_Lenient):
    name: str


class NamedToolChoice(_Lenient):
    type: Literal["function"] = "function"
    function: NamedFunction


class JSONSchemaFormat(_Lenient):
    name: str = "response"
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Lenient):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class StreamOptions(_Lenient):
    include_usage: bool = False


AUDIO_FORMATS = ("wav", "pcm16", "flac")
"""Spoken-answer encodings this server writes (OpenAI also names mp3, opus and aac: refused with a 400)."""


class AudioOutput(_Lenient):
    voice: str = "default"
    """Voice name, passed to the talker (any name maps to a fixed speaker)."""
    format: str = "wav"
    """One of :data:`AUDIO_FORMATS`; a stream sends ``pcm16`` (24 kHz mono little-endian), as OpenAI does."""


MAX_CHOICES = 8  # each choice is a whole agent run; more than this is a batch job, not a chat request


class ChatCompletionRequest(_Lenient):
    model: str = ""
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    """Extension (vLLM): keep only the k most likely tokens; 0 disables."""
    repetition_penalty: float | None = Field(None, gt=0)
    """Extension (vLLM): > 1 discourages repeating prompt or generated tokens."""
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    """Extension (vLLM): token ids that end the completion."""
    seed: int | None = None
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    """Alternatives per token (needs ``logprobs: true``)."""
    modalities: list[Literal["text", "audio"]] | None = None
    audio: AudioOutput | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    response_format: ResponseFormat | None = None
    user: str | None = None
