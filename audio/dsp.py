"""Audio conversions shared by every audio path: PCM16 <-> float, resampling, G.711, file decoding.

All waveforms inside the runtime are mono float32 numpy arrays in [-1, 1] with an explicit rate.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np

PCM16_SCALE = 32768.0  # int16 full scale


class AudioError(ValueError):
    """Audio that cannot be used, with a message that says why."""


def pcm16_bytes_to_float(data: bytes) -> np.ndarray:
    """Little-endian PCM16 mono bytes -> float32 in [-1, 1]."""
    if len(data) % 2:
        raise AudioError(f"PCM16 audio must have an even number of bytes, got {len(data)}")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / PCM16_SCALE


def float_to_int16(wave: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] -> int16, rounded and clipped (the inverse of ``/ PCM16_SCALE``)."""
    scaled = np.rint(np.asarray(wave, dtype=np.float32) * PCM16_SCALE)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def float_to_pcm16_bytes(wave: np.ndarray) -> bytes:
    """float32 in [-1, 1] -> little-endian PCM16 bytes (clipped); exact inverse of ``pcm16_bytes_to_float``."""
    return float_to_int16(wave).astype("<i2").tobytes()


@lru_cache(maxsize=16)
def _resampler(orig_sr: int, new_sr: int):  # noqa: ANN202 - torchaudio type
    import torchaudio

    return torchaudio.transforms.Resample(orig_sr, new_sr)


def resample(wave: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Band-limited resampling (torchaudio's windowed sinc), float32 in and out."""
    if orig_sr <= 0 or new_sr <= 0:
        raise AudioError(f"sample rates must be positive, got {orig_sr} -> {new_sr}")
    wave = np.asarray(wave, dtype=np.float32)
    if orig_sr == new_sr or wave.size == 0:
        return wave
    import torch

    with torch.no_grad():
        out = _resampler(orig_sr, new_sr)(torch.from_numpy(np.ascontiguousarray(wave)))
    return out.numpy()


# G.711 (ITU-T), 8 kHz telephony codecs used by the realtime protocol's g711_ulaw / g711_alaw formats.
_MU = 255.0


def mulaw_encode(wave: np.ndarray) -> bytes:
    """float32 [-1, 1] -> G.711 mu-law bytes, bit-exact with the ITU/Sun reference (``audioop.lin2ulaw``)."""
    pcm = float_to_int16(wave).astype(np.int32) >> 2  # 14-bit, floored like the reference code
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), 8159) + 33  # clip, then add the bias (33 in 14-bit units)
    seg = np.clip(np.floor(np.log2(mag)).astype(np.int32) - 5, 0, 7)
    byte = np.where(mag > 0x1FFF, 0x7F, (seg << 4) | ((mag >> (seg + 1)) & 0x0F)) ^ mask
    return byte.astype(np.uint8).tobytes()


def mulaw_decode(data: bytes) -> np.ndarray:
    """G.711 mu-law bytes -> float32 [-1, 1]."""
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    mag = (((mantissa << 3) + 0x84) << exponent) - 0x84
    pcm = np.where(sign != 0, -mag, mag)
    return (pcm / PCM16_SCALE).astype(np.float32)


def alaw_encode(wave: np.ndarray) -> bytes:
    """float32 [-1, 1] -> G.711 A-law bytes."""
    pcm = float_to_int16(wave).astype(np.int32) >> 3  # 13-bit
    sign = np.where(pcm >= 0, 0x80, 0x00)
    mag = np.minimum(np.where(pcm >= 0, pcm, -pcm - 1), 0x0FFF)
    exponent = np.where(mag < 32, 0, np.floor(np.log2(np.maximum(mag, 1))).astype(np.int32) - 4)
    exponent = np.clip(exponent, 0, 7)
    mantissa = np.where(exponent == 0, mag >> 1, mag >> exponent) & 0x0F
    byte = (sign | (exponent << 4) | mantissa) ^ 0x55
    return byte.astype(np.uint8).tobytes()


def alaw_decode(data: bytes) -> np.ndarray:
    """G.711 A-law bytes -> float32 [-1, 1]."""
    a = np.frombuffer(data, dtype=np.uint8).astype(np.int32) ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    mag = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1))
    pcm = np.where(sign != 0, mag, -mag)
    return (pcm / PCM16_SCALE).astype(np.float32)


def decode_audio_bytes(data: bytes) -> tuple[np.ndarray, int]:
    """Decode a WAV/FLAC/OGG file held in memory -> (mono float32 wave, sample rate).

    Raises:
        AudioError: empty, truncated or undecodable data.
    """
    import soundfile as sf

    if not data:
        raise AudioError("audio is empty")
    try:
        wave, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types for corrupt input
        raise AudioError(f"could not decode audio: {e}") from None
    if wave.shape[0] == 0:
        raise AudioError("audio has no samples")
    return wave.mean(axis=1).astype(np.float32), int(sr)


def load_audio(path: str, target_sr: int | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file -> (mono float32, rate), resampled to ``target_sr`` when given."""
    with open(path, "rb") as f:
        wave, sr = decode_audio_bytes(f.read())
    if target_sr and sr != target_sr:
        wave, sr = resample(wave, sr, target_sr), target_sr
    return wave, sr
