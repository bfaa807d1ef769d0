"""Video and image parts of realtime conversation items: decoding them and turning camera frames into clips.

A message item may carry ``input_video`` parts (an upload from ``POST /v1/files`` or a data URL) and
``input_image`` parts (a data URL, optionally with the camera's ``timestamp_ms``). Decoding is CPU work,
so the session calls :func:`decode_item_media` in an executor before the item enters the conversation;
the decoded clip or image then stays with the item, and every later prompt carries the same processor
parts (same content hash), so the engine's prefix and encoder caches cover the video.

Camera frames: timestamped ``input_image`` parts in a row (within an item or across consecutive user
items made only of such frames) become one clip when there are at least :data:`CAMERA_MIN_FRAMES` of
them; a shorter run stays plain images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omni_agent.realtime.events import ItemIn, ProtocolError

CAMERA_MIN_FRAMES = 4  # fewer frames than two temporal groups of 2 are not worth a clip: plain images
CAMERA_WINDOW_S = 16.0  # a clip covers the latest 16 s of a run (the CameraFrameBuffer default)
CAMERA_FPS = 2.0  # camera runs are thinned to the video sampling rate
CAMERA_MAX_FRAMES = 32  # and capped, so a long stream cannot outgrow the context


@dataclass
class ItemMedia:
    """Decoded media of one message item, by content index.

    Attributes:
        parts: processor parts of an ``input_video`` (video, then its audio track) or a plain
            ``input_image`` (one image part).
        frames: camera frames: ``(PIL image, capture time in seconds)``.
        json: what the protocol item shows for each media part (no image or video bytes).
    """

    parts: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    frames: dict[int, tuple[Any, float]] = field(default_factory=dict)
    json: dict[int, dict[str, Any]] = field(default_factory=dict)


def has_media(spec: ItemIn) -> bool:
    """Whether an item has parts that need decoding (the session then decodes it off the event loop)."""
    return spec.type == "message" and any(p.type in ("input_image", "input_video") for p in spec.content or [])


def decode_item_media(spec: ItemIn, event_id: str | None, *, max_tokens: int | None = None,
                      store: Any = None) -> ItemMedia:
    """Decode the ``input_video`` and ``input_image`` parts of a message item (blocking; run it in an executor).

    Args:
        spec: the item as received.
        event_id: the client event, for errors.
        max_tokens: media budget of one video (video plus audio tokens).
        store: the file store for ``file_id`` (default: the process-wide one).

    Raises:
        ProtocolError: ``invalid_value`` (a part without its reference, media on a non-user message),
            ``invalid_image`` (bad data URL or undecodable image), ``file_not_found`` (unknown file id),
            ``invalid_video`` (bad reference or undecodable video).
    """
    from omni_agent.server.files import decode_image_data_url, realtime_video_parts, video_summary
    from vision.video import VideoError

    media = ItemMedia()
    for i, part in enumerate(spec.content or []):
        if part.type not in ("input_image", "input_video"):
            continue
        where = f"item.content.{i}"
        if spec.role != "user":
            raise ProtocolError("invalid_value", f"{part.type} parts belong to user messages", event_id,
                                f"{where}.type")
        if part.type == "input_image":
            if not part.image_url:
                raise ProtocolError("invalid_value", "an input_image part needs image_url (a data URL)", event_id,
                                    f"{where}.image_url")
            try:
                image = decode_image_data_url(part.image_url)
            except VideoError as e:
                raise ProtocolError("invalid_image", str(e).replace("camera frame", "input_image"), event_id,
                                    f"{where}.image_url") from None
            shown: dict[str, Any] = {"type": "input_image", "detail": part.detail or "auto"}
            if part.timestamp_ms is not None:
                shown["timestamp_ms"] = part.timestamp_ms
                media.frames[i] = (image, part.timestamp_ms / 1000)
            else:
                media.parts[i] = [{"type": "image", "image": image}]
            media.json[i] = shown
            continue
        ref_param = f"{where}.file_id" if part.file_id else f"{where}.video_url"
        if not part.file_id and not part.video_url:
            raise ProtocolError("invalid_value", "an input_video part needs file_id or video_url", event_id,
                                ref_param)
        raw = part.model_dump(exclude_none=True)
        try:
            parts = realtime_video_parts(raw, store=store, max_tokens=max_tokens)
        except KeyError:
            raise ProtocolError("file_not_found", f"no uploaded file {part.file_id!r}", event_id,
                                ref_param) from None
        except VideoError as e:
            raise ProtocolError("invalid_video", f"cannot use this video: {e}", event_id, ref_param) from None
        for p in parts:
            if p["type"] == "audio":
                p["source"] = "video"  # the video's own track, not the user's voice
        shown = {k: v for k, v in raw.items() if k != "video_url"}  # the data URL is not echoed back
        shown["video"] = video_summary(parts[0]["video"])
        media.parts[i], media.json[i] = parts, shown
    return media


def camera_clip(frames: list[tuple[Any, float]], *, max_tokens: int | None = None) -> Any:
    """A run of camera frames -> ``VideoClip`` (latest window, thinned to :data:`CAMERA_FPS`).

    Raises:
        VideoError: frames the clip builder refuses.
    """
    from vision.video import CameraFrameBuffer

    buf = CameraFrameBuffer(window_s=CAMERA_WINDOW_S, fps=CAMERA_FPS, max_frames=CAMERA_MAX_FRAMES)
    for image, t in frames:
        buf.push(image, t)
    return buf.clip(max_tokens=max_tokens)
