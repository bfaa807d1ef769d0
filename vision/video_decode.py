"""Video decoding with PyAV, and a cache of decoded clips.

``load_video`` decodes a file or an in-memory byte stream in one streaming pass: it keeps only the
sampled frames (already resized to the size Ming's video path gives them, ``vision.sizing.video_sizes``,
so a long 4K video never sits in memory at full size) and the audio track resampled to 16 kHz mono.
Frames are sampled at ``fps`` (2 by default) within ``min_frames..max_frames``, always an even count;
where and at what size is planned first by ``vision.video_clip.plan_sampling`` (the token budget).
When the samples lie far apart the decoder seeks to a keyframe before each instead of decoding
every frame.

Decoded clips are cached by content hash and sampling options (``VideoCache``), so a session that
asks many questions about one video decodes it once.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, BinaryIO

import numpy as np

from vision.sizing import VIDEO_MAX_PIXELS, VIDEO_MIN_PIXELS
from vision.video_clip import (
    AUDIO_RATE,
    DEFAULT_FPS,
    DEFAULT_MAX_FRAMES,
    DEFAULT_MIN_FRAMES,
    VideoClip,
    VideoError,
    plan_sampling,
)

TRUNCATION_TOLERANCE_S = 0.5  # a stream may end this much before its declared duration (rounding, B-frames)


# ----------------------------------------------------------------------------- decoding
Source = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO


def _read_source(source: Source) -> tuple[bytes | None, str | None]:
    """-> (bytes, None) for in-memory sources, (None, path) for files."""
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source), None
    if hasattr(source, "read"):
        return source.read(), None  # type: ignore[union-attr]
    path = os.fspath(source)
    if not os.path.exists(path):
        raise VideoError(f"video file {path} does not exist")
    return None, path


def _hash_source(data: bytes | None, path: str | None) -> str:
    h = hashlib.sha256()
    if data is not None:
        h.update(data)
    else:
        assert path is not None
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _open(data: bytes | None, path: str | None):  # noqa: ANN202 - av container
    import av

    try:
        return av.open(io.BytesIO(data) if data is not None else path, mode="r")
    except av.error.FFmpegError as e:
        raise VideoError(f"cannot open the video: the file is corrupt, truncated or not a video ({e})") from None


def _stream_duration(container, stream) -> float | None:  # noqa: ANN001 - av types
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def _scan_duration(data: bytes | None, path: str | None) -> float | None:
    """Find the end time by reading packets only (no decoding) when the container does not say."""
    container = _open(data, path)
    try:
        stream = container.streams.video[0]
        end = None
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            t = float((packet.pts + (packet.duration or 0)) * stream.time_base)
            end = t if end is None else max(end, t)
        return end
    finally:
        container.close()


def _frame_time(frame, stream) -> float | None:  # noqa: ANN001 - av types
    if frame.pts is not None and stream.time_base is not None:
        return float(frame.pts * stream.time_base)
    return frame.time


SEEK_MIN_GAP_S = 8.0  # sample spacing from which seeking beats decoding every frame (typical GOPs: 2-10 s)


def _is_sparse(times: Sequence[float]) -> bool:
    return len(times) >= 2 and (times[-1] - times[0]) / (len(times) - 1) >= SEEK_MIN_GAP_S


def _sample_seeking(container, vstream, targets: list[float], take) -> tuple[int, float | None, Any, float]:  # noqa: ANN001
    """Take the frame on screen at each target time, seeking to a keyframe when the next one is far.

    Returns ``(frames decoded, last frame time, last frame, its time)``.
    """
    decoded = 0
    last_t: float | None = None
    prev, prev_t = None, 0.0  # the latest frame at or before the current target
    nxt, nxt_t = None, 0.0  # the first frame after it (already decoded)
    it = None
    for target in targets:
        if nxt is not None and nxt_t <= target + 1e-6:
            prev, prev_t, nxt = nxt, nxt_t, None
        if it is None or (nxt is None and target - (last_t or 0.0) > SEEK_MIN_GAP_S):
            # Jump to the keyframe at or before the target; decoding restarts there.
            container.seek(max(0, int(target / vstream.time_base)), stream=vstream, backward=True, any_frame=False)
            it = container.decode(vstream)
            prev, nxt = None, None
        while nxt is None:
            frame = next(it, None)
            if frame is None:
                break  # end of stream: the last frame stays on screen
            t = _frame_time(frame, vstream)
            t = t if t is not None else (last_t or 0.0)
            decoded += 1
            last_t = t if last_t is None else max(last_t, t)
            if t <= target + 1e-6 or prev is None and t < target:
                prev, prev_t = frame, t
            elif prev is None:
                prev, prev_t = frame, t  # the seek landed past the target: the closest frame there is
            else:
                nxt, nxt_t = frame, t
        if prev is None:
            raise VideoError("video stream has no decodable frames (corrupt or truncated?)")
        take(prev, prev_t)
    return decoded, last_t, prev, prev_t


def _decode_audio(data: bytes | None, path: str | None, start: float) -> tuple[list[np.ndarray], float]:
    """The audio track alone (for the seeking path): 16 kHz mono chunks and where the audio ends."""
    import av

    container = _open(data, path)
    chunks: list[np.ndarray] = []
    end = 0.0
    try:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        for frame in container.decode(container.streams.audio[0]):
            if frame.time is not None and frame.sample_rate:
                end = max(end, frame.time + frame.samples / frame.sample_rate - start)
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
        chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    finally:
        container.close()
    return chunks, end


def _tail_end(container, start: float, duration: float) -> float | None:  # noqa: ANN001
    """End time of the last packets (read, not decoded) near the declared end: finds cut files cheaply."""
    tail = max(0.0, start + duration - 5.0)
    try:
        container.seek(int(tail * 1_000_000), backward=True, any_frame=False)  # AV_TIME_BASE units
        end = None
        for packet in container.demux():
            if packet.pts is None or packet.time_base is None:
                continue
            t = float((packet.pts + (packet.duration or 0)) * packet.time_base)
            end = t if end is None else max(end, t)
        return end
    except Exception:  # noqa: BLE001 - any failure here only disables the truncation check
        return None


def load_video(
    source: Source,
    *,
    fps: float = DEFAULT_FPS,
    min_frames: int = DEFAULT_MIN_FRAMES,
    max_frames: int = DEFAULT_MAX_FRAMES,
    max_tokens: int | None = None,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int = VIDEO_MAX_PIXELS,
    budget_min_pixels: int | None = None,
    audio: bool = True,
    seek: bool | None = None,
) -> VideoClip:
    """Decode, sample and resize a video (file path, bytes or binary file object).

    Args:
        source: a path, raw bytes (a whole mp4/webm/mkv file) or a readable binary file object.
        fps: sampling rate in frames per second of video time.
        min_frames: fewest frames to sample (short videos are sampled more densely).
        max_frames: most frames to sample (long videos are sampled more sparsely).
        max_tokens: vision-token budget for the clip; None for no budget beyond ``max_frames``.
        min_pixels: smallest frame area after resizing (Ming's video floor, 100,352).
        max_pixels: largest frame area after resizing (Ming's 602,112; less for many frames).
        budget_min_pixels: how far the budget may lower the resolution (default ``min_pixels``).
        audio: also decode the audio track (16 kHz mono).
        seek: jump between sample times instead of decoding every frame; None decides by the spacing
            of the samples (seeking pays off when they are ``SEEK_MIN_GAP_S`` or more apart).

    Returns:
        The sampled clip; see ``VideoClip``.

    Raises:
        VideoError: empty, corrupt, truncated or audio-only input, or impossible options.
    """
    import time

    import av

    data, path = _read_source(source)
    if data is not None and not data or path is not None and os.path.getsize(path) == 0:
        raise VideoError("video is empty (0 bytes)")
    t0 = time.perf_counter()
    options = (fps, min_frames, max_frames, max_tokens, min_pixels, max_pixels, budget_min_pixels, audio)
    content_hash = hashlib.sha256(f"{_hash_source(data, path)}|{options!r}".encode()).hexdigest()

    container = _open(data, path)
    try:
        if not container.streams.video:
            kinds = "audio only" if container.streams.audio else "no streams"
            raise VideoError(f"no video stream in this file ({kinds})")
        vstream = container.streams.video[0]
        vstream.thread_type = "AUTO"
        src_w, src_h = vstream.codec_context.width, vstream.codec_context.height
        if not src_w or not src_h:
            raise VideoError("video stream has no frame size (corrupt header?)")
        duration = _stream_duration(container, vstream)
        start = float(vstream.start_time * vstream.time_base) if vstream.start_time is not None else 0.0
        if duration is None:
            container.close()
            duration = _scan_duration(data, path)
            if duration is None:
                raise VideoError("video stream has no timestamps (corrupt?)")
            duration -= start
            container = _open(data, path)
            vstream = container.streams.video[0]
            vstream.thread_type = "AUTO"
        plan = plan_sampling(duration, src_w, src_h, fps=fps, min_frames=min_frames, max_frames=max_frames,
                             max_tokens=max_tokens, min_pixels=min_pixels, max_pixels=max_pixels,
                             budget_min_pixels=budget_min_pixels)
        astream = container.streams.audio[0] if (audio and container.streams.audio) else None
        targets = [start + t for t in plan.times]

        frames: list[np.ndarray] = []
        stamps: list[float] = []
        audio_chunks: list[np.ndarray] = []
        resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE) if astream else None
        prev = None  # the latest decoded frame: the one on screen until the next one starts
        prev_t = 0.0
        decoded = 0
        last_t: float | None = None
        audio_end = 0.0

        def take(frame, t: float) -> None:  # noqa: ANN001 - av frame
            rgb = frame.reformat(width=plan.width, height=plan.height, format="rgb24").to_ndarray()
            frames.append(rgb)
            stamps.append(round(t - start, 6))

        use_seek = seek if seek is not None else _is_sparse(plan.times)
        streams = [vstream] + ([astream] if astream is not None else [])
        try:
            if use_seek:
                decoded, last_t, prev, prev_t = _sample_seeking(container, vstream, targets, take)
                if astream is not None:
                    audio_chunks, audio_end = _decode_audio(data, path, start)
                streams = []  # everything is decoded; the demux loop below has nothing to do
                end_t = _tail_end(container, start, duration)
                if end_t is not None:
                    last_t = max(last_t or 0.0, end_t - 1.0 / float(vstream.average_rate or 25))
                    audio_end = max(audio_end, end_t - start)
            for packet in container.demux(*streams) if streams else ():
                for frame in packet.decode():
                    if packet.stream.type == "audio":
                        if frame.time is not None and frame.sample_rate:
                            audio_end = max(audio_end, frame.time + frame.samples / frame.sample_rate - start)
                        for out in resampler.resample(frame):
                            audio_chunks.append(out.to_ndarray().reshape(-1))
                        continue
                    t = _frame_time(frame, vstream)
                    if t is None:
                        t = prev_t + (1.0 / float(vstream.average_rate or 25))
                    decoded += 1
                    last_t = t
                    # Every target before this frame's time is shown by the previous frame.
                    while len(frames) < len(targets) and targets[len(frames)] < t - 1e-6 and prev is not None:
                        take(prev, prev_t)
                    prev, prev_t = frame, t
        except av.error.FFmpegError as e:
            raise VideoError(f"video data is corrupt or truncated: {e}") from None
        if resampler is not None and not use_seek:
            for out in resampler.resample(None):
                audio_chunks.append(out.to_ndarray().reshape(-1))
        if decoded == 0 or prev is None:
            raise VideoError("video stream has no decodable frames (corrupt or truncated?)")
        end = last_t - start + (1.0 / float(vstream.average_rate or 25))
        # A cut file stops every stream early; a video track shorter than its audio is not an error.
        if max(end, audio_end) < duration - TRUNCATION_TOLERANCE_S:
            raise VideoError(f"video is truncated: frames stop at {end:.2f} s of a declared {duration:.2f} s")
        while len(frames) < len(targets):
            take(prev, prev_t)  # targets after the last frame's start: it stays on screen
        source_fps = float(vstream.average_rate) if vstream.average_rate else None
    finally:
        container.close()

    wave = np.concatenate(audio_chunks).astype(np.float32) if audio_chunks else None
    return VideoClip(
        frames=frames, timestamps=stamps, audio=wave, fps=plan.fps, duration=duration,
        content_hash=content_hash, budget_note=plan.note, source_fps=source_fps, source_size=(src_w, src_h),
        frames_decoded=decoded, decode_s=time.perf_counter() - t0,
    )


# ----------------------------------------------------------------------------- decoded-clip cache
class VideoCache:
    """LRU cache of decoded clips keyed by source content hash and sampling options.

    Later questions about a video skip decoding. Thread-safe; decoding of one key is not
    deduplicated across threads (a rare double decode is cheaper than a lock held during decode).
    """

    def __init__(self, max_items: int = 16) -> None:
        self.max_items = max_items
        self._items: OrderedDict[str, VideoClip] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(source_hash: str, **options: Any) -> str:
        """Cache key from the source bytes' sha256 and the ``load_video`` options."""
        return f"{source_hash}|{sorted(options.items())!r}"

    def get(self, key: str) -> VideoClip | None:
        """The cached clip for ``key``, or None."""
        with self._lock:
            clip = self._items.get(key)
            if clip is not None:
                self._items.move_to_end(key)
                self.hits += 1
            else:
                self.misses += 1
            return clip

    def put(self, key: str, clip: VideoClip) -> None:
        """Store ``clip``, evicting the least recently used beyond ``max_items``."""
        with self._lock:
            self._items[key] = clip
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def load(self, source: Source, **options: Any) -> tuple[VideoClip, bool]:
        """``load_video`` through the cache -> (clip, was_cached).

        Raises:
            VideoError: as ``load_video``.
        """
        data, path = _read_source(source)
        key = self.key(_hash_source(data, path), **options)
        clip = self.get(key)
        if clip is not None:
            return clip, True
        clip = load_video(data if data is not None else path, **options)  # type: ignore[arg-type]
        self.put(key, clip)
        return clip, False


_DEFAULT_CACHE = VideoCache()


def default_cache() -> VideoCache:
    """The process-wide decoded-clip cache (shared by the files API, chat and realtime)."""
    return _DEFAULT_CACHE
