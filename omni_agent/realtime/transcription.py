"""Input audio transcription through the thinker's ASR prompt (language or dialect first, then text)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

import numpy as np

ASR_MAX_TOKENS = 128  # a turn of speech is rarely longer; keeps a runaway tiny model bounded


@runtime_checkable
class Transcriber(Protocol):
    def transcribe(self, audio: np.ndarray, language: str | None = None,
                   prompt: str | None = None) -> AsyncIterator[str]:
        """Stream the transcript of 16 kHz audio as text deltas (the language/dialect name first)."""
        ...


def asr_messages(audio: np.ndarray, language: str | None, prompt: str | None) -> list[dict[str, Any]]:
    """The thinker's ASR prompt (language/dialect first), with OpenAI's transcription ``prompt`` as context."""
    from omni_agent.model.processor import asr_messages as thinker_asr_messages

    messages = thinker_asr_messages(audio, language)
    if prompt:  # OpenAI's transcription "prompt": context for the recogniser
        messages[0]["content"].insert(0, {"type": "text", "text": f"Context: {prompt}\n"})
    return messages


class EngineTranscriber:
    """ASR with the served thinker (greedy decoding)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    async def transcribe(self, audio: np.ndarray, language: str | None = None,
                         prompt: str | None = None) -> AsyncIterator[str]:
        from omni_agent.engine import GenerationRequest, SamplingParams

        loop = asyncio.get_running_loop()
        messages = asr_messages(audio, language, prompt)
        # Mel features and tokenising are CPU work: off the event loop.
        processed = await loop.run_in_executor(None, lambda: self.engine.processor(messages,
                                                                                   add_generation_prompt=True))
        request = GenerationRequest(request_id=f"asr_{uuid.uuid4().hex[:16]}", prompt=processed,
                                    sampling=SamplingParams(temperature=0.0, max_tokens=ASR_MAX_TOKENS))
        finished = False
        try:
            async for out in self.engine.generate(request):
                if out.text:
                    yield out.text
                finished = out.finished
        finally:
            if not finished:
                self.engine.abort(request.request_id)


def split_language(text: str, hint: str | None) -> tuple[str | None, str]:
    """ASR output names the language/dialect first (``"English\\thello"`` or ``"<English> hello"``)."""
    text = text.strip()
    for sep in ("\t", "\n", ":", ">"):
        head, found, tail = text.partition(sep)
        if found and 0 < len(head) <= 24:
            return head.strip("<> ").strip() or hint, tail.strip()
    return hint, text
