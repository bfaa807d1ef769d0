"""Input audio work off the event loop: base64 decoding, G.711/pcm16 decoding, resampling and Silero VAD.

Each session's appends run, in order, on a small shared pool of worker threads (:func:`audio_pool`);
the event loop only moves the results. The workers set torch's intra-op threads to one for
themselves (torch's thread count is per thread), so VAD never competes with the engine for cores
and never stalls other sessions' websockets, pings or timers.

:class:`AudioRateLimit` limits appends by the *duration* of audio they carry, not by their count: a
client that buffered 30 s of speech may send it at once (up to ``burst_s``); a client sending audio
faster than ``rate`` times real time for longer than that is refused.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audio.dsp import StreamingResampler
from audio.vad import StreamingVAD, VadEvent
from omni_agent.realtime.events import ProtocolError
from omni_agent.realtime.formats import BYTES_PER_SAMPLE, FORMAT_RATE, b64decode_strict, decode_audio

MODEL_RATE = 16000

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # per thread: the engine's threads are untouched


def audio_pool(workers: int = 2) -> ThreadPoolExecutor:
    """The process-wide pool for realtime audio work (created on first use with ``workers`` threads)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="realtime-audio",
                                       initializer=_worker_init)
        return _pool


def audio_seconds(b64_len: int, fmt: str) -> float:
    """Seconds of audio in a base64 string of ``b64_len`` characters (without decoding it)."""
    return b64_len * 3 / 4 / BYTES_PER_SAMPLE[fmt] / FORMAT_RATE[fmt]


class AudioRateLimit:
    """Token bucket over seconds of audio: ``rate`` seconds per second, ``burst_s`` seconds of burst."""

    def __init__(self, rate: float, burst_s: float) -> None:
        self.rate, self.capacity = rate, burst_s
        self.tokens, self.t = burst_s, time.monotonic()

    def take(self, seconds: float) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if seconds > self.tokens:
            return False
        self.tokens -= seconds
        return True

    def describe(self) -> dict[str, Any]:
        return {"name": "input_audio_seconds", "limit": round(self.capacity, 3), "remaining": round(self.tokens, 3),
                "reset_seconds": round((self.capacity - self.tokens) / self.rate, 3)}


@dataclass
class Appended:
    """What one append produced: 16 kHz audio for the buffer and the VAD's decisions on it."""

    wave16: np.ndarray
    seconds: float
    vad_events: list[VadEvent] = field(default_factory=list)


class InputAudio:
    """The per-session decoding state (resampler, VAD); :meth:`process` runs on a worker thread.

    Calls for one session are never concurrent (the session awaits each append before the next event).
    """

    def __init__(self) -> None:
        self.resampler: StreamingResampler | None = None
        self.vad: StreamingVAD | None = None

    def process(self, audio_b64: str, fmt: str, room_samples: int, limit_s: float, event_id: str | None) -> Appended:
        """Decode, check against the buffer's room, resample to 16 kHz and run VAD (blocking).

        Raises:
            ProtocolError: invalid base64 or audio, or ``input_audio_buffer_full``.
        """
        raw = b64decode_strict(audio_b64, event_id)
        wave = decode_audio(raw, fmt, event_id)
        rate = FORMAT_RATE[fmt]
        if len(wave) * MODEL_RATE // rate > room_samples:  # refused audio never enters the resampler
            raise ProtocolError("input_audio_buffer_full",
                                f"the input audio buffer holds at most {limit_s:g} s; commit or clear it",
                                event_id, "audio")
        if self.resampler is None or self.resampler.orig_sr != rate:
            self.resampler = StreamingResampler(rate, MODEL_RATE)
        wave16 = self.resampler.push(wave)  # holds back < 3 ms of input as context for the next chunk
        events = self.vad.push(wave16) if self.vad is not None else []
        return Appended(wave16, len(wave) / rate, list(events))

    def reset(self) -> None:
        if self.resampler is not None:
            self.resampler.reset()
