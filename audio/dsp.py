"""Audio conversions shared by every audio path: PCM16 <-> float, resampling, G.711, file decoding.

All waveforms inside the runtime are mono float32 numpy arrays in [-1, 1] with an explicit rate.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import lru_cache
from math import gcd

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




@dataclass
class ResamplerState:
    """Streaming state of ``StreamingResampler``: input kept for context and positions."""

    buf: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    buf_start: int = 0
    """Absolute input index of ``buf[0]``."""
    done_in: int = 0
    """Input samples whose output has been emitted (a multiple of the input period)."""
    done_out: int = 0

    def reset(self) -> None:
        self.buf = np.zeros(0, np.float32)
        self.buf_start = self.done_in = self.done_out = 0


class StreamingResampler:
    """Chunked band-limited resampling equal to ``resample`` on the whole signal.

    torchaudio's windowed-sinc kernel spans a few input samples, so each block is resampled with
    ``MARGIN`` samples of real context on both sides; the right margin is held back until more input
    (or ``flush``) arrives. Blocks start on multiples of the input period, so the sinc phases match.
    """

    MARGIN = 64  # input samples of context each side; the kernel needs ~10 at 16 -> 24 kHz

    def __init__(self, orig_sr: int, new_sr: int):
        self.orig_sr, self.new_sr = orig_sr, new_sr
        g = gcd(orig_sr, new_sr)
        self.p_in, self.p_out = orig_sr // g, new_sr // g
        self.margin = -(-self.MARGIN // self.p_in) * self.p_in  # whole periods
        self.state = ResamplerState()

    def reset(self) -> None:
        self.state.reset()

    def push(self, x: np.ndarray) -> np.ndarray:
        """Add input samples; returns the output that is now final."""
        st = self.state
        st.buf = np.concatenate([st.buf, np.asarray(x, np.float32)])
        if self.orig_sr == self.new_sr:
            out, st.buf = st.buf, np.zeros(0, np.float32)
            return out
        end = st.buf_start + len(st.buf) - self.margin
        end -= end % self.p_in
        return self._run(end, final=False)

    def flush(self) -> np.ndarray:
        """End of the signal: emit the rest (zero-padded like the offline resampler) and reset."""
        st = self.state
        if self.orig_sr == self.new_sr:
            out = st.buf
        else:
            out = self._run(st.buf_start + len(st.buf), final=True)
        self.reset()
        return out

    def _run(self, end: int, *, final: bool) -> np.ndarray:
        st = self.state
        if end <= st.done_in:
            return np.zeros(0, np.float32)
        lo = max(st.buf_start, st.done_in - self.margin)  # a multiple of p_in (or 0)
        seg = st.buf[lo - st.buf_start:]
        y = resample(seg, self.orig_sr, self.new_sr)
        first = (st.done_in - lo) // self.p_in * self.p_out
        if final:
            total = -(-(st.buf_start + len(st.buf)) * self.p_out // self.p_in)  # ceil, as torchaudio
            n = total - st.done_out
        else:
            n = (end - st.done_in) // self.p_in * self.p_out
        out = y[first:first + n]
        st.done_in, st.done_out = end, st.done_out + len(out)
        keep = max(0, st.done_in - self.margin)
        st.buf = st.buf[keep - st.buf_start:]
        st.buf_start = keep
        return out.astype(np.float32)



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
