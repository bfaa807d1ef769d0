"""From an OpenAI chat request to the processor's messages and the engine's sampling parameters.

Media decoding (base64, PIL, soundfile, PyAV) is CPU work: callers run :func:`to_messages` in a
worker thread. Tools are shown to the model in a system message; a tool call is the JSON object
``{"name": ..., "arguments": {...}}``, constrained by xgrammar whenever ``tool_choice`` demands a call.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Callable
from typing import Any

from omni_agent.engine.request import EngineError, SamplingParams
from omni_agent.server.errors import APIError
from omni_agent.server.schemas import (
    AudioPart,
    ChatCompletionRequest,
    ImagePart,
    Message,
    NamedToolChoice,
    TextPart,
    Tool,
    VideoPart,
    VideoURLPart,
)

AUDIO_RATE = 16000  # the audio encoder's input rate
TEXT_CHUNK_CHARS = 16_384  # text is counted in pieces this long, so counting stops soon after the limit
MAX_IMAGE_PIXELS = 50_000_000  # a 50 MP photo decodes to 150 MB of RGB; the model sees <= 0.8 MP anyway
FileResolver = Callable[[str], bytes]
"""Returns the bytes of an uploaded file by id (``file-...``); raises ``KeyError`` when unknown."""


def _b64(data: str, param: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, "media data is not valid base64", param=param, code="invalid_media") from None


def _data_url(url: str, param: str, kind: str) -> bytes:
    if not url.startswith("data:"):
        raise APIError(400, f"{kind} must be a data URL (data:{kind}/...;base64,...); remote URLs are not fetched",
                       param=param, code="invalid_media")
    head, sep, payload = url.partition(",")
    if not sep or ";base64" not in head:
        raise APIError(400, f"{kind} data URL must be base64-encoded", param=param, code="invalid_media")
    return _b64(payload, param)


def decode_image(raw: bytes) -> Any:
    """Encoded image bytes -> RGB PIL image, refusing decompression bombs before decoding.

    The header gives the size for free: more than ``MAX_IMAGE_PIXELS`` pixels is refused without
    allocating the pixels (a 1 KB PNG may claim 100000 x 100000).

    Raises:
        ValueError: undecodable, or too many pixels (the message says which).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(raw))
        w, h = img.size
        if w * h > MAX_IMAGE_PIXELS:
            raise ValueError(f"image of {w}x{h} pixels is larger than the limit of {MAX_IMAGE_PIXELS} pixels")
        img.load()
        return img.convert("RGB")
    except Image.DecompressionBombError as e:  # PIL's own guard (animated frames, odd formats)
        raise ValueError(f"image is too large to decode safely: {e}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError) as e:  # what PIL raises on junk
        raise ValueError(f"could not decode image: {e}") from None


def _image(part: ImagePart, param: str) -> Any:
    raw = _data_url(part.image_url.url, param, "image")
    try:
        return decode_image(raw)
    except ValueError as e:
        raise APIError(400, str(e), param=param, code="invalid_media") from None


def _audio(part: AudioPart, param: str) -> Any:
    from audio.dsp import AudioError, decode_audio_bytes, resample

    raw = _b64(part.input_audio.data, param)
    try:
        wave, sr = decode_audio_bytes(raw)
    except AudioError as e:
        raise APIError(400, str(e), param=param, code="invalid_media") from None
    return resample(wave, sr, AUDIO_RATE)


def _video(part: VideoURLPart | VideoPart, param: str, resolve_file: FileResolver | None,
           budget: int | None) -> list[dict[str, Any]]:
    """The processor parts for one video: the clip (decoded once per content, cached) and its audio."""
    from vision.video import VIDEO_BUDGET_SHARE, VideoError, default_cache, video_parts

    ref = part.video_url if isinstance(part, VideoURLPart) else part.video
    if ref.url.startswith("file-"):
        if resolve_file is None:
            raise APIError(400, "file ids need the files router, which is not mounted", param=param)
        try:
            raw = resolve_file(ref.url)
        except KeyError:
            raise APIError(404, f"no such file {ref.url!r}", param=param, code="file_not_found") from None
    else:
        raw = _data_url(ref.url, param, "video")
    frames_budget = int(budget * VIDEO_BUDGET_SHARE) if budget is not None else None
    try:
        clip, _ = default_cache().load(raw, fps=ref.fps, max_frames=ref.max_frames, max_tokens=frames_budget)
    except VideoError as e:
        raise APIError(400, f"could not use video: {e}", param=param, code="invalid_media") from None
    return video_parts(clip, max_tokens=budget)


def _content(msg: Message, i: int, resolve_file: FileResolver | None,
             video_budget: int | None) -> str | list[dict[str, Any]]:
    if msg.content is None:
        return ""
    if isinstance(msg.content, str):
        return msg.content
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(msg.content):
        param = f"messages.{i}.content.{j}"
        if isinstance(part, TextPart):
            parts.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            parts.append({"type": "image", "image": _image(part, param)})
        elif isinstance(part, AudioPart):
            parts.append({"type": "audio", "audio": _audio(part, param)})
        else:
            parts.extend(_video(part, param, resolve_file, video_budget))
    return parts


def check_text_fits(req: ChatCompletionRequest, tokenizer: Any, max_tokens: int) -> None:
    """Refuse text that cannot fit in ``max_tokens`` without tokenizing all of it.

    Tokenizing a 12 MiB message whole takes 40 s and 2 GB only to be refused as too long; counting in
    ``TEXT_CHUNK_CHARS`` pieces stops at the limit. A piece boundary can split one token in two, so
    each piece counts one token less than it has: the count never exceeds the real one. Text of at
    most ``max_tokens`` bytes is not counted at all (a byte-level BPE token holds at least one byte).

    Raises:
        APIError: 400 ``context_length_exceeded``.
    """
    texts = [t for msg in req.messages for t in ([msg.content] if isinstance(msg.content, str) else
                                                  [p.text for p in msg.content or [] if isinstance(p, TextPart)])]
    if sum(len(t) for t in texts) * 4 <= max_tokens:  # at most 4 UTF-8 bytes per character
        return
    total = 0
    for text in texts:
        for i in range(0, len(text), TEXT_CHUNK_CHARS):
            piece = tokenizer.encode(text[i:i + TEXT_CHUNK_CHARS], add_special_tokens=False)
            total += max(0, len(piece.ids) - 1)
            if total > max_tokens:
                raise APIError(400, f"the messages hold more than {max_tokens} tokens of text; this model "
                                    f"fits at most {max_tokens}", param="messages", code="context_length_exceeded")


def tools_system_text(tools: list[Tool]) -> str:
    specs = [{"name": t.function.name, "description": t.function.description or "",
              "parameters": t.function.parameters} for t in tools]
    return ("You can call these tools. To call one, reply with only a JSON object "
            '{"name": <tool name>, "arguments": {...}}.\nTools: ' + json.dumps(specs, ensure_ascii=False))


def to_messages(req: ChatCompletionRequest, resolve_file: FileResolver | None = None,
                video_budget: int | None = None) -> list[dict[str, Any]]:
    """OpenAI messages -> processor messages (media decoded; tool turns rendered as text).

    Raises:
        APIError: undecodable media, unknown file ids.
    """
    out: list[dict[str, Any]] = []
    if req.tools and req.tool_choice != "none":
        out.append({"role": "system", "content": tools_system_text(req.tools)})
    for i, msg in enumerate(req.messages):
        content = _content(msg, i, resolve_file, video_budget)
        if msg.role in ("system", "developer"):
            out.append({"role": "system", "content": content})
        elif msg.role == "tool":
            text = content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)
            out.append({"role": "user", "content": f"Tool result ({msg.tool_call_id or msg.name or 'tool'}): {text}"})
        elif msg.role == "assistant" and msg.tool_calls:
            calls = [json.dumps({"name": c.function.name, "arguments": _loads(c.function.arguments)},
                                ensure_ascii=False) for c in msg.tool_calls]
            out.append({"role": "assistant", "content": "\n".join(calls)})
        else:
            out.append({"role": msg.role, "content": content})
    return out


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def tool_call_schema(req: ChatCompletionRequest) -> dict[str, Any] | None:
    """The JSON schema a completion must match when ``tool_choice`` forces a call, else None.

    Raises:
        APIError: ``tool_choice`` names a tool that is not in ``tools``, or needs tools that are absent.
    """
    choice = req.tool_choice
    if choice is None or choice in ("none", "auto"):
        return None
    if not req.tools:
        raise APIError(400, "tool_choice requires tools", param="tool_choice")
    tools = req.tools
    if isinstance(choice, NamedToolChoice):
        tools = [t for t in tools if t.function.name == choice.function.name]
        if not tools:
            raise APIError(400, f"tool_choice names unknown tool {choice.function.name!r}", param="tool_choice")

    def one(t: Tool) -> dict[str, Any]:
        return {"type": "object", "properties": {"name": {"type": "string", "enum": [t.function.name]},
                                                 "arguments": t.function.parameters},
                "required": ["name", "arguments"], "additionalProperties": False}

    return one(tools[0]) if len(tools) == 1 else {"anyOf": [one(t) for t in tools]}


