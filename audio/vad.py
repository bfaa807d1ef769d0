"""Streaming voice activity detection with Silero VAD (the ``silero-vad`` package, loaded offline).

Audio is pushed in any chunk size at 16 kHz; the detector runs Silero on 32 ms windows and emits
``speech_started`` / ``speech_stopped`` events with positions in milliseconds from the first sample
ever pushed, as the OpenAI Realtime server VAD does:

- ``speech_started.audio_ms`` is where speech was detected minus ``prefix_padding_ms`` (the audio
  that will be sent to the model starts there);
- ``speech_stopped.audio_ms`` is where silence had lasted ``silence_duration_ms`` (the end of the
  audio sent to the model).

One :class:`StreamingVAD` per audio stream; its state is explicit (:class:`VadState`) and
``reset()`` starts over. Silero's TorchScript model keeps its recurrent state inside the module, so
every stream needs its own model instance: :class:`SileroModelPool` hands them out and takes them
back, so that a new session does not pay the ~50 ms load.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

SAMPLE_RATE = 16000  # Silero VAD's native rate
FRAME_SAMPLES = 512  # Silero VAD window at 16 kHz (32 ms); the model accepts no other size at 16 kHz
FRAME_MS = FRAME_SAMPLES * 1000 // SAMPLE_RATE  # 32
NEG_THRESHOLD_GAP = 0.15  # hysteresis below the threshold before silence counts (Silero's own default)


@dataclass(frozen=True)
class VadParams:
    """Server VAD knobs (OpenAI Realtime defaults)."""

    threshold: float = 0.5
    """Speech probability that starts speech (0..1)."""
    prefix_padding_ms: int = 300
    """Audio kept before the detected start."""
    silence_duration_ms: int = 500
    """Silence that ends speech."""


@dataclass(frozen=True)
class VadEvent:
    kind: Literal["speech_started", "speech_stopped"]
    audio_ms: int
    """``audio_start_ms`` for a start, ``audio_end_ms`` for a stop (from the stream's first sample)."""
    detected_ms: int
    """Where in the stream the detector decided (the end of the window that tipped it)."""


@dataclass
class VadState:
    """Everything a stream carries between pushes."""

    pending: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    """Samples not yet filling a window."""
    samples_seen: int = 0
    """Samples fed to the model so far (window aligned)."""
    speaking: bool = False
    silence_samples: int = 0
    last_prob: float = 0.0

    def reset(self) -> None:
        self.pending = np.zeros(0, np.float32)
        self.samples_seen = 0
        self.speaking = False
        self.silence_samples = 0
        self.last_prob = 0.0


def load_silero_model() -> Any:
    """Silero's TorchScript model from the files shipped inside the package (no download)."""
    from silero_vad import load_silero_vad

    return load_silero_vad(onnx=False)


class SileroModelPool:
    """Reusable Silero models (one per live stream, since each model holds its stream state)."""

    def __init__(self, max_idle: int = 64) -> None:
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self.max_idle = max_idle

    def acquire(self) -> Any:
        with self._lock:
            model = self._idle.pop() if self._idle else None
        if model is None:
            model = load_silero_model()
        model.reset_states()
        return model

    def release(self, model: Any) -> None:
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append(model)

    @contextmanager
    def model(self) -> Iterator[Any]:
        m = self.acquire()
        try:
            yield m
        finally:
            self.release(m)


class StreamingVAD:
    """Silero VAD over a 16 kHz stream, chunk by chunk.

    Args:
        params: thresholds and durations.
        model: a Silero model owned by this stream (see :class:`SileroModelPool`); loaded when None.
    """

    def __init__(self, params: VadParams | None = None, model: Any | None = None) -> None:
        self.params = params or VadParams()
        self.model = model if model is not None else load_silero_model()
        self.state = VadState()

    def reset(self) -> None:
        """Forget the stream (positions restart at 0)."""
        self.state.reset()
        self.model.reset_states()

    def _prob(self, frame: np.ndarray) -> float:
        import torch

        with torch.inference_mode():
            return float(self.model(torch.from_numpy(frame), SAMPLE_RATE))

    def push(self, wave: np.ndarray) -> list[VadEvent]:
        """Feed 16 kHz float32 samples; returns the events decided by the complete windows."""
        st, p = self.state, self.params
        data = np.concatenate([st.pending, np.asarray(wave, np.float32).reshape(-1)])
        n_frames = len(data) // FRAME_SAMPLES
        st.pending = data[n_frames * FRAME_SAMPLES:]
        events: list[VadEvent] = []
        silence_needed = p.silence_duration_ms * SAMPLE_RATE // 1000
        for i in range(n_frames):
            frame = np.ascontiguousarray(data[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES])
            prob = st.last_prob = self._prob(frame)
            frame_start = st.samples_seen
            st.samples_seen += FRAME_SAMPLES
            if not st.speaking:
                if prob >= p.threshold:
                    st.speaking, st.silence_samples = True, 0
                    start_ms = max(0, frame_start * 1000 // SAMPLE_RATE - p.prefix_padding_ms)
                    events.append(VadEvent("speech_started", start_ms, st.samples_seen * 1000 // SAMPLE_RATE))
            elif prob < p.threshold - NEG_THRESHOLD_GAP:
                st.silence_samples += FRAME_SAMPLES
                if st.silence_samples >= silence_needed:
                    st.speaking, st.silence_samples = False, 0
                    end_ms = st.samples_seen * 1000 // SAMPLE_RATE
                    events.append(VadEvent("speech_stopped", end_ms, end_ms))
            else:
                st.silence_samples = 0
        return events

    @property
    def position_ms(self) -> int:
        """Milliseconds of audio pushed so far (including the partial window)."""
        return (self.state.samples_seen + len(self.state.pending)) * 1000 // SAMPLE_RATE
