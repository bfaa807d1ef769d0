"""The codec interface shared by every backend, and the block-streaming decoder they all use.

Legend: N codes (50 Hz), S output samples per code, B block codes, L lookahead codes, C context codes,
F crossfade samples.

A decoder renders a *window* of codes ``[start - C, start + B + L)`` and keeps only the samples of
the block ``[start, start + B)``; the first ``F`` samples of a block are crossfaded with the ``F``
samples the previous window rendered just past its block end. The offline ``decode`` runs the very
same blocks, so chunk-by-chunk output equals one-shot output however the codes arrive.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CODE_RATE_HZ = 50  # S3-style speech tokens: one code per 20 ms
CODEBOOK_SIZE = 4096  # one codebook of 4096 entries (Ming / CosyVoice v1 tokenizer)
INPUT_RATE = 16000  # encoders take 16 kHz audio
BLOCK_CODES = 50  # decode every 50 codes (ARCHITECTURE section 5)
LOOKAHEAD_CODES = 3  # codes past the block the decoder may look at
CONTEXT_CODES = 8  # codes before the block re-rendered for continuity


class CodecError(ValueError):
    """Codes or audio a codec cannot use, with a message that says why."""


def check_codes(codes: Any, codebook_size: int = CODEBOOK_SIZE) -> np.ndarray:
    """Validate codes -> int64 array [N].

    Raises:
        CodecError: not 1-D integers in ``[0, codebook_size)``.
    """
    arr = np.asarray(codes)
    if arr.ndim != 1:
        raise CodecError(f"codes must be a 1-D sequence, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise CodecError(f"codes must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= codebook_size):
        raise CodecError(f"codes must lie in [0, {codebook_size}), got [{arr.min()}, {arr.max()}]")
    return arr


def check_wave(wave: Any, sr: int) -> np.ndarray:
    """Validate a mono wave -> float32 [T].

    Raises:
        CodecError: empty, not mono, or not finite.
    """
    arr = np.asarray(wave, dtype=np.float32)
    if arr.ndim != 1:
        raise CodecError(f"audio must be mono 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise CodecError("audio is empty")
    if not np.all(np.isfinite(arr)):
        raise CodecError("audio contains NaN or infinite samples")
    if sr <= 0:
        raise CodecError(f"sample rate must be positive, got {sr}")
    return arr


@dataclass
class DecoderState:
    """Streaming state of one decoder; ``reset()`` returns it to a fresh stream."""

    codes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """Codes kept: the left context of the next block followed by every code not yet emitted."""
    offset: int = 0
    """Absolute index of ``codes[0]`` in the stream."""
    start: int = 0
    """Absolute index of the next block's first code."""
    tail: np.ndarray | None = None
    """Samples the last window rendered past its block end, to crossfade into the next block."""
    cache: dict[str, Any] = field(default_factory=dict)
    """Backend cache (phases, mel frames...) keyed by name."""

    def reset(self) -> None:
        self.codes = np.zeros(0, np.int64)
        self.offset = 0
        self.start = 0
        self.tail = None
        self.cache = {}


