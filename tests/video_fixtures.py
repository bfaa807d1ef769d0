"""Test videos drawn with PyAV: moving shapes, a known frame count and rate, a tone or speech track.

Every frame carries its own index: the top quarter is a flat grey of ``code_for(i)``, so a test can
tell which source frame was sampled, and a white square moves left to right along the bottom.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

CODE_STEP = 6  # grey levels between consecutive frame codes (lossy codecs drift by 1-3 levels)


def code_for(index: int) -> int:
    """Grey level of frame ``index``'s top band (cycles every 40 frames)."""
    return 10 + (index % 40) * CODE_STEP


def index_from_frame(frame: np.ndarray, n_frames: int) -> int:
    """Recover the frame index (modulo 40) from a decoded (maybe resized) frame."""
    h = frame.shape[0]
    band = frame[1 : max(2, h // 4 - 2), 2:-2].astype(np.float32).mean()
    return int(round((band - 10) / CODE_STEP)) % 40


def draw_frame(index: int, n_frames: int, width: int, height: int) -> np.ndarray:
    """RGB frame ``index``: grey code band on top, a moving white square below, dark background."""
    img = np.full((height, width, 3), 40, dtype=np.uint8)
    img[: height // 4] = code_for(index)
    side = max(4, height // 4)
    x = int((width - side) * index / max(1, n_frames - 1))
    y = height // 2
    img[y : y + side, x : x + side] = 255
    img[y : y + side, x : x + side, 0] = 200 + (index * 13) % 56  # a colour cue as well
    return img


def tone(seconds: float, rate: int = 48000, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    """A sine tone as float32 mono."""
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def speech(text: str, rate: int = 48000) -> np.ndarray:
    """``text`` spoken by espeak-ng, float32 mono at ``rate`` (falls back to a tone without espeak-ng)."""
    import soundfile as sf

    from audio.dsp import resample

    exe = shutil.which("espeak-ng")
    if exe is None:
        return tone(1.5, rate)
    with tempfile.TemporaryDirectory() as d:
        wav = Path(d) / "s.wav"
        subprocess.run([exe, "-w", str(wav), text], check=True, capture_output=True)
        wave, sr = sf.read(wav, dtype="float32", always_2d=True)
    return resample(wave.mean(axis=1), sr, rate)


CODECS = {  # container -> (video encoder, audio encoder, pixel format)
    "mp4": ("libx264", "aac", "yuv420p"),
    "webm": ("libvpx-vp9", "libopus", "yuv420p"),
    "mkv": ("libx264", "aac", "yuv420p"),
}


def encoder_available(name: str) -> bool:
    """Whether this PyAV build can encode with ``name``."""
    import av

    try:
        av.codec.Codec(name, "w")
    except Exception:
        return False
    return True


def make_video(
    *,
    seconds: float = 3.0,
    fps: int = 10,
    width: int = 96,
    height: int = 64,
    container: str = "mp4",
    video_codec: str | None = None,
    audio: str | np.ndarray | None = "tone",
    audio_rate: int = 48000,
    path: str | Path | None = None,
    gop: int | None = None,
) -> bytes:
    """Encode a test video and return its bytes (also written to ``path`` when given).

    Args:
        seconds: length; the video has ``round(seconds * fps)`` frames, frame i at ``i / fps`` s.
        fps: frame rate.
        width: frame width (even).
        height: frame height (even).
        container: ``mp4``, ``webm`` or ``mkv``.
        video_codec: encoder name; default per container (h264 for mp4/mkv, vp9 for webm).
        audio: ``"tone"``, ``"speech:<text>"``, a float32 wave at ``audio_rate``, or None.
        audio_rate: sample rate of the audio track.
        path: where to write the file as well.
        gop: keyframe interval in frames (default: the encoder's).
    """
    import av

    vcodec, acodec, pix_fmt = CODECS[container]
    vcodec = video_codec or vcodec
    n = int(round(seconds * fps))
    buf = io.BytesIO()
    out = av.open(buf, mode="w", format={"mkv": "matroska"}.get(container, container))
    vs = out.add_stream(vcodec, rate=fps)
    vs.width, vs.height, vs.pix_fmt = width, height, pix_fmt
    vs.time_base = Fraction(1, fps)
    opts = {}
    if vcodec == "libx264":
        opts = {"preset": "ultrafast", "tune": "zerolatency", "crf": "18"}
    elif vcodec.startswith("libvpx"):
        opts = {"deadline": "realtime", "cpu-used": "8", "crf": "20", "b": "0"}
    if gop:
        vs.codec_context.gop_size = gop
    vs.options = opts
    wave = None
    if isinstance(audio, np.ndarray):
        wave = audio.astype(np.float32)
    elif audio == "tone":
        wave = tone(seconds, audio_rate)
    elif isinstance(audio, str) and audio.startswith("speech:"):
        wave = speech(audio.split(":", 1)[1], audio_rate)
    as_ = None
    if wave is not None:
        as_ = out.add_stream(acodec, rate=audio_rate)
        as_.layout = "mono"
    for i in range(n):
        frame = av.VideoFrame.from_ndarray(draw_frame(i, n, width, height), format="rgb24")
        frame.pts = i
        frame.time_base = Fraction(1, fps)
        for packet in vs.encode(frame):
            out.mux(packet)
    for packet in vs.encode(None):
        out.mux(packet)
    if as_ is not None:
        _encode_audio(out, as_, wave, audio_rate)
    out.close()
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data


def _encode_audio(out, stream, wave: np.ndarray, rate: int) -> None:  # noqa: ANN001 - av types
    import av

    fmt = stream.codec_context.format.name if stream.codec_context.format else "fltp"
    frame_size = stream.codec_context.frame_size or 1024
    pts = 0
    for start in range(0, len(wave), frame_size):
        chunk = wave[start : start + frame_size]
        if len(chunk) < frame_size:
            chunk = np.pad(chunk, (0, frame_size - len(chunk)))
        if fmt == "s16":
            arr = (np.clip(chunk, -1, 1) * 32767).astype(np.int16)[None, :]
        elif fmt == "s16p":
            arr = (np.clip(chunk, -1, 1) * 32767).astype(np.int16)[None, :]
        else:
            arr = chunk[None, :].astype(np.float32)
        frame = av.AudioFrame.from_ndarray(arr, format=fmt, layout="mono")
        frame.sample_rate = rate
        frame.pts = pts
        frame.time_base = Fraction(1, rate)
        pts += frame_size
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)


def make_audio_only(seconds: float = 2.0, container: str = "mp4") -> bytes:
    """A container with an audio track and no video (an error case for ``load_video``)."""
    import av

    buf = io.BytesIO()
    out = av.open(buf, mode="w", format=container)
    stream = out.add_stream("aac" if container == "mp4" else "libopus", rate=48000)
    stream.layout = "mono"
    _encode_audio(out, stream, tone(seconds), 48000)
    out.close()
    return buf.getvalue()
