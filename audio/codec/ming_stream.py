"""Streaming token -> 24 kHz PCM with Ming's caches (``modeling_bailing_talker.tts_job`` / ``token2wav``).

Schedule: the first chunk waits for ``50 + pad + 3`` tokens, where ``pad`` rounds the voice prompt's
token count up to a multiple of 50 (``token_hop_len``); later chunks for 50 + 3 more (3 =
``pre_lookahead_len``, tokens the encoder may look at but that are not rendered yet). Each chunk
re-runs the flow over ALL tokens so far (streaming chunk masks; the last 3 tokens as lookahead
context), keeps the mel from ``offset`` on, prepends the last 8 mel frames of the previous chunk
(mel cache), runs HiFT with the previous chunk's last 3840 source samples pinned (source cache), fades
the first 3840 samples in against the previous chunk's held-back tail (Hamming window of 7680
samples) and holds back its own last 3840 samples. ``finish()`` renders what is left with
``finalize`` (no lookahead cut, and - as Ming's ``tts_job`` calls ``token2wav`` without ``stream`` -
full attention instead of chunk masks) and returns everything, tail included.

When the talker ends, Ming's loop emits further chunks only while ``tokens - offset`` is at least the
hop used by the chunk just emitted (``50 + pad`` right after the first chunk); ``finish()`` follows
the same rule, so output equals Ming's for a talker slower than the detokenizer (the real-time case).
Legend: P prompt tokens, N tokens, T mel frames (50 Hz, ``token_mel_ratio`` per token), S samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from audio.codec.base import CodecError

if TYPE_CHECKING:
    from audio.codec.ming import MingDetokenizer

TOKEN_HOP = 50  # AudioDetokenizerModel.token_hop_len ("must match training static_chunk_size")
MEL_CACHE = 8  # AudioDetokenizerModel.mel_cache_len
SOURCE_CACHE = MEL_CACHE * 480  # source_cache_len: 480 samples per mel frame at 24 kHz
FADE = np.hamming(2 * SOURCE_CACHE)  # speech_window


@dataclass
class VoicePrompt:
    """A voice prompt as Ming's ``data/spks/*.pt`` holds it for the detokenizer."""

    tokens: torch.Tensor
    """[1, P] int: ``flow_prompt_speech_token``."""
    mel: torch.Tensor
    """[1, Tp, 80] float: ``prompt_speech_feat`` (Tp = P * token_mel_ratio)."""
    embedding: torch.Tensor
    """[1, 192] float: ``flow_embedding`` (a CAM++ x-vector)."""

    @classmethod
    def empty(cls, spk_dim: int = 192, n_mels: int = 80) -> VoicePrompt:
        """No prompt: zero tokens, zero frames, a zero x-vector (Ming's ``tts_job`` defaults)."""
        return cls(torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 0, n_mels), torch.zeros(1, spk_dim))

    @classmethod
    def from_tensors(cls, tokens: Any, mel: Any, embedding: Any, *, vocab_size: int = 4096,
                     token_mel_ratio: int = 1, spk_dim: int = 192) -> VoicePrompt:
        """Validate and shape ``tokens`` [P] or [1, P], ``mel`` [Tp, 80] or [1, Tp, 80], ``embedding`` [192]
        or [1, 192].

        Raises:
            CodecError: wrong shapes, token ids outside the vocabulary, or mel/token lengths that disagree.
        """
        tok = torch.as_tensor(tokens).reshape(1, -1).long()
        m = torch.as_tensor(mel, dtype=torch.float32)
        m = m[None] if m.dim() == 2 else m
        emb = torch.as_tensor(embedding, dtype=torch.float32).reshape(1, -1)
        if m.dim() != 3 or m.shape[0] != 1 or m.shape[2] != 80:
            raise CodecError(f"prompt mel must be [Tp, 80] or [1, Tp, 80], got {tuple(m.shape)}")
        if emb.shape[1] != spk_dim:
            raise CodecError(f"speaker embedding must have {spk_dim} values, got {emb.shape[1]}")
        if tok.numel() and (tok.min() < 0 or tok.max() >= vocab_size):
            raise CodecError(f"prompt tokens must lie in [0, {vocab_size})")
        if m.shape[1] != tok.shape[1] * token_mel_ratio:
            raise CodecError(f"prompt mel has {m.shape[1]} frames for {tok.shape[1]} tokens "
                             f"(token_mel_ratio {token_mel_ratio})")
        return cls(tok, m, emb)


