"""The agent's history under the realtime truncation rule (``omni_agent/realtime/truncation.py``).

The graph keeps the whole conversation in its checkpoint; what the think node sends to the model is
cut to the context budget the response was given (``RunContext.context_tokens``): media first, oldest
first (a spoken turn keeps its transcript, an image or video leaves a short note), then the oldest
messages. A history never starts with a tool result whose call was dropped. Token counts are the
realtime session's: the engine's tokenizer (else one token per UTF-8 byte), audio at 25 tokens per
second.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from langchain_core.messages import AnyMessage, HumanMessage, ToolMessage

MESSAGE_OVERHEAD = 6
IMAGE_TOKENS = 1280
VIDEO_TOKENS = 4096
AUDIO_TOKENS_PER_S = 25


def _bytes(text: str) -> int:
    return len(text.encode())


def message_tokens(m: AnyMessage, audio_seconds: Callable[[str], float],
                   count: Callable[[str], int] = _bytes) -> int:
    _text = count
    n = MESSAGE_OVERHEAD
    content = m.content
    if isinstance(content, str):
        n += _text(content)
    else:
        for p in content:
            kind = p.get("type") if isinstance(p, dict) else "text"
            if kind == "text":
                n += _text(p.get("text", "") if isinstance(p, dict) else str(p))
            elif kind == "audio":
                n += math.ceil(audio_seconds(str(p.get("artifact_id"))) * AUDIO_TOKENS_PER_S) + 2
            elif kind == "image":
                n += IMAGE_TOKENS
            elif kind == "video":
                n += VIDEO_TOKENS
    for call in getattr(m, "tool_calls", None) or []:
        n += _text(str(call.get("name"))) + _text(str(call.get("args")))
    return n


def _without_media(m: AnyMessage) -> AnyMessage:
    """The message with its media replaced by text: the transcript of a spoken turn, a note for images."""
    if isinstance(m.content, str):
        return m
    parts: list[Any] = []
    for p in m.content:
        kind = p.get("type") if isinstance(p, dict) else "text"
        if kind == "text":
            parts.append(p)
        elif kind in ("image", "video"):
            parts.append({"type": "text", "text": f"[{kind} no longer in context]"})
    transcript = (m.additional_kwargs or {}).get("transcript")
    if transcript and not any(isinstance(p, dict) and p.get("text") == transcript for p in parts):
        parts.insert(0, {"type": "text", "text": transcript})
    text = "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in parts)
    return m.model_copy(update={"content": text})


def _has_media(m: AnyMessage) -> bool:
    return isinstance(m, HumanMessage) and not isinstance(m.content, str) and any(
        isinstance(p, dict) and p.get("type") in ("audio", "image", "video") for p in m.content)


def fit_history(messages: list[AnyMessage], budget: int | None, *, retention_ratio: float | None = None,
                audio_seconds: Callable[[str], float] | None = None,
                count: Callable[[str], int] = _bytes) -> list[AnyMessage]:
    """The messages the model is given: all of them when they fit ``budget`` (or it is None), else cut.

    The last message (the turn being answered) is always kept whole.
    """
    if budget is None or not messages:
        return messages
    seconds = audio_seconds or (lambda _id: 30.0)  # unknown length: count a long turn
    out = list(messages)
    sizes = [message_tokens(m, seconds, count) for m in out]
    total = sum(sizes)
    if total <= budget:
        return messages
    target = budget if retention_ratio is None else int(budget * retention_ratio)
    for i in range(len(out) - 1):
        if total <= target:
            break
        if _has_media(out[i]):
            out[i] = _without_media(out[i])
            new = message_tokens(out[i], seconds, count)
            total -= sizes[i] - new
            sizes[i] = new
    start = 0
    while start < len(out) - 1 and (total > target or isinstance(out[start], ToolMessage)):
        total -= sizes[start]
        start += 1
    return out[start:]


class AudioLengths:
    """Seconds of stored audio artifacts (16-bit mono WAV), read once per id."""

    def __init__(self, store: Any, max_entries: int = 4096) -> None:
        self.store, self.max_entries = store, max_entries
        self._seconds: dict[str, float] = {}

    def __call__(self, artifact_id: str) -> float:
        if artifact_id not in self._seconds:
            got = self.store.get(artifact_id) if self.store is not None else None
            if got is None:
                return 30.0
            data, _mime, meta = got
            rate = int((meta or {}).get("sample_rate") or 16000)
            if len(self._seconds) >= self.max_entries:
                self._seconds.pop(next(iter(self._seconds)))
            self._seconds[artifact_id] = max(0.0, (len(data) - 44) / 2 / rate)
        return self._seconds[artifact_id]
