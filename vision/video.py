"""Video decoding, frame sampling and time alignment for video QA.

``load_video`` decodes a file or an in-memory byte stream with PyAV in one streaming pass: it keeps
only the sampled frames (already resized to the size Ming's video path gives them,
``vision.sizing.video_sizes``, so a long 4K video never sits in memory at full size) and the audio track resampled to 16 kHz mono. Frames are sampled at ``fps``
(2 by default) within ``min_frames..max_frames``, always an even count so that they group into the
vision encoder's temporal patches of 2; each group's start time becomes its MRoPE time id through
``VideoClip.second_per_grid``.

A token budget (``max_tokens``) is applied in this order: the sampling rate is first capped by
``max_frames`` (fewer frames per second, still spanning the whole video), then the resolution is
lowered down to ``budget_min_pixels``, then frames are dropped (a lower rate again) down to
``min_frames``. Whatever was applied is written to ``VideoClip.budget_note`` for the user.

Decoded clips are cached by content hash and sampling options (``VideoCache``), so a session that
asks many questions about one video decodes it once.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from vision.sizing import FACTOR as PATCH_FACTOR  # 14 px patches merged 2x2 -> one token per 28x28 px
from vision.sizing import TEMPORAL as TEMPORAL_PATCH  # 2 consecutive frames fold into one patch (a group)
from vision.sizing import VIDEO_MAX_PIXELS, VIDEO_MIN_PIXELS, ImageError, smart_resize, video_sizes

DEFAULT_FPS = 2.0
DEFAULT_MIN_FRAMES = 4
DEFAULT_MAX_FRAMES = 128
AUDIO_RATE = 16000  # the audio encoder's input rate
TRUNCATION_TOLERANCE_S = 0.5  # a stream may end this much before its declared duration (rounding, B-frames)


class VideoError(ValueError):
    """A video that cannot be used, with a message that says why (empty, corrupt, truncated, no video)."""


@dataclass
class VideoClip:
    """Sampled, resized frames of one video plus its audio track, ready for the processor.

    Attributes:
        frames: ``N`` frames, each ``[H, W, 3]`` uint8 RGB, all the same size (sides multiples of 28);
            ``N`` is even (temporal patches of 2).
        timestamps: presentation time in seconds of each frame, increasing.
        audio: the audio track as 16 kHz mono float32, or None when the video has none.
        fps: the sampling rate actually used (frames per second of video time).
        duration: length of the video in seconds.
        content_hash: sha256 over the source bytes and the sampling options; equal hashes mean equal
            frames, so the engine's prefix cache can key on it.
        budget_note: what the token budget changed (fps, resolution, frame count), or None.
        source_fps: the container's average frame rate, when known.
        source_size: ``(width, height)`` of the source frames.
    """

    frames: list[np.ndarray]
    timestamps: list[float]
    audio: np.ndarray | None
    fps: float
    duration: float
    content_hash: str
    budget_note: str | None = None
    source_fps: float | None = None
    source_size: tuple[int, int] = (0, 0)
    frames_decoded: int = 0
    """How many frames the decoder produced to sample these (for decode speed figures)."""
    decode_s: float = 0.0
    """Wall time spent decoding, seconds."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_groups(self) -> int:
        """Number of temporal patches (frame groups) the vision encoder will see."""
        return len(self.frames) // TEMPORAL_PATCH

    @property
    def group_timestamps(self) -> list[float]:
        """Start time in seconds of each frame group (the first frame of each pair)."""
        return [self.timestamps[i] for i in range(0, TEMPORAL_PATCH * self.num_groups, TEMPORAL_PATCH)]

    @property
    def second_per_grid(self) -> float:
        """Seconds between consecutive frame groups (the processor's ``second_per_grid``)."""
        g = self.group_timestamps
        if len(g) >= 2:
            return float((g[-1] - g[0]) / (len(g) - 1))
        return TEMPORAL_PATCH / self.fps if self.fps > 0 else 1.0

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the sampled frames."""
        if not self.frames:
            return (0, 0)
        h, w = self.frames[0].shape[:2]
        return (w, h)

    @property
    def num_tokens(self) -> int:
        """Vision tokens this clip expands to: groups x (H/28) x (W/28)."""
        w, h = self.size
        return self.num_groups * (h // PATCH_FACTOR) * (w // PATCH_FACTOR)


# ----------------------------------------------------------------------------- sizes and budget
def _smart_resize(h: int, w: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The resize rule (``vision.sizing.smart_resize``) with video errors."""
    try:
        return smart_resize(h, w, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    except ImageError as e:
        raise VideoError(str(e)) from None


def ming_frame_size(h: int, w: int, num_frames: int, min_pixels: int = VIDEO_MIN_PIXELS,
                    max_pixels: int = VIDEO_MAX_PIXELS) -> tuple[int, int]:
    """The size Ming's video path gives ``num_frames`` frames of h x w (``vision.sizing.video_sizes``)."""
    try:
        return video_sizes(h, w, num_frames, min_pixels=min_pixels, max_pixels=max_pixels)[1]
    except ImageError as e:
        raise VideoError(str(e)) from None


def _floor_size(h: int, w: int, floor_pixels: int) -> tuple[int, int]:
    """Smallest size with the source's aspect, sides multiples of 28 and at least ``floor_pixels``.

    The processor uses a ``VideoClip``'s frames at the size they have, so a budgeted size stays.
    """
    beta = math.sqrt(floor_pixels / (h * w))
    return (max(PATCH_FACTOR, math.ceil(h * beta / PATCH_FACTOR) * PATCH_FACTOR),
            max(PATCH_FACTOR, math.ceil(w * beta / PATCH_FACTOR) * PATCH_FACTOR))


def tokens_for(num_frames: int, height: int, width: int) -> int:
    """Vision tokens of ``num_frames`` frames of ``height x width`` (sides multiples of 28)."""
    return (num_frames // TEMPORAL_PATCH) * (height // PATCH_FACTOR) * (width // PATCH_FACTOR)


@dataclass(frozen=True)
class SamplingPlan:
    """Where to sample and at what size, decided before decoding."""

    times: list[float]
    height: int
    width: int
    fps: float
    note: str | None


def _even(n: int) -> int:
    return n - (n % TEMPORAL_PATCH)


def plan_sampling(
    duration: float,
    src_w: int,
    src_h: int,
    *,
    fps: float = DEFAULT_FPS,
    min_frames: int = DEFAULT_MIN_FRAMES,
    max_frames: int = DEFAULT_MAX_FRAMES,
    max_tokens: int | None = None,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int = VIDEO_MAX_PIXELS,
    budget_min_pixels: int | None = None,
) -> SamplingPlan:
    """Choose sample times and frame size for a video of ``duration`` seconds.

    Frames are taken at ``k / fps`` (k = 0, 1, ...) while inside the video, an even count within
    ``min_frames..max_frames``; outside that range they are spread evenly over the whole video.
    With ``max_tokens`` the resolution is lowered first (down to ``budget_min_pixels``), then frames.

    Raises:
        VideoError: bad options, or a budget that even ``min_frames`` at the smallest size exceeds.
    """
    if fps <= 0:
        raise VideoError(f"fps must be positive, got {fps}")
    min_frames = max(TEMPORAL_PATCH, _even(min_frames + 1) if min_frames % 2 else min_frames)
    max_frames = _even(max_frames)
    if max_frames < min_frames:
        raise VideoError(f"max_frames ({max_frames}) is below min_frames ({min_frames})")
    duration = max(duration, 1e-3)
    notes: list[str] = []

    natural = max(1, math.ceil(duration * fps - 1e-6))  # frames at k/fps strictly inside the video
    n = _even(natural) if natural >= min_frames else min_frames
    uniform = False
    if n > max_frames:
        n, uniform = max_frames, True
        notes.append(f"sampled {n} frames at {n / duration:.3g} fps instead of {fps:g} fps "
                     f"(max {max_frames} frames)")
    elif natural < min_frames:
        uniform = True  # a very short video: min_frames spread over it

    # Ming's frame size for n frames (its per-frame cap falls when there are many frames).
    h, w = ming_frame_size(src_h, src_w, n, min_pixels, max_pixels)
    if max_tokens is not None:
        floor_pixels = budget_min_pixels if budget_min_pixels is not None else min_pixels
        floor_pixels = max(PATCH_FACTOR * PATCH_FACTOR, min(floor_pixels, h * w))
        if tokens_for(n, h, w) > max_tokens:
            # 1) lower the resolution: per-group token allowance, floored.
            per_group = max_tokens / max(1, n // TEMPORAL_PATCH)
            target = max(floor_pixels, min(h * w, int(per_group * PATCH_FACTOR * PATCH_FACTOR)))
            while True:  # bounded: target falls by 10% a step until the floor
                nh, nw = _smart_resize(src_h, src_w, PATCH_FACTOR, min(floor_pixels, target), target)
                if nh * nw < floor_pixels:  # rounding went under the floor: the floor size itself
                    nh, nw = _floor_size(src_h, src_w, floor_pixels)
                    break
                if tokens_for(n, nh, nw) <= max_tokens or target <= floor_pixels:
                    break
                target = max(floor_pixels, int(target * 0.9))
            if (nh, nw) != (h, w):
                notes.append(f"resolution lowered from Ming's {w}x{h} to {nw}x{nh}")
                h, w = nh, nw
            # 2) fewer frames (a lower rate over the whole video).
            if tokens_for(n, h, w) > max_tokens:
                per_group_tokens = (h // PATCH_FACTOR) * (w // PATCH_FACTOR)
                fit = _even((max_tokens // per_group_tokens) * TEMPORAL_PATCH)
                if fit < min_frames:
                    raise VideoError(
                        f"token budget {max_tokens} is too small: {min_frames} frames at {w}x{h} "
                        f"need {tokens_for(min_frames, h, w)} tokens")
                notes.append(f"frames reduced from {n} to {fit} ({fit / duration:.3g} fps)")
                n, uniform = fit, True
            notes.append(f"video uses {tokens_for(n, h, w)} of {max_tokens} budgeted tokens")

    if uniform:
        step = duration / n
        times = [k * step for k in range(n)]
        used_fps = n / duration
    else:
        times = [k / fps for k in range(n)]
        used_fps = fps
    return SamplingPlan(times=times, height=h, width=w, fps=used_fps, note="; ".join(notes) or None)


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


# ----------------------------------------------------------------------------- prompt parts
MAX_AUDIO_S = 300.0  # the audio encoder runs without Whisper's 30 s padding up to about 300 s
MIN_AUDIO_SAMPLES = 640  # one 25 Hz audio token (40 ms at 16 kHz)


AUDIO_TOKENS_PER_S = 25  # the audio encoder's output rate
VIDEO_BUDGET_SHARE = 0.75  # of a session's token budget, what the frames may take (the rest: audio)
PROMPT_RESERVE_TOKENS = 1024  # room left in the context for the question, the audio and the answer


def media_token_budget(max_model_len: int, reserve: int = PROMPT_RESERVE_TOKENS) -> int:
    """Media tokens (video plus audio) a clip may use in a context of ``max_model_len`` tokens."""
    return max(256, int(max_model_len) - reserve)


def video_parts(clip: VideoClip, *, with_audio: bool = True, max_audio_s: float = MAX_AUDIO_S,
                max_tokens: int | None = None) -> list[dict]:
    """Processor content parts for a clip: the video, then its audio track (so questions can use speech).

    Put these before the question text: the video's tokens then form a prefix that every later
    question about the same clip shares (the engine reuses its KV cache and encoder output).

    Args:
        clip: the decoded clip.
        with_audio: add the audio track as an ``audio`` part when the clip has one.
        max_audio_s: longer audio tracks are cut to their first ``max_audio_s`` seconds.
        max_tokens: budget for video plus audio tokens; the audio is cut to what the video leaves
            (25 tokens per second) and left out when nothing is left.
    """
    parts: list[dict] = [{"type": "video", "video": clip}]
    if not with_audio or clip.audio is None:
        return parts
    keep_s = max_audio_s
    if max_tokens is not None:
        keep_s = min(keep_s, (max_tokens - clip.num_tokens) / AUDIO_TOKENS_PER_S)
    audio = clip.audio[: max(0, int(keep_s * AUDIO_RATE))]
    if audio.size >= MIN_AUDIO_SAMPLES:
        parts.append({"type": "audio", "audio": audio})
    return parts


def video_question_messages(clip: VideoClip, question: str, *, with_audio: bool = True,
                            system: str | None = None, max_tokens: int | None = None) -> list[dict]:
    """Chat messages asking ``question`` about ``clip`` (video and audio first, question last).

    ``max_tokens`` budgets video plus audio tokens (see ``video_parts``).
    """
    messages: list[dict] = [{"role": "system", "content": system}] if system else []
    content = [*video_parts(clip, with_audio=with_audio, max_tokens=max_tokens), {"type": "text", "text": question}]
    messages.append({"role": "user", "content": content})
    return messages


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
        keep = _even(max_tokens // max(1, (h // PATCH_FACTOR) * (w // PATCH_FACTOR)) * TEMPORAL_PATCH)
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
