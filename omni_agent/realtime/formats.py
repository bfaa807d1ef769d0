"""Wire audio formats: base64 pcm16 24 kHz, G.711 mu-law / A-law 8 kHz <-> float32 waves."""

from __future__ import annotations

import base64
import binascii

import numpy as np

from audio.dsp import (
    AudioError,
    alaw_decode,
    alaw_encode,
    float_to_pcm16_bytes,
    mulaw_decode,
    mulaw_encode,
    pcm16_bytes_to_float,
    resample,
)
from omni_agent.realtime.events import ProtocolError

FORMAT_RATE = {"pcm16": 24000, "g711_ulaw": 8000, "g711_alaw": 8000}  # fixed by the protocol
BYTES_PER_SAMPLE = {"pcm16": 2, "g711_ulaw": 1, "g711_alaw": 1}


def b64decode_strict(data: str, event_id: str | None = None, param: str = "audio") -> bytes:
    """Strict base64 (no stray characters); a bad string is a ``ProtocolError('invalid_base64')``."""
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ProtocolError("invalid_base64", f"{param} is not valid base64: {e}", event_id, param) from None


def decode_audio(raw: bytes, fmt: str, event_id: str | None = None) -> np.ndarray:
    """Wire bytes -> float32 at ``FORMAT_RATE[fmt]``.

    Raises:
        ProtocolError: ``invalid_audio_format`` (e.g. an odd byte count for pcm16).
    """
    try:
        if fmt == "pcm16":
            return pcm16_bytes_to_float(raw)
        if fmt == "g711_ulaw":
            return mulaw_decode(raw)
        return alaw_decode(raw)
    except AudioError as e:
        raise ProtocolError("invalid_audio_format", f"audio is not {fmt}: {e}", event_id, "audio") from None


def encode_audio(wave: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """float32 at ``sample_rate`` -> wire bytes in ``fmt`` (resampled to the format's rate)."""
    wave = resample(wave, sample_rate, FORMAT_RATE[fmt])
    if fmt == "pcm16":
        return float_to_pcm16_bytes(wave)
    if fmt == "g711_ulaw":
        return mulaw_encode(wave)
    return alaw_encode(wave)


def b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
