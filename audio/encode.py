"""Encode 24 kHz mono float PCM for the speech endpoint, incrementally, in OpenAI's formats.

``pcm`` is raw signed 16-bit little-endian samples; ``wav`` is that behind a RIFF header (streamed:
the sizes are 0xFFFFFFFF, as OpenAI's streamed WAV; whole: the real sizes); ``mp3`` (LAME),
``opus`` (Ogg Opus), ``aac`` (ADTS) and ``flac`` are encoded by PyAV's FFmpeg as the audio arrives.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import numpy as np

from audio.dsp import float_to_int16, float_to_pcm16_bytes

MEDIA_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac",
               "wav": "audio/wav", "pcm": "audio/pcm"}
_AV = {"mp3": ("mp3", "libmp3lame", {}), "opus": ("ogg", "libopus", {"page_duration": "100000"}),
       "aac": ("adts", "aac", {}), "flac": ("flac", "flac", {})}  # container, codec, muxer options


class EncodeError(ValueError):
    """An output format this build cannot write."""


def wav_header(rate: int, n_samples: int | None) -> bytes:
    """A 44-byte PCM16 mono RIFF header; ``n_samples`` None writes the streaming sizes 0xFFFFFFFF."""
    data = 0xFFFFFFFF if n_samples is None else 2 * n_samples
    riff = 0xFFFFFFFF if n_samples is None else 36 + data
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, 2 * rate, 2, 16)
            + b"data" + struct.pack("<I", data))


class _Sink(io.RawIOBase):
    """A write-only file for PyAV; ``take()`` returns what was written since the last call."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.parts.append(bytes(b))
        return len(b)

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


class StreamEncoder:
    """``push(pcm) -> bytes`` as audio arrives, ``finish() -> bytes`` for the tail.

    Args:
        fmt: one of ``MEDIA_TYPES``.
        rate: sample rate of the pushed audio.

    Raises:
        EncodeError: an unknown format, or an encoder missing from PyAV's FFmpeg.
    """

    def __init__(self, fmt: str, rate: int = 24000):
        if fmt not in MEDIA_TYPES:
            raise EncodeError(f"unknown audio format {fmt!r} (one of {', '.join(MEDIA_TYPES)})")
        self.fmt, self.rate = fmt, rate
        self._header = fmt == "wav"
        self._container = None
        if fmt in _AV:
            import av

            container, codec, options = _AV[fmt]
            if codec not in av.codecs_available:
                raise EncodeError(f"response_format {fmt}: this PyAV build has no {codec} encoder")
            self._sink = _Sink()
            self._container = av.open(self._sink, mode="w", format=container, options=options)
            self._stream = self._container.add_stream(codec, rate=rate)
            self._stream.layout = "mono"

    def push(self, pcm: np.ndarray) -> bytes:
        s16 = float_to_int16(pcm)
        if self.fmt in ("wav", "pcm"):
            head = wav_header(self.rate, None) if self._header else b""
            self._header = False
            return head + s16.tobytes()
        if s16.size:
            import av

            frame = av.AudioFrame.from_ndarray(s16[None], format="s16", layout="mono")
            frame.sample_rate = self.rate
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        return self._sink.take()

    def finish(self) -> bytes:
        if self.fmt in ("wav", "pcm"):
            return self.push(np.zeros(0, np.float32))  # a header even for no audio
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self.close()
        return self._sink.take()

    def close(self) -> None:
        """Release the encoder (after ``finish``, or instead of it when the stream is abandoned)."""
        if self._container is not None:
            self._container.close()
            self._container = None
            self._header = False


def encode_all(pcm: np.ndarray, fmt: str, rate: int = 24000) -> bytes:
    """The whole audio in one format (``wav`` with its real sizes)."""
    if fmt == "wav":
        return wav_header(rate, len(pcm)) + float_to_pcm16_bytes(pcm)
    enc = StreamEncoder(fmt, rate)
    return enc.push(pcm) + enc.finish()
