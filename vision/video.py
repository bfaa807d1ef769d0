"""Video for video QA: the public entry point, and clips built from camera frames.

The work is split by concern; every name stays importable from here:

- ``vision.video_clip``: ``VideoClip`` and ``VideoError``, token arithmetic, ``plan_sampling`` (which
  times to sample, at what size, under a token budget) and the prompt parts of a clip.
- ``vision.video_decode``: ``load_video`` (PyAV decoding of files and bytes) and the decoded-clip
  cache (``VideoCache``, ``default_cache``).
- this module: ``clip_from_frames`` and ``CameraFrameBuffer``, clips from frames that arrive one by one
  (camera frames over realtime).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from vision.sizing import VIDEO_MAX_PIXELS, VIDEO_MIN_PIXELS, ImageError, video_sizes
from vision.video_clip import (
    AUDIO_RATE,
    AUDIO_TOKENS_PER_S,
    DEFAULT_FPS,
    DEFAULT_MAX_FRAMES,
    DEFAULT_MIN_FRAMES,
    MAX_AUDIO_S,
    MIN_AUDIO_SAMPLES,
    PATCH_FACTOR,
    PROMPT_RESERVE_TOKENS,
    TEMPORAL_PATCH,
    VIDEO_BUDGET_SHARE,
    SamplingPlan,
    VideoClip,
    VideoError,
    even_frames,
    media_token_budget,
    ming_frame_size,
    plan_sampling,
    tokens_for,
    video_parts,
    video_question_messages,
)
from vision.video_decode import (
    SEEK_MIN_GAP_S,
    TRUNCATION_TOLERANCE_S,
    Source,
    VideoCache,
    default_cache,
    load_video,
)

__all__ = [
    "AUDIO_RATE",
    "AUDIO_TOKENS_PER_S",
    "DEFAULT_FPS",
    "DEFAULT_MAX_FRAMES",
    "DEFAULT_MIN_FRAMES",
    "MAX_AUDIO_S",
    "MIN_AUDIO_SAMPLES",
    "PROMPT_RESERVE_TOKENS",
    "SEEK_MIN_GAP_S",
    "TRUNCATION_TOLERANCE_S",
    "VIDEO_BUDGET_SHARE",
    "CameraFrameBuffer",
    "SamplingPlan",
    "Source",
    "VideoCache",
    "VideoClip",
    "VideoError",
    "clip_from_frames",
    "default_cache",
    "load_video",
    "media_token_budget",
    "ming_frame_size",
    "plan_sampling",
    "tokens_for",
    "video_parts",
    "video_question_messages",
]


# ----------------------------------------------------------------------------- frames already in hand
def clip_from_frames(
    frames: Sequence[np.ndarray | Any],
    timestamps: Sequence[float],
    *,
    audio: np.ndarray | None = None,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int = VIDEO_MAX_PIXELS,
    max_tokens: int | None = None,
) -> VideoClip:
    """Build a clip from frames that arrived one by one (camera frames over realtime).

    Frames may be numpy ``[H, W, 3]`` uint8 arrays or PIL images; they are resized to one common size
    (the latest frame's) the way Ming's video path resizes decoded frames. An odd count repeats the last frame so the temporal patches of 2 fill up.
    With ``max_tokens``, the oldest frames are dropped first (the latest view matters most live).

    Raises:
        VideoError: no frames, mismatched lengths or timestamps that go backwards.
    """
    from PIL import Image

    from vision.preprocess import resize_video_frame  # imports torch: not at module load (CLI --help)

    if not frames:
        raise VideoError("no frames")
    if len(frames) != len(timestamps):
        raise VideoError(f"{len(frames)} frames but {len(timestamps)} timestamps")
    ts = [float(t) for t in timestamps]
    if any(b < a for a, b in zip(ts, ts[1:], strict=False)):
        raise VideoError("frame timestamps must not go backwards")
    imgs = [f if isinstance(f, Image.Image) else Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    w0, h0 = imgs[-1].size
    note = None
    if len(imgs) % 2:
        imgs.append(imgs[-1])
        ts.append(ts[-1])
    try:
        fetched, (h, w) = video_sizes(h0, w0, len(imgs), min_pixels=min_pixels, max_pixels=max_pixels)
    except ImageError as e:
        raise VideoError(str(e)) from None
    if max_tokens is not None and tokens_for(len(imgs), h, w) > max_tokens:
        keep = even_frames(max_tokens // max(1, (h // PATCH_FACTOR) * (w // PATCH_FACTOR)) * TEMPORAL_PATCH)
        if keep < TEMPORAL_PATCH:
            raise VideoError(f"token budget {max_tokens} is too small for one frame group at {w}x{h}")
        note = f"kept the latest {keep} of {len(imgs)} frames (token budget {max_tokens})"
        imgs, ts = imgs[-keep:], ts[-keep:]
    arrays = [resize_video_frame(np.asarray(im.convert("RGB"), dtype=np.uint8), fetched, (h, w)) for im in imgs]
    hasher = hashlib.sha256()
    for a, t in zip(arrays, ts, strict=True):
        hasher.update(a.tobytes())
        hasher.update(repr(t).encode())
    duration = ts[-1] - ts[0]
    return VideoClip(frames=arrays, timestamps=[t - ts[0] for t in ts], audio=audio,
                     fps=(len(ts) - 1) / duration if duration > 0 else DEFAULT_FPS, duration=duration,
                     content_hash=hasher.hexdigest(), budget_note=note, source_size=(w0, h0))


class CameraFrameBuffer:
    """Camera frames streamed over realtime, kept as a sliding window of recent seconds.

    ``push`` takes an image and its capture time; ``clip()`` returns the window as a ``VideoClip``
    (sampled down to ``fps``), which the processor places like any video.
    """

    def __init__(self, *, window_s: float = 16.0, fps: float = DEFAULT_FPS, max_frames: int = 32) -> None:
        self.window_s = window_s
        self.fps = fps
        self.max_frames = max_frames
        self._items: list[tuple[float, Any]] = []

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        """Drop every buffered frame."""
        self._items.clear()

    def push(self, image: np.ndarray | Any, timestamp_s: float) -> None:
        """Add a frame captured at ``timestamp_s`` (seconds, client clock); frames out of order are dropped.

        Raises:
            VideoError: ``image`` is not an image.
        """
        if self._items and timestamp_s < self._items[-1][0]:
            return
        if not hasattr(image, "size") or (isinstance(image, np.ndarray) and image.ndim != 3):
            raise VideoError("camera frame must be an RGB image")
        # Keep at most one frame per 1/fps: the newest frame in each slot wins.
        if self._items and timestamp_s - self._items[-1][0] < 0.5 / self.fps:
            self._items[-1] = (timestamp_s, image)
        else:
            self._items.append((timestamp_s, image))
        horizon = timestamp_s - self.window_s
        while self._items and self._items[0][0] < horizon:
            self._items.pop(0)
        if len(self._items) > self.max_frames:
            del self._items[: len(self._items) - self.max_frames]

    def clip(self, *, max_tokens: int | None = None) -> VideoClip:
        """The buffered window as a clip (timestamps relative to its first frame).

        Raises:
            VideoError: the buffer is empty.
        """
        if not self._items:
            raise VideoError("no camera frames received yet")
        ts = [t for t, _ in self._items]
        clip = clip_from_frames([im for _, im in self._items], ts, max_tokens=max_tokens)
        clip.extra["start_s"] = ts[0]
        return clip
