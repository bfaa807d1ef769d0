"""The video clip type and its token arithmetic: what a clip holds, what it costs, how it enters a prompt.

``VideoClip`` is what every video source produces (``vision.video_decode.load_video`` for files,
``vision.video.clip_from_frames`` for camera frames) and what the processor reads. Its frames are
grouped in pairs, the vision encoder's temporal patches; each group's start time becomes its MRoPE
time id through ``VideoClip.second_per_grid``.

``plan_sampling`` decides, before anything is decoded, which times to sample and at what size.
A token budget (``max_tokens``) is applied in this order: the sampling rate is first capped by
``max_frames`` (fewer frames per second, still spanning the whole video), then the resolution is
lowered down to ``budget_min_pixels``, then frames are dropped (a lower rate again) down to
``min_frames``. Whatever was applied is written to ``SamplingPlan.note`` (``VideoClip.budget_note``).

``video_parts`` and ``video_question_messages`` turn a clip into processor content parts, cutting its
audio track to what the budget leaves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vision.sizing import FACTOR as PATCH_FACTOR  # 14 px patches merged 2x2 -> one token per 28x28 px
from vision.sizing import TEMPORAL as TEMPORAL_PATCH  # 2 consecutive frames fold into one patch (a group)
from vision.sizing import VIDEO_MAX_PIXELS, VIDEO_MIN_PIXELS, ImageError, smart_resize, video_sizes

DEFAULT_FPS = 2.0
DEFAULT_MIN_FRAMES = 4
DEFAULT_MAX_FRAMES = 128
AUDIO_RATE = 16000  # the audio encoder's input rate


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


def even_frames(n: int) -> int:
    """``n`` rounded down to whole temporal patches (pairs of frames)."""
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
    min_frames = max(TEMPORAL_PATCH, even_frames(min_frames + 1) if min_frames % 2 else min_frames)
    max_frames = even_frames(max_frames)
    if max_frames < min_frames:
        raise VideoError(f"max_frames ({max_frames}) is below min_frames ({min_frames})")
    duration = max(duration, 1e-3)
    notes: list[str] = []

    natural = max(1, math.ceil(duration * fps - 1e-6))  # frames at k/fps strictly inside the video
    n = even_frames(natural) if natural >= min_frames else min_frames
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
                fit = even_frames((max_tokens // per_group_tokens) * TEMPORAL_PATCH)
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
