"""Input media (user images and audio) kept in the artifact store, referenced from messages by id.

Checkpoints hold message parts like ``{"type": "audio", "artifact_id": "art_..."}`` instead of the
samples, so a session's history stays small and survives restarts with its media.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

AUDIO_RATE = 16000  # the thinker's audio encoder input rate


def store_audio(store: Any, wave: np.ndarray, *, sample_rate: int = AUDIO_RATE) -> str:
    """Write mono float audio as a 16-bit WAV artifact; returns its id."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(wave, dtype=np.float32), sample_rate, format="WAV", subtype="PCM_16")
    return store.put(buf.getvalue(), "audio/wav", kind="audio", meta={"sample_rate": sample_rate}).id


def load_audio(store: Any, artifact_id: str) -> np.ndarray:
    """A stored WAV artifact as float32 mono at its own rate (16 kHz for input audio)."""
    import soundfile as sf

    got = store.get(artifact_id)
    if got is None:
        raise KeyError(f"unknown artifact {artifact_id!r}")
    wave, _sr = sf.read(io.BytesIO(got[0]), dtype="float32")
    return wave if wave.ndim == 1 else wave.mean(axis=1)
