"""Streaming text-to-speech: text deltas -> sentences -> talker tokens -> codes -> PCM at 24 kHz.

Every sentence streams: the talker's BPE tokens are expanded to codes as they come, the codec's
streaming decoder turns each 50 codes (+3 lookahead) into audio, and a streaming resampler brings
it to 24 kHz. Talker steps and decoding run in the default executor so that the event loop keeps
serving other sessions; ``cancel`` is checked around every such step, so a stream stops within one
chunk.

Legend: S samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audio.bpe import CodeBPE
from audio.codec import SpeechCodec, load_codec
from audio.dsp import StreamingResampler
from audio.sentences import SentenceSplitter, count_units
from audio.talker import Talker, TalkerError, _torch_threads

log = logging.getLogger(__name__)

OUTPUT_RATE = 24000  # the realtime protocol's pcm16 rate
TOKENS_PER_UNIT = 8  # cap on talker steps per unit (a word or CJK char is ~0.3 s ~ 15 codes ~ 7 tokens)
MIN_TOKEN_CAP = 12  # ... plus this, so short pieces still get room past the <audio_eos> suppression


@dataclass
class AudioChunk:
    """One piece of synthesised audio.

    Attributes:
        pcm: float32 mono samples at 24 kHz.
        text: the sentence this audio speaks.
        sentence_index: position of that sentence in the turn (0-based).
    """

    pcm: np.ndarray
    text: str
    sentence_index: int


def _thinker_width(settings: Any) -> int:
    """Width of the thinker states the talker will receive: the checkpoint's ``llm_config`` or the
    thinker preset named in the settings (tiny when there are no settings)."""
    import json

    model = getattr(settings, "model", None)
    path = getattr(model, "path", None)
    if path and (Path(path) / "config.json").is_file():
        llm = json.loads((Path(path) / "config.json").read_text()).get("llm_config") or {}
        if "hidden_size" in llm:
            return int(llm["hidden_size"])
    from omni_agent.model.config import ThinkerConfig  # the thinker's public config API

    return ThinkerConfig.preset(getattr(model, "preset", None) or "tiny").hidden_size


# -- the pipeline -------------------------------------------------------------------------------------


@dataclass
class _Piece:
    text: str
    index: int
    hidden: torch.Tensor | None


class StreamingTTS:
    """Text (and thinker states) in, 24 kHz PCM chunks out.

    Args:
        talker: the talker LM.
        bpe: the audio BPE (its vocabulary must match the talker's audio vocabulary).
        codec: the detokenizer backend.
        seed: sampling seed; sentence ``i`` of a turn samples with ``seed + i``.
    """

    sample_rate = OUTPUT_RATE

    def __init__(self, talker: Talker, bpe: CodeBPE, codec: SpeechCodec, *, seed: int = 0):
        if talker.config.audio_vocab_size < bpe.vocab_size:
            raise TalkerError(f"talker audio vocabulary {talker.config.audio_vocab_size} < BPE vocabulary {bpe.vocab_size}")
        self.talker, self.bpe, self.codec, self.seed = talker, bpe, codec, seed
        self.random_weights = True
        """True when the talker has seeded random weights (its speech is noise-like babble)."""

    @classmethod
    def build(cls, settings_or_none: Any = None, *, device: str = "cpu", seed: int = 0) -> StreamingTTS:
        """Build from settings (``settings.model.path`` with a ``talker/`` folder loads Ming's talker,
        its ``s3_bpe`` and, when present, its detokenizer); otherwise the lightweight codec, the
        committed BPE and the tiny talker with seeded random weights."""
        model = getattr(settings_or_none, "model", None)
        path = getattr(model, "path", None)
        if device == "cpu":  # an explicit device argument wins over the settings
            device = getattr(model, "device", None) or "cpu"
        if path and (Path(path) / "talker").is_dir():
            talker_dir = Path(path) / "talker"
            bpe = CodeBPE.from_dir(talker_dir)
            talker = Talker.from_pretrained(talker_dir, device=device)
            try:
                codec = load_codec("ming", path=talker_dir)
            except Exception as e:  # no or unsupported detokenizer: still speak through the light codec
                log.warning("Ming detokenizer not loaded (%s); using the lightweight codec", e)
                codec = load_codec("mel-vq")
            tts = cls(talker, bpe, codec, seed=seed)
            tts.random_weights = False
            return tts
        bpe = CodeBPE.default()
        talker = Talker.build("tiny", seed=seed, device=device, audio_vocab_size=bpe.vocab_size,
                              thinker_hidden_size=_thinker_width(settings_or_none))
        return cls(talker, bpe, load_codec("mel-vq"), seed=seed)

    # -- helpers ------------------------------------------------------------------------------------
    def speaker_embedding(self, voice: str | None) -> torch.Tensor:
        """A deterministic 192-d speaker vector per voice name (a placeholder for CAM++ x-vectors)."""
        g = torch.Generator().manual_seed(zlib.crc32((voice or "default").encode()))
        v = torch.randn(self.talker.config.speaker_dim, generator=g)
        return v / v.norm()

    def _max_tokens(self, text: str) -> int:
        return min(self.talker.config.max_new_tokens, MIN_TOKEN_CAP + TOKENS_PER_UNIT * max(1, count_units(text)))

    def _piece_pcm(self, piece: _Piece, voice: str | None) -> Iterator[np.ndarray]:
        """Synchronous per-piece pipeline: yields 24 kHz PCM each time the decoder emits a block."""
        dec = self.codec.stream_decoder()
        rs = StreamingResampler(self.codec.sample_rate, OUTPUT_RATE)
        tokens = self.talker.stream(piece.text, hidden=piece.hidden, speaker=self.speaker_embedding(voice),
                                    max_new_tokens=self._max_tokens(piece.text), seed=self.seed + piece.index)
        # the light codec and the resampler work on one window at a time: a second intra-op thread
        # only spins against the other sessions' work on shared cores (the talker scopes itself)
        threads = 1 if self.codec.name == "mel-vq" else None
        try:
            for tok in tokens:
                with _torch_threads(threads):
                    pcm = dec.push(self.bpe.token_codes(tok))
                    out = rs.push(pcm) if pcm.size else pcm
                if out.size:
                    yield out
            with _torch_threads(threads):
                tail = rs.push(dec.flush())
                last = np.concatenate([tail, rs.flush()])
            yield last
        finally:
            tokens.close()

    # -- public API -----------------------------------------------------------------------------------
    def synthesize(self, text: str, *, voice: str | None = None, hidden: torch.Tensor | None = None) -> np.ndarray:
        """Speak ``text`` offline -> float32 PCM at 24 kHz (the same audio ``stream`` yields)."""
        splitter = SentenceSplitter()
        pieces = splitter.push(text) + splitter.flush()
        if not pieces:
            raise TalkerError("nothing to speak: the text has no words")
        out = []
        for i, s in enumerate(pieces):
            out.extend(self._piece_pcm(_Piece(s, i, hidden if i == 0 else None), voice))
        return np.concatenate(out).astype(np.float32)

    async def stream(self, text: AsyncIterator[str], *, hidden: AsyncIterator[torch.Tensor] | None = None,
                     voice: str | None = None, cancel: asyncio.Event | None = None) -> AsyncIterator[AudioChunk]:
        """Speak streamed text as it arrives.

        Args:
            text: text deltas (the thinker's output).
            hidden: optional thinker states ``[t, D_thinker]`` per delta; the states gathered while a
                sentence was being written condition that sentence.
            voice: voice name (selects the speaker embedding).
            cancel: when set, the stream stops within one chunk.

        Yields:
            ``AudioChunk``s in order; every sentence streams in several chunks once it is long enough.
        """
        loop = asyncio.get_running_loop()
        cancel = cancel or asyncio.Event()
        pieces: asyncio.Queue[_Piece | None] = asyncio.Queue()
        states: list[torch.Tensor] = []

        async def read_hidden() -> None:
            async for h in hidden:  # type: ignore[union-attr]
                states.append(h)

        def take_states() -> torch.Tensor | None:
            if not states:
                return None
            out = torch.cat(list(states)) if len(states) > 1 else states[0]
            states.clear()
            return out

        async def read_text() -> None:
            splitter = SentenceSplitter()
            n = 0
            try:
                async for delta in text:
                    for s in splitter.push(delta):
                        await pieces.put(_Piece(s, n, take_states()))
                        n += 1
                for s in splitter.flush():
                    await pieces.put(_Piece(s, n, take_states()))
                    n += 1
            finally:
                await pieces.put(None)

        hidden_task = asyncio.create_task(read_hidden()) if hidden is not None else None
        text_task = asyncio.create_task(read_text())
        try:
            while not cancel.is_set():
                getter = asyncio.ensure_future(pieces.get())
                stopper = asyncio.ensure_future(cancel.wait())
                # wait for the next sentence, or for a cancel while the thinker is still writing
                await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if not getter.done():
                    getter.cancel()
                    break
                piece = getter.result()
                if piece is None:
                    break
                gen = self._piece_pcm(piece, voice)
                try:
                    while not cancel.is_set():
                        # one talker/decoder chunk in a worker thread: it is CPU-bound for tens of ms
                        pcm = await loop.run_in_executor(None, next, gen, None)
                        if pcm is None or cancel.is_set():
                            break
                        if pcm.size:
                            yield AudioChunk(pcm, piece.text, piece.index)
                finally:
                    await loop.run_in_executor(None, gen.close)  # close in a thread: it may be mid-step
            if not cancel.is_set():
                await asyncio.wait({text_task})  # the reader has queued its last piece; let it finish
                if text_task.exception() is not None:
                    raise text_task.exception()  # type: ignore[misc]  # the text source failed
        finally:
            for task in (text_task, hidden_task):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
