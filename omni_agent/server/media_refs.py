"""Media references in a chat request, settled before the prompt is built.

- ``file`` content parts (OpenAI's ``{"type": "file", "file": {"file_id" | "file_data"}}``) become the
  part their bytes are: an image, an audio clip or a video. The kind is read from the bytes' magic
  numbers, not from a file name.
- Remote ``http://`` / ``https://`` URLs in image and video parts are refused with a 400 that says
  why: the server makes no outbound requests (it would otherwise fetch whatever a client names, from
  inside the network it runs in), and what to send instead.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

from omni_agent.server.convert import FileResolver
from omni_agent.server.errors import APIError
from omni_agent.server.schemas import (
    AudioPart,
    ChatCompletionRequest,
    FilePart,
    ImagePart,
    InputAudio,
    VideoPart,
    VideoRef,
    VideoURLPart,
)

Kind = Literal["image", "audio", "video"]

REMOTE_HINT = ("this server does not fetch remote URLs (no outbound requests); send the bytes as a "
               "data: URL (data:<mime>;base64,...) or upload them with POST /v1/files and pass the file id")


def sniff(data: bytes) -> Kind | None:
    """Image, audio or video from the first bytes (PNG, JPEG, GIF, WebP, BMP; WAV, FLAC, Ogg, MP3;
    MP4/MOV, Matroska/WebM, AVI); None for anything else (PDF, text, ...)."""
    head = data[:16]
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM")) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "image"
    if (head[:4] == b"RIFF" and head[8:12] == b"WAVE") or head.startswith((b"fLaC", b"OggS", b"ID3", b"\xff\xfb")):
        return "audio"
    if head[4:8] == b"ftyp" or head.startswith(b"\x1a\x45\xdf\xa3") or (head[:4] == b"RIFF" and head[8:12] == b"AVI "):
        return "video"
    return None


def _remote(url: str) -> bool:
    return url.lower().startswith(("http://", "https://"))


def _file_bytes(part: FilePart, param: str, resolve: FileResolver | None) -> tuple[bytes, str | None]:
    """The part's bytes and, for an upload, its file id."""
    ref = part.file
    if ref.file_id:
        if resolve is None:
            raise APIError(400, "file ids need the files router, which is not mounted", param=param)
        try:
            return resolve(ref.file_id), ref.file_id
        except KeyError:
            raise APIError(404, f"no such file {ref.file_id!r}", param=param, code="file_not_found") from None
    if ref.file_data:
        payload = ref.file_data.partition(",")[2] if ref.file_data.startswith("data:") else ref.file_data
        try:
            return base64.b64decode(payload, validate=True), None
        except (binascii.Error, ValueError):
            raise APIError(400, "file_data is not valid base64", param=param, code="invalid_media") from None
    raise APIError(400, "a file part needs file_id or file_data", param=param)


def _from_file(part: FilePart, param: str, resolve: FileResolver | None) -> Any:
    data, file_id = _file_bytes(part, param, resolve)
    kind = sniff(data)
    if kind is None:
        name = part.file.filename or part.file.file_id or "file_data"
        raise APIError(400, f"{name} is not an image, audio or video file (documents are not supported)",
                       param=param, code="unsupported_file")
    b64 = base64.b64encode(data).decode() if kind != "video" or file_id is None else ""
    if kind == "image":
        return ImagePart(type="image_url", image_url={"url": f"data:image/*;base64,{b64}"})
    if kind == "audio":
        return AudioPart(type="input_audio", input_audio=InputAudio(data=b64))
    return VideoPart(type="video", video=VideoRef(url=file_id or f"data:video/*;base64,{b64}"))


def resolve_media_refs(body: ChatCompletionRequest, resolve: FileResolver | None) -> ChatCompletionRequest:
    """``body`` with ``file`` parts turned into media parts; remote URLs refused (see the module doc).

    Raises:
        APIError: 400 for a remote URL, an unusable file; 404 for an unknown file id.
    """
    changed = False
    messages = []
    for i, msg in enumerate(body.messages):
        if isinstance(msg.content, str) or not msg.content:
            messages.append(msg)
            continue
        parts = []
        for j, part in enumerate(msg.content):
            param = f"messages.{i}.content.{j}"
            url = (part.image_url.url if isinstance(part, ImagePart) else part.video_url.url
                   if isinstance(part, VideoURLPart) else part.video.url if isinstance(part, VideoPart) else "")
            if _remote(url):
                raise APIError(400, f"{url.split('?', 1)[0]}: {REMOTE_HINT}", param=param,
                               code="remote_url_not_supported")
            if isinstance(part, FilePart):
                part = _from_file(part, param, resolve)
                changed = True
            parts.append(part)
        messages.append(msg.model_copy(update={"content": parts}))
    return body.model_copy(update={"messages": messages}) if changed else body