def parse_tool_call(text: str, tools: list[Tool] | None) -> tuple[str, str] | None:
    """``(name, arguments JSON)`` when ``text`` is a tool-call object naming a known tool, else None."""
    if not tools:
        return None
    stripped = text.strip()
    if stripped.startswith("<tool_call>") and stripped.endswith("</tool_call>"):
        stripped = stripped[len("<tool_call>"):-len("</tool_call>")].strip()
    try:
        obj = json.loads(stripped)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or obj.get("name") not in {t.function.name for t in tools}:
        return None
    return obj["name"], json.dumps(obj.get("arguments", {}), ensure_ascii=False)


def sampling_params(req: ChatCompletionRequest, default_max_tokens: int,
                    json_schema: dict[str, Any] | None) -> SamplingParams:
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if json_schema is None and req.response_format is not None:
        if req.response_format.type == "json_object":
            json_schema = {"type": "object"}
        elif req.response_format.type == "json_schema":
            if req.response_format.json_schema is None or not req.response_format.json_schema.schema_:
                raise APIError(400, "response_format json_schema needs a schema", param="response_format")
            json_schema = req.response_format.json_schema.schema_
    sp = SamplingParams(
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=req.top_k or 0,
        repetition_penalty=req.repetition_penalty or 1.0,
        max_tokens=req.max_completion_tokens or req.max_tokens or default_max_tokens,
        stop=[] if json_schema is not None else stop,
        stop_token_ids=list(req.stop_token_ids or []),
        seed=req.seed,
        json_schema=json_schema,
    )
    try:
        sp.validate()  # the engine checks again at admission; refusing here costs no media decoding
    except EngineError as e:
        raise APIError(400, str(e), param=str(e).split(" ", 1)[0], code=e.code) from None
    return sp
