"""``/v1/files``: upload a video (or any file) once, then refer to it by id in many questions.

OpenAI-files-like routes: ``POST /v1/files`` (multipart ``file`` + ``purpose``), ``GET /v1/files``,
``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``, ``DELETE /v1/files/{id}``. A video upload is
decoded right away (in a worker thread) into the process-wide decoded-clip cache, so a bad video is
refused at upload time and the first question skips decoding; the response carries a ``video``
summary (duration, sampled frames, tokens, budget note).

Every file belongs to the principal that uploaded it (see :mod:`omni_agent.principal`): listing shows
only one's own files, and another principal's id answers 404 like an unknown one, for the routes
and for references from a chat or realtime request alike.

The helpers below are what the chat route and the realtime session use to turn a video reference
(``file-...`` id or ``data:video/...;base64,...`` URL) into processor parts.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import Response

from omni_agent.principal import current_principal, owns
from omni_agent.server.auth import auth_dependency
from omni_agent.server.errors import APIError
from vision.video import VIDEO_BUDGET_SHARE, VideoClip, VideoError, default_cache, video_parts

MAX_STORE_BYTES = 2 * 2**30  # all uploads kept in memory together; oldest are evicted past this
VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".mov", ".m4v", ".avi")
DEFAULT_VIDEO_OPTIONS: dict[str, Any] = {"fps": 2.0, "max_frames": 128}
"""What the chat ``video`` part uses by default; uploads are pre-decoded with the same options."""


@dataclass
class StoredFile:
    """One upload: OpenAI's file object fields plus the bytes."""

    id: str
    filename: str
    purpose: str
    created_at: int
    data: bytes
    content_type: str | None = None
    video: dict[str, Any] | None = None
    owner: str | None = None
    """The principal that uploaded it (None: made in-process, outside any request)."""

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "object": "file", "bytes": len(self.data),
                                "created_at": self.created_at, "filename": self.filename,
                                "purpose": self.purpose, "status": "processed", "status_details": None}
        if self.video is not None:
            body["video"] = self.video
        return body


