"""Conversation truncation as the OpenAI Realtime API defines it (``session.truncation``).

The model sees the conversation from ``ConversationState.context_start`` on. Before each response
the session estimates the prompt's tokens; when the items would not fit the context (the engine's
``max_model_len`` minus the instructions, the tools and room for the answer, or
``token_limits.post_instructions``), it drops items from the model's view:

1. media first, oldest first: an item with audio, images or video keeps only its text or transcript
   (an item with no text at all leaves the view);
2. then the oldest items.

With ``"auto"`` it drops just enough; with ``{"type": "retention_ratio", "retention_ratio": r}`` it
drops until only ``r`` of the budget is used, so that the kept prefix stays the same (and cached) for
several turns. ``"disabled"`` never drops: a conversation that does not fit fails the response with
``context_length_exceeded``. Items are never deleted from the conversation itself (the client
still sees them); only the model's view shrinks, and it never grows back over dropped items.

Text is counted with the engine's tokenizer when the responder exposes its engine (else one token
per UTF-8 byte, an upper bound for a byte-level BPE), audio with its exact 25 Hz token count, an image
as :data:`IMAGE_TOKENS` and a video as the media budget; the count of an item is cached on it.
Over-counting only truncates a little early.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from audio.encoder import audio_token_count
from omni_agent.realtime.events import ProtocolError

MESSAGE_OVERHEAD = 6  # role markers and separators around each message
IMAGE_TOKENS = 1280  # an image at the processor's default maximum resolution, rounded up
ANSWER_RESERVE = 512  # room kept for the answer when max_output_tokens is "inf"

TextCounter = Callable[[str], int]


def byte_count(text: str) -> int:
    """Tokens of ``text`` without a tokenizer: one per UTF-8 byte (never fewer than a byte-level BPE gives)."""
    return len(text.encode())


def tokenizer_counter(engine: Any) -> TextCounter:
    """The engine's own tokenizer as a counter (``byte_count`` when the engine has none)."""
    tok = getattr(getattr(engine, "processor", None), "tokenizer", None)
    if tok is None:
        return byte_count
    return lambda text: len(tok.encode(text, add_special_tokens=False).ids) if text else 0


def item_tokens(item: Any, media_budget: int | None, count: TextCounter = byte_count) -> int:
    """Prompt tokens of one conversation item (see the module docstring), cached on the item."""
    key = (item.heard_text, item.media_dropped, len(item.content), item.arguments, item.output,
           tuple(p.get("transcript") or p.get("text") or "" for p in item.content), id(count))
    cached = getattr(item, "_tokens", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    n = _item_tokens(item, media_budget, count)
    item._tokens = (key, n)
    return n


def _item_tokens(item: Any, media_budget: int | None, text_tokens: TextCounter) -> int:
    n = MESSAGE_OVERHEAD
    if item.type == "function_call":
        return n + text_tokens(json.dumps({"name": item.name, "arguments": item.arguments}))
    if item.type == "function_call_output":
        return n + text_tokens(item.output or "")
    for i, part in enumerate(item.content):
        kind = part["type"]
        if kind in ("input_text", "output_text"):
            n += text_tokens(part.get("text") or "")
        elif kind == "output_audio":
            n += text_tokens(item.heard_text if item.heard_text is not None else part.get("transcript") or "")
        elif kind == "input_audio":
            if item.input_audio is not None and not item.media_dropped:
                n += audio_token_count(len(item.input_audio)) + 2
            else:
                n += text_tokens(part.get("transcript") or "")
        elif not item.media_dropped and (i in item.media.parts or i in item.media.frames):
            n += (media_budget or IMAGE_TOKENS) if kind == "input_video" else IMAGE_TOKENS
    return n


def has_media(item: Any) -> bool:
    if item.media_dropped:
        return False
    return item.input_audio is not None or bool(item.media.parts) or bool(item.media.frames)


def drop_media(item: Any) -> None:
    """Replace the item's media by its text in the model's view (a voice turn keeps its transcript)."""
    item.media_dropped = True


def budget_for(truncation: Any, max_model_len: int, instructions_tokens: int, max_output_tokens: int | str) -> int:
    """Tokens the conversation (after the instructions) may use."""
    reserve = ANSWER_RESERVE if max_output_tokens == "inf" else int(max_output_tokens)
    budget = max_model_len - instructions_tokens - reserve
    limits = getattr(truncation, "token_limits", None)
    if limits is not None and limits.post_instructions is not None:
        budget = min(budget, limits.post_instructions)
    return budget


def fit(conversation: Any, truncation: Any, budget: int, count: TextCounter = byte_count,
        event_id: str | None = None) -> list[str]:
    """Move the conversation's context start (and drop media) until its items fit ``budget``.

    Args:
        conversation: a ``ConversationState``.
        truncation: ``"auto"``, ``"disabled"`` or a retention-ratio config (``.retention_ratio``).
        budget: tokens the items may take.

    Returns:
        ids of the items that left the model's view or lost their media.

    Raises:
        ProtocolError: ``context_length_exceeded`` when truncation is disabled (or even the newest
            item alone does not fit).
    """
    items = conversation.items[conversation.context_start:]
    sizes = [item_tokens(i, conversation.media_budget, count) for i in items]
    total = sum(sizes)
    if total <= budget:
        return []
    if truncation == "disabled":
        raise ProtocolError("context_length_exceeded",
                            f"the conversation needs about {total} tokens but the context leaves {budget}; "
                            "truncation is disabled (set session.truncation to \"auto\" or delete items)",
                            event_id, "session.truncation")
    ratio = getattr(truncation, "retention_ratio", None)
    target = budget if ratio is None else int(budget * ratio)
    changed: list[str] = []
    # 1. media, oldest first (the newest item is the turn being answered: it keeps its media)
    for n, item in enumerate(items[:-1]):
        if total <= target:
            break
        if has_media(item):
            drop_media(item)
            new = item_tokens(item, conversation.media_budget, count)
            total -= sizes[n] - new
            sizes[n] = new
            changed.append(item.id)
    # 2. oldest items
    start = 0
    while total > target and start < len(items) - 1:
        total -= sizes[start]
        changed.append(items[start].id)
        start += 1
    conversation.context_start += start
    if total > budget:
        raise ProtocolError("context_length_exceeded",
                            f"the newest item alone needs about {total} tokens; the context leaves {budget}",
                            event_id)
    return changed


def response_view(conversation: Any, truncation: Any, resp: Any, model_len: int, count: TextCounter) -> Any:
    """What a response's responder continues: the conversation within the context (truncated as
    configured), or the response's own ``input`` items. Sets ``resp.options.context_tokens`` (and the
    retention ratio) so responders that keep their own history cut it the same way.

    Raises:
        ProtocolError: ``context_length_exceeded`` (truncation disabled, or one item alone too large).
    """
    from omni_agent.realtime.conversation import ConversationState

    instructions = resp.opts["instructions"]
    if resp.input_items is not None:
        state = ConversationState(media_budget=conversation.media_budget)
        for it in resp.input_items:
            state.add(it)
        return state.view(instructions)
    fixed = count(instructions) + sum(count(json.dumps(t)) for t in resp.opts["tools"])
    budget = budget_for(truncation, model_len, fixed, resp.opts["max_output_tokens"])
    fit(conversation, truncation, budget, count)
    if truncation != "disabled":
        resp.options.context_tokens = budget
        resp.options.retention_ratio = getattr(truncation, "retention_ratio", None)
    return conversation.view(instructions)
