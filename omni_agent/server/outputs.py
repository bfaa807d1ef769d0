"""What a chat-completion choice carries besides text: speech (``message.audio``) and logprobs.

Speech arrives as float32 chunks from the same talker and codec the realtime path speaks with
(``AudioDelta`` frames of the agent graph's speak step); it leaves as OpenAI's ``message.audio``
(base64 of a whole file, plus the transcript) or, streamed, as base64 ``pcm16`` deltas. Logprobs
come from the engine per token (``GenerationOutput.logprobs``) and leave in OpenAI's
``choices[].logprobs.content`` shape, token strings decoded by the thinker's tokenizer.
"""

from __future__ import annotations

import base64
import io
import time
import uuid
from typing import Any

import numpy as np

SPEECH_RATE = 24000  # OpenAI's pcm16 rate, and the streaming TTS's output rate
AUDIO_TTL_S = 3600  # ``expires_at``: how long a client may refer back to the audio (OpenAI: one hour)


def pcm16(pcm: np.ndarray) -> bytes:
    """float32 [-1, 1] -> 16-bit little-endian PCM."""
    return (np.clip(pcm, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def encode_speech(chunks: list[np.ndarray], fmt: str, sample_rate: int = SPEECH_RATE) -> bytes:
    """The whole answer's audio as one file in ``fmt`` (``wav``, ``flac``: 16-bit mono; ``pcm16``: raw)."""
    import soundfile as sf

    pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if fmt == "pcm16":
        return pcm16(pcm)
    buf = io.BytesIO()
    sf.write(buf, pcm, sample_rate, format=fmt.upper(), subtype="PCM_16")
    return buf.getvalue()


class SpeechAnswer:
    """One choice's ``message.audio``: an id, the audio so far and its transcript."""

    def __init__(self, fmt: str) -> None:
        self.id = f"audio_{uuid.uuid4().hex[:24]}"
        self.fmt = fmt
        self.expires_at = int(time.time()) + AUDIO_TTL_S
        self.chunks: list[np.ndarray] = []
        self.sample_rate = SPEECH_RATE

    def add(self, pcm: np.ndarray, sample_rate: int) -> None:
        if sample_rate != SPEECH_RATE:
            from audio.dsp import resample

            pcm = resample(pcm, sample_rate, SPEECH_RATE)
        self.chunks.append(pcm.astype(np.float32, copy=False))

    def message_audio(self, transcript: str) -> dict[str, Any]:
        data = base64.b64encode(encode_speech(self.chunks, self.fmt)).decode()
        return {"id": self.id, "data": data, "expires_at": self.expires_at, "transcript": transcript}

    def delta(self, *, pcm: np.ndarray | None = None, sample_rate: int = SPEECH_RATE,
              transcript: str | None = None) -> dict[str, Any]:
        """A streamed ``delta.audio``: base64 pcm16 ``data`` and/or a ``transcript`` piece."""
        out: dict[str, Any] = {"id": self.id}
        if pcm is not None:
            if sample_rate != SPEECH_RATE:
                from audio.dsp import resample

                pcm = resample(pcm, sample_rate, SPEECH_RATE)
            out["data"] = base64.b64encode(pcm16(pcm)).decode()
            out["expires_at"] = self.expires_at
        if transcript is not None:
            out["transcript"] = transcript
        return out


class LogprobsWriter:
    """Engine token logprobs -> OpenAI ``logprobs.content`` entries (one per generated token)."""

    def __init__(self, tokenizer: Any, top_n: int) -> None:
        self.tokenizer, self.top_n = tokenizer, top_n
        self.content: list[dict[str, Any]] = []

    def _entry(self, token_id: int, logprob: float) -> dict[str, Any]:
        text = self.tokenizer.decode([token_id])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    def add(self, output: Any) -> list[dict[str, Any]]:
        """Entries for this output's new tokens (also kept in ``content``)."""
        new = []
        for tl in output.logprobs or []:
            entry = self._entry(tl.token_id, tl.logprob)
            entry["top_logprobs"] = [self._entry(t, lp) for t, lp in tl.top[:self.top_n]]
            new.append(entry)
        self.content.extend(new)
        return new