class FileStore:
    """In-memory upload store (ids ``file-<hex>``), oldest evicted past ``max_bytes``. Thread-safe."""

    def __init__(self, max_bytes: int = MAX_STORE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._files: dict[str, StoredFile] = {}
        self._lock = threading.Lock()
        self._seq = itertools.count()

    def add(self, data: bytes, filename: str, purpose: str, content_type: str | None = None) -> StoredFile:
        """Store ``data`` for the current principal and return its record."""
        f = StoredFile(id=f"file-{secrets.token_hex(12)}", filename=filename, purpose=purpose,
                       created_at=int(time.time()), data=data, content_type=content_type,
                       owner=current_principal())
        with self._lock:
            self._files[f.id] = f
            total = sum(len(x.data) for x in self._files.values())
            for old in list(self._files):
                if total <= self.max_bytes or old == f.id:
                    break
                total -= len(self._files.pop(old).data)
        return f

    def get(self, file_id: str) -> StoredFile:
        """The record for ``file_id``, if the current principal owns it.

        Raises:
            KeyError: unknown id, or another principal's file (indistinguishable on purpose).
        """
        with self._lock:
            f = self._files[file_id]
        if not owns(f.owner, current_principal()):
            raise KeyError(file_id)
        return f

    def delete(self, file_id: str) -> bool:
        """Remove ``file_id`` (the current principal's); False when it was not there."""
        try:
            self.get(file_id)
        except KeyError:
            return False
        with self._lock:
            return self._files.pop(file_id, None) is not None

    def list(self) -> list[StoredFile]:
        """The current principal's files, oldest first."""
        principal = current_principal()
        with self._lock:
            return [f for f in self._files.values() if owns(f.owner, principal)]


_STORE = FileStore()


def default_store() -> FileStore:
    """The process-wide store that ``files_router`` serves and ``resolve_file`` reads."""
    return _STORE


def resolve_file(file_id: str) -> bytes:
    """Bytes of an upload by id (the chat route's ``FileResolver``).

    Raises:
        KeyError: unknown id.
    """
    return _STORE.get(file_id).data


def video_summary(clip: VideoClip) -> dict[str, Any]:
    """What the API reports about a decoded video."""
    w, h = clip.size
    return {"duration": round(clip.duration, 3), "frames": len(clip.frames), "fps": round(clip.fps, 4),
            "width": w, "height": h, "tokens": clip.num_tokens, "has_audio": clip.audio is not None,
            "budget_note": clip.budget_note}


def video_bytes(ref: str, *, store: FileStore | None = None) -> bytes:
    """Bytes of a video reference: ``file-<id>`` or a base64 ``data:`` URL.

    Raises:
        KeyError: unknown file id.
        VideoError: a malformed data URL or a remote URL (never fetched).
    """
    if ref.startswith("file-"):
        return (store or _STORE).get(ref).data
    if not ref.startswith("data:"):
        raise VideoError("a video must be a file id (file-...) or a data URL (data:video/...;base64,...); "
                         "remote URLs are not fetched")
    head, sep, payload = ref.partition(",")
    if not sep or ";base64" not in head:
        raise VideoError("video data URL must be base64-encoded")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise VideoError("video data URL is not valid base64") from None


def load_video_ref(ref: str, *, store: FileStore | None = None, **options: Any) -> VideoClip:
    """Decode a video reference through the decoded-clip cache (later questions skip decoding).

    Args:
        ref: ``file-<id>`` or a base64 ``data:video/...`` URL.
        store: the file store (default: the process-wide one).
        **options: ``load_video`` options (``fps``, ``max_frames``, ``max_tokens``, ...); defaults
            ``DEFAULT_VIDEO_OPTIONS``.

    Raises:
        KeyError: unknown file id.
        VideoError: bad reference or undecodable video.
    """
    opts = {**DEFAULT_VIDEO_OPTIONS, **{k: v for k, v in options.items() if v is not None}}
    clip, _ = default_cache().load(video_bytes(ref, store=store), **opts)
    return clip


def realtime_video_parts(part: dict[str, Any], *, store: FileStore | None = None,
                         max_tokens: int | None = None) -> list[dict[str, Any]]:
    """Processor parts for a realtime ``input_video`` content part.

    Accepted shapes (see docs/video.md)::

        {"type": "input_video", "file_id": "file-..."}
        {"type": "input_video", "video_url": "data:video/mp4;base64,..."}
        optional: "fps", "max_frames", "include_audio" (default true)

    Args:
        part: the content part as received.
        store: the file store (default: the process-wide one).
        max_tokens: media budget (video plus audio tokens): 3/4 for the frames, the audio gets the rest.

    Raises:
        VideoError: missing or bad reference, undecodable video.
        KeyError: unknown file id.
    """
    ref = part.get("file_id") or part.get("video_url") or part.get("url")
    if isinstance(ref, dict):
        ref = ref.get("url")
    if not isinstance(ref, str) or not ref:
        raise VideoError("input_video needs a file_id or a video_url")
    frames_budget = int(max_tokens * VIDEO_BUDGET_SHARE) if max_tokens is not None else None
    clip = load_video_ref(ref, store=store, fps=part.get("fps"), max_frames=part.get("max_frames"),
                          max_tokens=frames_budget)
    return video_parts(clip, with_audio=bool(part.get("include_audio", True)), max_tokens=max_tokens)


def decode_image_data_url(url: str) -> Any:
    """A ``data:image/...;base64,...`` URL -> RGB PIL image (camera frames over realtime).

    Raises:
        VideoError: not a base64 image data URL, or undecodable image.
    """
    from omni_agent.server.convert import decode_image

    head, sep, payload = url.partition(",")
    if not url.startswith("data:image/") or not sep or ";base64" not in head:
        raise VideoError("camera frame must be a data:image/...;base64,... URL")
    try:
        return decode_image(base64.b64decode(payload, validate=True))  # refuses decompression bombs
    except (binascii.Error, ValueError) as e:
        raise VideoError(f"could not decode camera frame: {e}") from None


def _looks_like_video(filename: str, content_type: str | None) -> bool:
    return (content_type or "").startswith("video/") or filename.lower().endswith(VIDEO_EXTS)


def files_router(settings: Any, *, store: FileStore | None = None) -> APIRouter:
    """The ``/v1/files`` routes, authenticated like every ``/v1`` route, each file its owner's only.

    Args:
        settings: runtime ``Settings`` (API keys).
        store: the file store (default: the process-wide one that ``resolve_file`` reads).
    """
    store = store or _STORE
    router = APIRouter(dependencies=[Depends(auth_dependency(settings))])

    @router.post("/v1/files")
    async def upload(file: UploadFile = File(...), purpose: str = Form("user_data")) -> dict[str, Any]:
        data = await file.read()
        if not data:
            raise APIError(400, "the uploaded file is empty", param="file")
        # the app's body limit usually refused it before reading; this holds where the router is mounted alone
        if len(data) > settings.server.max_upload_bytes:
            raise APIError(413, f"file is {len(data)} bytes; the limit is {settings.server.max_upload_bytes} "
                                "(server.max_upload_bytes)", param="file")
        name = file.filename or "upload"
        summary = None
        if _looks_like_video(name, file.content_type):
            try:
                # Decoding is CPU work: a worker thread keeps the event loop serving other sessions.
                clip, _ = await asyncio.to_thread(default_cache().load, data, **DEFAULT_VIDEO_OPTIONS)
            except VideoError as e:
                raise APIError(400, f"could not use video: {e}", param="file", code="invalid_media") from None
            summary = video_summary(clip)
        record = store.add(data, name, purpose, file.content_type)
        record.video = summary
        return record.to_json()

    @router.get("/v1/files")
    async def list_files() -> dict[str, Any]:
        return {"object": "list", "data": [f.to_json() for f in store.list()], "has_more": False}

    def _get(file_id: str) -> StoredFile:
        try:
            return store.get(file_id)
        except KeyError:
            raise APIError(404, f"no such file {file_id!r}", param="file_id", code="file_not_found") from None

    @router.get("/v1/files/{file_id}")
    async def retrieve(file_id: str) -> dict[str, Any]:
        return _get(file_id).to_json()

    @router.get("/v1/files/{file_id}/content")
    async def content(file_id: str) -> Response:
        f = _get(file_id)
        return Response(f.data, media_type=f.content_type or "application/octet-stream")

    @router.delete("/v1/files/{file_id}")
    async def delete(file_id: str) -> dict[str, Any]:
        _get(file_id)
        store.delete(file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    return router
