"""Speech for the speak node: feed the answer's text deltas to the streaming TTS as they arrive.

The think node starts a :class:`SpeechPipe` on the first answer delta, so the first sentence is being
synthesised while the model is still writing the rest; the speak node closes the pipe and waits for
the last audio chunk. Audio leaves through the graph's custom stream as ``{"type": "audio"}`` parts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any


class SpeechPipe:
    """One answer's text -> ``tts.stream`` -> audio parts on the graph stream.

    Args:
        tts: An ``audio.tts.StreamingTTS`` (anything with ``stream(text_iter, voice=, cancel=)``).
        write: The graph's stream writer.
        voice: Voice name, passed through.
        cancel: Set to stop synthesis within one chunk (barge-in).
    """

    def __init__(self, tts: Any, write: Callable[[dict[str, Any]], None], *, voice: str | None,
                 cancel: asyncio.Event | None, hidden: bool = False, max_seconds: float | None = None):
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._hidden: asyncio.Queue[Any] | None = asyncio.Queue() if hidden else None
        self._write = write
        self._tts = tts
        self._voice = voice
        self._cancel = cancel
        self.samples = 0
        self.max_seconds = max_seconds
        self.capped = False
        """True once the reply reached ``max_seconds`` of speech; the rest of the text is not spoken."""
        self._task = asyncio.create_task(self._run())

    def feed(self, delta: str) -> None:
        if delta and not self.capped:  # past the cap the answer goes on as text only
            self._queue.put_nowait(delta)

    def feed_hidden(self, states: Any) -> None:
        """Thinker states ``[t, D]`` of the text fed so far (conditions the talker)."""
        if self._hidden is not None and states is not None and not self.capped:
            self._hidden.put_nowait(states)

    async def _text(self) -> AsyncIterator[str]:
        while (delta := await self._queue.get()) is not None:
            yield delta

    async def _states(self) -> AsyncIterator[Any]:
        assert self._hidden is not None
        while (h := await self._hidden.get()) is not None:
            yield h

    async def _run(self) -> None:
        hidden = self._states() if self._hidden is not None else None
        rate = getattr(self._tts, "sample_rate", 24000)
        limit = None if self.max_seconds is None else int(self.max_seconds * rate)
        stream = self._tts.stream(self._text(), hidden=hidden, voice=self._voice, cancel=self._cancel)
        async with contextlib.aclosing(stream):
            async for chunk in stream:
                pcm = chunk.pcm if limit is None else chunk.pcm[:max(0, limit - self.samples)]
                self.samples += len(pcm)
                self._write({"type": "audio", "pcm": pcm, "text": chunk.text, "sample_rate": rate})
                if limit is not None and self.samples >= limit:
                    self.capped = True  # a babbling talker (random weights) would speak for minutes
                    break

    async def finish(self) -> None:
        """Close the text and wait until the last audio chunk has been written."""
        self._queue.put_nowait(None)
        if self._hidden is not None:
            self._hidden.put_nowait(None)
        try:
            await self._task
        except asyncio.CancelledError:
            raise
        finally:
            if not self._task.done():
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