def fade_in_out(wave: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
    """Crossfade the first 3840 samples of ``wave`` with ``tail`` (Ming's ``fade_in_out``)."""
    n = len(FADE) // 2
    out = wave.detach().cpu().clone()
    win = torch.from_numpy(FADE)
    out[..., :n] = (out[..., :n] * win[:n] + tail.cpu()[..., -n:] * win[n:]).to(out.dtype)
    return out.to(wave.device)


class MingStream:
    """One utterance: ``push(tokens)`` -> PCM of the chunks that became ready, ``finish()`` -> the rest.

    Also usable where a ``StreamingDecoder`` is expected (``flush`` = ``finish``, ``reset``, ``pending``).
    """

    def __init__(self, det: MingDetokenizer, voice: VoicePrompt, *, seed: int = 0):
        self.det, self.voice, self.seed = det, voice, seed
        dev = det.device
        self._voice_dev = VoicePrompt(voice.tokens.to(dev), voice.mel.to(dev, det.dtype),
                                      voice.embedding.to(dev, det.dtype))
        self.pad = math.ceil(voice.tokens.shape[1] / TOKEN_HOP) * TOKEN_HOP - voice.tokens.shape[1]
        self.reset()

    def reset(self) -> None:
        """Forget everything; the next push starts a new utterance (same seed)."""
        dev = self.det.device
        self.tokens: list[int] = []
        self.offset = 0
        self.cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.cancelled = False
        self.generator = torch.Generator(device=dev).manual_seed(self.seed)

    @property
    def pending(self) -> int:
        """Tokens received but not yet rendered."""
        return len(self.tokens) - self.offset

    def _hop(self) -> int:
        return TOKEN_HOP + self.pad if self.offset == 0 else TOKEN_HOP

    def _ready(self, hop: int) -> bool:
        return len(self.tokens) - self.offset >= hop + self.det.lookahead

    def push(self, tokens: Any, cancel: Any = None) -> np.ndarray:
        """Add codec tokens (ids in ``[0, 4096)``); render every chunk that is complete.

        ``cancel`` (anything with ``is_set()``) is checked before each chunk; once set, or after
        ``cancel()``, nothing more is rendered.

        Raises:
            CodecError: token ids outside the vocabulary.
        """
        arr = np.asarray(tokens, dtype=np.int64).reshape(-1)
        vocab = self.det.cfg.flow.vocab_size
        if arr.size and (arr.min() < 0 or arr.max() >= vocab):
            raise CodecError(f"codec tokens must lie in [0, {vocab}), got [{arr.min()}, {arr.max()}]")
        self.tokens.extend(arr.tolist())
        out = []
        while not self._stopped(cancel) and self._ready(self._hop()):
            out.append(self._chunk())
        return _cat(out)

    def finish(self, cancel: Any = None) -> np.ndarray:
        """End of the utterance: the chunks Ming's loop still emits, then the final render; resets."""
        out = []
        while not self._stopped(cancel):
            hop = self._hop()
            if self._ready(hop):
                out.append(self._chunk())
            if len(self.tokens) - self.offset < hop + self.det.lookahead:
                break
        if self.tokens and not self._stopped(cancel):
            out.append(self._render(self.tokens, streaming=False, finalize=True))
        self.reset()
        return _cat(out)

    flush = finish

    def cancel(self) -> None:
        """Stop: no further chunk is rendered until ``reset()``."""
        self.cancelled = True

    def _stopped(self, cancel: Any) -> bool:
        return self.cancelled or (cancel is not None and cancel.is_set())

    def _chunk(self) -> np.ndarray:
        hop = self._hop()
        wave = self._render(self.tokens[: self.offset + hop + self.det.lookahead], streaming=True, finalize=False)
        self.offset += hop
        return wave

    def _render(self, tokens: list[int], *, streaming: bool, finalize: bool) -> np.ndarray:
        """Ming's ``token2wav`` for ``tokens[offset:]`` with the mel/source/speech caches."""
        det, v = self.det, self._voice_dev
        tok = torch.tensor(tokens, dtype=torch.long, device=det.device)[None]
        with torch.inference_mode():
            mel = det.flow.inference(tok, v.tokens, v.mel, v.embedding, streaming=streaming, finalize=finalize)
            mel = mel[:, :, self.offset * det.cfg.flow.token_mel_ratio:]  # float32 (HiFT runs in fp32)
            source = None
            if self.cache is not None:
                mel = torch.cat([self.cache[0], mel], dim=2)
                source = self.cache[1]
            wave, src = det.hift.inference(mel, source, self.generator)
            if self.cache is not None:
                wave = fade_in_out(wave, self.cache[2])
            if not finalize:
                self.cache = (mel[:, :, -MEL_CACHE:], src[:, :, -SOURCE_CACHE:], wave[:, -SOURCE_CACHE:])
                wave = wave[:, :-SOURCE_CACHE]
        return wave[0].float().cpu().numpy()


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
