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
import inspect
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audio.bpe import CodeBPE
from audio.codec import SpeechCodec, load_codec
from audio.dsp import StreamingResampler
from audio.sentences import _CJK, SentenceSplitter, count_units
from audio.talker import MAX_STEPS, Talker, TalkerError
from audio.talker_decode import torch_threads
from audio.voices import VoicePrompt, load_voice

log = logging.getLogger(__name__)

OUTPUT_RATE = 24000  # the realtime protocol's pcm16 rate; Ming's detokenizer rate
TOKENS_PER_UNIT = 8  # random-weight talker only: cap on steps per unit (a word or CJK char is ~7 tokens)
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


def default_voice(text: str) -> str:
    """Ming's choice (test_audio_tasks, gradio_demo): ``luna`` for Chinese text, else ``eng``."""
    return "luna" if _CJK.search(text) else "eng"


# -- the pipeline -------------------------------------------------------------------------------------


@dataclass
class _Piece:
    text: str
    index: int
    hidden: torch.Tensor | None


class StreamingTTS:
    """Text (and thinker states) in, 24 kHz PCM chunks out.

    Args:
        talker: the talker LM (it holds the s3 BPE that turns its tokens into codes).
        codec: the detokenizer backend.
        seed: sampling seed; sentence ``i`` of a turn samples with ``seed + i``.
        random_weights: the talker has seeded random weights (the demo backend): its pieces are
            capped in length, since it rarely samples ``<audio_eos>``.
    """

    sample_rate = OUTPUT_RATE

    def __init__(self, talker: Talker, codec: SpeechCodec, *, seed: int = 0, random_weights: bool = True):
        self.talker, self.codec, self.seed = talker, codec, seed
        self.random_weights = random_weights
        """True when the talker has seeded random weights (its speech is noise-like babble)."""
        self._voices: dict[str, VoicePrompt] = {}
        self._codec_takes_voice = "voice" in inspect.signature(codec.stream_decoder).parameters

    @classmethod
    def build(cls, settings_or_none: Any = None, *, device: str = "cpu", seed: int = 0) -> StreamingTTS:
        """Ming's stack whenever the checkpoint (``settings.model.path``) has it: the released
        talker and its detokenizer, both required (an error names what does not load). Otherwise the
        demo backend: the tiny talker with seeded random weights, the committed BPE, the mel-VQ codec."""
        from audio.talker_checkpoint import has_talker

        model = getattr(settings_or_none, "model", None)
        path = getattr(model, "path", None)
        if device == "cpu":  # an explicit device argument wins over the settings
            device = getattr(model, "device", None) or "cpu"
        if path and has_talker(path):
            talker = Talker.from_pretrained(path, device=device)
            codec = load_codec("ming", path=Path(path) / "talker")
            return cls(talker, codec, seed=seed, random_weights=False)
        if path:
            log.warning("checkpoint %s has no talker_config: speech uses the demo stack (random talker)", path)
        bpe = CodeBPE.default()
        talker = Talker.build("tiny", seed=seed, device=device, bpe=bpe, audio_vocab_size=bpe.vocab_size,
                              thinker_hidden_size=_thinker_width(settings_or_none))
        return cls(talker, load_codec("mel-vq"), seed=seed)

    # -- helpers ------------------------------------------------------------------------------------
    def voice(self, voice: str | None, text: str) -> VoicePrompt:
        """The voice prompt for ``voice`` (a name or a prompt file); None or ``"default"`` (the realtime
        session's default) is Ming's per-language pick."""
        key = default_voice(text) if voice in (None, "", "default") else voice
        if key not in self._voices:
            self._voices[key] = load_voice(key)
        return self._voices[key]

    def _max_steps(self, text: str) -> int:
        if not self.random_weights:
            return MAX_STEPS  # Ming's limit; a trained talker ends with <audio_eos>
        return min(MAX_STEPS, MIN_TOKEN_CAP + TOKENS_PER_UNIT * max(1, count_units(text)))

    def _fit(self, text: str, voice: VoicePrompt) -> list[str]:
        """``text`` as parts that fit under the voice prompt (Ming cuts at 50 characters and would
        fail on a longer text channel; we halve at a space or punctuation until each part fits)."""
        try:
            self.talker.prefix_ids(text, voice)
            return [text]
        except TalkerError as e:
            if "too long" not in str(e) or len(text) < 2:
                raise
        mid = len(text) // 2
        cuts = [i + 1 for i, ch in enumerate(text) if ch in " ，,。.!?！？、；;"]
        cut = min(cuts, key=lambda i: abs(i - mid)) if cuts else mid
        cut = cut if 0 < cut < len(text) else mid
        return [p for part in (text[:cut].strip(), text[cut:].strip()) if part for p in self._fit(part, voice)]

    def _decoder(self, voice: VoicePrompt) -> Any:
        """A streaming decoder; detokenizers that take a voice prompt (Ming's: prompt tokens, mel,
        speaker vector) get it."""
        if self._codec_takes_voice:
            return self.codec.stream_decoder(voice=voice)
        return self.codec.stream_decoder()

    def _piece_pcm(self, piece: _Piece, voice: str | None) -> Iterator[np.ndarray]:
        """Synchronous per-piece pipeline: yields 24 kHz PCM each time the decoder emits a block."""
        prompt = self.voice(voice, piece.text)
        for part in self._fit(piece.text, prompt):
            yield from self._part_pcm(part, piece, prompt)

    def _part_pcm(self, text: str, piece: _Piece, prompt: VoicePrompt) -> Iterator[np.ndarray]:
        dec = self._decoder(prompt)
        rs = StreamingResampler(self.codec.sample_rate, OUTPUT_RATE)
        codes = self.talker.speak(text, prompt, hidden=piece.hidden, seed=self.seed + piece.index,
                                  max_steps=self._max_steps(text))
        # the light codec and the resampler work on one window at a time: a second intra-op thread
        # only spins against the other sessions' work on shared cores (the talker scopes itself)
        threads = 1 if self.codec.name == "mel-vq" else None
        try:
            for run in codes:
                with torch_threads(threads):
                    pcm = dec.push(run)
                    out = rs.push(pcm) if pcm.size else pcm
                if out.size:
                    yield out
            with torch_threads(threads):
                tail = rs.push(dec.flush())
                last = np.concatenate([tail, rs.flush()])
            yield last
        finally:
            codes.close()

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