class SpeechCodec(ABC):
    """Speech tokenizer + detokenizer: 16 kHz wave <-> 50 Hz codes in ``[0, codebook_size)``."""

    name: str = "codec"
    codebook_size: int = CODEBOOK_SIZE
    frame_rate: int = CODE_RATE_HZ
    input_rate: int = INPUT_RATE
    sample_rate: int = INPUT_RATE
    """Rate of decoded audio."""
    block_codes: int = BLOCK_CODES
    lookahead_codes: int = LOOKAHEAD_CODES
    context_codes: int = CONTEXT_CODES

    @property
    def samples_per_code(self) -> int:
        return self.sample_rate // self.frame_rate

    @property
    def crossfade(self) -> int:
        return self.samples_per_code  # 20 ms: inside the lookahead, long enough to hide a phase step

    # -- backend hooks -------------------------------------------------------------------------
    @abstractmethod
    def encode(self, wave: np.ndarray, sr: int = INPUT_RATE) -> np.ndarray:
        """Wave -> codes [N] int64 at 50 Hz (``N = len(wave at 16 kHz) // 320``)."""

    @abstractmethod
    def render(self, codes: np.ndarray, first: int, state: DecoderState) -> np.ndarray:
        """Render a window of codes whose first code has absolute index ``first`` -> samples
        [len(codes) * S]; may read and update ``state.cache``."""

    # -- decoding --------------------------------------------------------------------------------
    def decode(self, codes: Any) -> np.ndarray:
        """Codes -> waveform at ``sample_rate`` (same blocks as streaming, so identical output)."""
        codes = check_codes(codes, self.codebook_size)
        if codes.size == 0:
            raise CodecError("no codes to decode")
        dec = StreamingDecoder(self)
        return np.concatenate([dec.push(codes), dec.flush()])

    def stream_decoder(self) -> StreamingDecoder:
        """A fresh streaming decoder bound to this codec."""
        return StreamingDecoder(self)

    @contextmanager
    def streaming(self) -> Iterator[StreamingDecoder]:
        """``with codec.streaming() as dec: dec.push(codes) ... dec.flush()``; state is reset on exit."""
        dec = StreamingDecoder(self)
        try:
            yield dec
        finally:
            dec.reset()


class StreamingDecoder:
    """Codes in, PCM out, block by block (``B`` codes + ``L`` lookahead, crossfaded edges)."""

    def __init__(self, codec: SpeechCodec):
        self.codec = codec
        self.state = DecoderState()

    def reset(self) -> None:
        """Forget everything; the next push starts a new stream."""
        self.state.reset()

    @property
    def pending(self) -> int:
        """Codes received but not yet emitted as audio."""
        st = self.state
        return st.offset + len(st.codes) - st.start

    def push(self, codes: Any) -> np.ndarray:
        """Add codes; returns the audio of every block that became complete (maybe empty)."""
        c = self.codec
        codes = check_codes(codes, c.codebook_size)
        st = self.state
        st.codes = np.concatenate([st.codes, codes])
        out = []
        while self.pending >= c.block_codes + c.lookahead_codes:
            out.append(self._emit(st.start + c.block_codes + c.lookahead_codes, final=False))
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def flush(self) -> np.ndarray:
        """Emit everything left (the end of the stream) and reset."""
        c = self.codec
        st = self.state
        out = []
        while self.pending > c.block_codes + c.lookahead_codes:  # only after a push() of many codes
            out.append(self._emit(st.start + c.block_codes + c.lookahead_codes, final=False))
        if self.pending > 0:
            out.append(self._emit(st.offset + len(st.codes), final=True))
        elif st.tail is not None:
            out.append(st.tail)
        self.reset()
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)

    def _emit(self, end: int, *, final: bool) -> np.ndarray:
        c = self.codec
        st = self.state
        s, f = c.samples_per_code, c.crossfade
        first = max(0, st.start - c.context_codes)
        window = st.codes[first - st.offset: end - st.offset]
        wave = c.render(window, first, st)  # [len(window) * S]
        lo = (st.start - first) * s
        if final:
            cur = wave[lo:]
            nxt = None
        else:
            hi = lo + c.block_codes * s
            cur, nxt = wave[lo:hi], wave[hi: hi + f]
        cur = np.array(cur, dtype=np.float32)
        if st.tail is not None:
            n = min(f, len(cur), len(st.tail))
            fade_in = _fade(f)[:n]
            cur[:n] = st.tail[:n] * (1.0 - fade_in) + cur[:n] * fade_in
        st.tail = None if nxt is None else np.array(nxt, dtype=np.float32)
        st.start = end if final else st.start + c.block_codes
        keep_from = max(0, st.start - c.context_codes)
        st.codes = st.codes[keep_from - st.offset:]
        st.offset = keep_from
        return cur


def _fade(n: int) -> np.ndarray:
    """Raised-cosine fade-in of ``n`` samples (0 -> 1); equal-gain with its complement."""
    t = (np.arange(n, dtype=np.float32) + 0.5) / n
    return (0.5 - 0.5 * np.cos(np.pi * t)).astype(np.float32)
