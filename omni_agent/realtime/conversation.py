"""Conversation state of one realtime session: ordered items, their audio, and the model's view of them."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from omni_agent.realtime.events import ItemIn, ProtocolError
from omni_agent.realtime.formats import FORMAT_RATE, b64decode_strict, b64encode, decode_audio, encode_audio
from omni_agent.realtime.media import CAMERA_MIN_FRAMES, ItemMedia, camera_clip
from omni_agent.realtime.responder import Conversation

MODEL_RATE = 16000  # the thinker's audio encoder input rate
OUTPUT_RATE = 24000  # StreamingTTS output rate


def item_id() -> str:
    return f"item_{uuid.uuid4().hex[:20]}"


@dataclass
class Item:
    """One conversation item. Audio is kept as float32 (16 kHz input, 24 kHz output), not as wire bytes."""

    id: str
    type: str  # message | function_call | function_call_output
    role: str | None = None
    status: str = "completed"
    content: list[dict[str, Any]] = field(default_factory=list)
    """Parts without audio bytes: input_text/input_audio(transcript)/output_text/output_audio(transcript)."""
    input_audio: np.ndarray | None = None  # 16 kHz, for user audio parts
    output_audio: list[np.ndarray] = field(default_factory=list)  # 24 kHz chunks, assistant speech
    _chunk_texts: list[str] = field(default_factory=list)  # the sentence each output chunk speaks
    sent_samples: int = 0
    """Assistant audio (24 kHz samples) actually written to the client; truncation never goes past it."""
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None
    media: ItemMedia = field(default_factory=ItemMedia)
    """Decoded ``input_video``/``input_image`` parts by content index (kept for every later prompt)."""
    heard_text: str | None = None
    """After ``conversation.item.truncate``: the text of the audio the user heard. The protocol item
    loses its transcript (as the spec says); the model, which reads assistant turns as text, keeps this."""
    media_dropped: bool = False
    """Context truncation replaced this item's media by its transcript/text (see ``truncation.py``)."""
    _tokens: tuple[Any, int] | None = None  # truncation's cached token count (key, tokens)

    @property
    def output_audio_samples(self) -> int:
        return sum(len(c) for c in self.output_audio)

    def to_json(self, audio_format: str | None = None, *, for_model: bool = False) -> dict[str, Any]:
        """The protocol item; with ``audio_format`` the audio is included (``conversation.item.retrieve``).

        ``for_model``: the item as the responder sees it (a truncated answer keeps the text heard).
        """
        out: dict[str, Any] = {"id": self.id, "object": "realtime.item", "type": self.type, "status": self.status}
        if self.type == "message":
            parts = []
            for part in self.content:
                p = dict(part)
                if for_model and p["type"] == "output_audio" and self.heard_text is not None:
                    p["transcript"] = self.heard_text
                if audio_format and p["type"] == "input_audio" and self.input_audio is not None:
                    p["audio"] = b64encode(encode_audio(self.input_audio, MODEL_RATE, audio_format))
                if audio_format and p["type"] == "output_audio" and self.output_audio:
                    p["audio"] = b64encode(encode_audio(np.concatenate(self.output_audio), OUTPUT_RATE,
                                                        audio_format))
                parts.append(p)
            out.update(role=self.role, content=parts)
        elif self.type == "function_call":
            out.update(call_id=self.call_id, name=self.name, arguments=self.arguments or "")
        else:
            out.update(call_id=self.call_id, output=self.output or "")
        return out

    def truncate_audio(self, samples: int, *, keep_transcript: bool = False) -> None:
        """Keep the first ``samples`` of assistant audio.

        The transcript is removed (``conversation.item.truncate``: no text the user has not heard stays
        in the item); ``keep_transcript`` keeps the text of the chunks kept (a barge-in's own cut).
        """
        kept, left, texts = [], samples, []
        for chunk, text in zip(self.output_audio, self._chunk_texts, strict=False):
            if left <= 0:
                break
            kept.append(chunk[:left])
            texts.append(text)
            left -= len(chunk)
        self.output_audio = kept
        self._chunk_texts = texts
        self.heard_text = "".join(texts)
        for p in self.content:
            if p["type"] == "output_audio":
                p["transcript"] = self.heard_text if keep_transcript else ""
        self.status = "incomplete"


def item_from_stored(row: dict[str, Any]) -> Item:
    """An item read back from the journal (``journal.py``): its JSON, audio and heard text."""
    j = row["item"]
    item = Item(j["id"], j["type"], role=j.get("role"), status=j.get("status", "completed"),
                content=[dict(p) for p in j.get("content") or []], input_audio=row["input_audio"],
                call_id=j.get("call_id"), name=j.get("name"), arguments=j.get("arguments"),
                output=j.get("output"), heard_text=row["heard_text"])
    if row["output_audio"] is not None:
        item.output_audio = [row["output_audio"]]
        item._chunk_texts = [item.heard_text or next((p.get("transcript") or "" for p in item.content
                                                      if p["type"] == "output_audio"), "")]
        item.sent_samples = len(row["output_audio"])
    return item


def item_from_client(spec: ItemIn, input_format: str, event_id: str | None, media: ItemMedia | None = None) -> Item:
    """A ``conversation.item.create`` item -> Item (audio decoded and resampled to 16 kHz).

    ``media`` is the item's decoded video and image parts (``realtime.media.decode_item_media``, run
    off the event loop by the session); an item with such parts needs it.

    Raises:
        ProtocolError: missing fields for the item type, bad base64 or audio.
    """
    from audio.dsp import resample

    iid = spec.id or item_id()
    if spec.type == "message":
        if spec.role is None or spec.content is None:
            raise ProtocolError("invalid_value", "a message item needs role and content", event_id, "item")
        item = Item(iid, "message", role=spec.role)
        for i, part in enumerate(spec.content):
            if part.type in ("input_image", "input_video"):
                if media is None or i not in media.json:
                    raise ProtocolError("unsupported_content", f"content type {part.type} is not supported here",
                                        event_id, f"item.content.{i}.type")
                item.content.append(media.json[i])
                # the item's own content indexes: parts before this one may be added or not
                n = len(item.content) - 1
                if i in media.parts:
                    item.media.parts[n] = media.parts[i]
                if i in media.frames:
                    item.media.frames[n] = media.frames[i]
            elif part.type in ("input_text", "text", "output_text"):
                if part.text is None:
                    raise ProtocolError("invalid_value", "a text part needs text", event_id, f"item.content.{i}.text")
                kind = "output_text" if spec.role == "assistant" else "input_text"
                item.content.append({"type": kind, "text": part.text})
            elif part.type in ("input_audio", "audio", "output_audio"):
                if spec.role == "assistant":
                    item.content.append({"type": "output_audio", "transcript": part.transcript or ""})
                    continue
                if part.audio is None:
                    raise ProtocolError("invalid_value", "an audio part needs audio", event_id,
                                        f"item.content.{i}.audio")
                raw = b64decode_strict(part.audio, event_id, f"item.content.{i}.audio")
                wave = decode_audio(raw, input_format, event_id)
                item.input_audio = resample(wave, FORMAT_RATE[input_format], MODEL_RATE)
                item.content.append({"type": "input_audio", "transcript": part.transcript})
            else:
                raise ProtocolError("unsupported_content", f"content type {part.type} is not supported here",
                                    event_id, f"item.content.{i}.type")
        return item
    if spec.type == "function_call":
        if not spec.name or spec.call_id is None:
            raise ProtocolError("invalid_value", "a function_call item needs name and call_id", event_id, "item")
        return Item(iid, "function_call", call_id=spec.call_id, name=spec.name, arguments=spec.arguments or "{}")
    if spec.call_id is None or spec.output is None:
        raise ProtocolError("invalid_value", "a function_call_output item needs call_id and output", event_id,
                            "item")
    return Item(iid, "function_call_output", call_id=spec.call_id, output=spec.output)


class ConversationState:
    """The ordered items of the session's default conversation."""

    def __init__(self, max_items: int = 1000, media_budget: int | None = None) -> None:
        self.items: list[Item] = []
        self.max_items = max_items
        self.media_budget = media_budget
        """Token budget of one video or camera clip (None: unlimited)."""
        self._clips: dict[tuple[tuple[str, int], ...], Any] = {}  # camera run -> its clip (stable content hash)
        self.context_start = 0
        """Index of the first item the model sees (context truncation moves it forward, ``truncation.py``)."""

    def get(self, iid: str) -> Item | None:
        return next((i for i in self.items if i.id == iid), None)

    def last_id(self) -> str | None:
        return self.items[-1].id if self.items else None

    def add(self, item: Item, previous_item_id: str | None = None, event_id: str | None = None) -> str | None:
        """Insert after ``previous_item_id`` (end when None; ``"root"`` = first). Returns the id before it."""
        if self.get(item.id) is not None:
            raise ProtocolError("duplicate_item_id", f"item {item.id} already exists", event_id, "item.id")
        if previous_item_id is None:
            prev = self.last_id()
            self.items.append(item)
        elif previous_item_id == "root":
            prev = None
            self.items.insert(0, item)
        else:
            idx = next((n for n, i in enumerate(self.items) if i.id == previous_item_id), None)
            if idx is None:
                raise ProtocolError("item_not_found", f"previous_item_id {previous_item_id} does not exist",
                                    event_id, "previous_item_id")
            prev = previous_item_id
            self.items.insert(idx + 1, item)
            if idx + 1 < self.context_start:
                self.context_start += 1  # inserted among items already out of the model's view
        if previous_item_id == "root" and self.context_start:
            self.context_start += 1
        while len(self.items) > self.max_items:  # oldest first, like OpenAI's context truncation
            self.items.pop(0)
            self.context_start = max(0, self.context_start - 1)
        return prev

    def delete(self, iid: str) -> bool:
        idx = next((n for n, i in enumerate(self.items) if i.id == iid), None)
        if idx is None:
            return False
        del self.items[idx]
        if idx < self.context_start:
            self.context_start -= 1
        return True

    @property
    def in_context(self) -> list[Item]:
        """The items the model sees (from ``context_start``)."""
        return self.items[self.context_start:]

    def camera_runs(self, items: list[Item] | None = None) -> list[list[tuple[str, int]]]:
        """Runs of camera frames in a row: ``(item id, content index)`` lists, oldest first.

        A run continues across consecutive user messages and ends at any other part or item, or where
        the capture times go backwards.
        """
        runs: list[list[tuple[str, int]]] = []
        run: list[tuple[str, int]] = []
        last_t = None
        for it in self.items if items is None else items:
            for n in range(len(it.content)) if it.type == "message" and it.role == "user" else [-1]:
                frame = None if it.media_dropped else it.media.frames.get(n)
                if frame is None or (last_t is not None and frame[1] < last_t):
                    if run:
                        runs.append(run)
                    run, last_t = [], None
                if frame is not None:
                    run.append((it.id, n))
                    last_t = frame[1]
        if run:
            runs.append(run)
        return runs

    def prepare_clips(self, max_tokens: int | None = None) -> None:
        """Build the clips of the current camera runs (blocking: resizing; the session runs it in an executor)."""
        for run in self.camera_runs():
            self._run_clip(run, {i.id: i for i in self.items}, max_tokens)

    def _run_clip(self, run: list[tuple[str, int]], by_id: dict[str, Item], max_tokens: int | None) -> Any:
        key = tuple(run)
        clip = self._clips.get(key)
        if clip is None:
            clip = camera_clip([by_id[iid].media.frames[n] for iid, n in run], max_tokens=max_tokens)
            self._clips = {k: v for k, v in self._clips.items() if set(k) & set(run) == set()}
            self._clips[key] = clip
        return clip

    def _frame_parts(self, items: list[Item], max_tokens: int | None) -> dict[tuple[str, int], list[dict[str, Any]]]:
        """Processor parts standing for each camera frame: the run's clip at its first frame, or the image."""
        by_id = {i.id: i for i in items}
        out: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for run in self.camera_runs(items):
            if len(run) >= CAMERA_MIN_FRAMES:
                out[run[0]] = [{"type": "video", "video": self._run_clip(run, by_id, max_tokens)}]
                out.update({key: [] for key in run[1:]})
            else:
                out.update({(iid, n): [{"type": "image", "image": by_id[iid].media.frames[n][0]}]
                            for iid, n in run})
        return out

    def view(self, instructions: str, extra: list[Item] | None = None) -> Conversation:
        """The history as the responder sees it (processor chat messages + protocol items).

        Each message carries its ``item_id``. Videos and images come as processor parts
        (``{"type": "video", "video": clip}`` then the clip's audio, ``{"type": "image", "image": PIL}``)
        in the item's part order, so a video asked about first stays a shared prompt prefix.
        """
        messages: list[dict[str, Any]] = []
        if instructions:
            messages.append({"role": "system", "content": instructions})
        items = self.in_context + (extra or [])
        frames = self._frame_parts(items, self.media_budget)
        for it in items:
            if it.type == "message":
                parts: list[dict[str, Any]] = []
                for n, p in enumerate(it.content):
                    if (it.id, n) in frames:
                        parts.extend(frames[it.id, n])
                    elif n in it.media.parts and not it.media_dropped:
                        parts.extend(it.media.parts[n])
                    elif p["type"] in ("input_text", "output_text"):
                        parts.append({"type": "text", "text": p["text"]})
                    elif p["type"] == "input_audio" and it.input_audio is not None and not it.media_dropped:
                        parts.append({"type": "audio", "audio": it.input_audio})
                    elif p["type"] == "input_audio" and p.get("transcript"):  # media dropped by truncation
                        parts.append({"type": "text", "text": p["transcript"]})
                    elif p["type"] == "output_audio" and (it.heard_text or p.get("transcript")):
                        parts.append({"type": "text", "text": it.heard_text or p["transcript"]})
                if not parts:
                    continue
                if all(p["type"] == "text" for p in parts):
                    messages.append({"role": it.role, "content": "".join(p["text"] for p in parts), "item_id": it.id})
                else:
                    messages.append({"role": it.role, "content": parts, "item_id": it.id})
            elif it.type == "function_call":
                call = json.dumps({"name": it.name, "arguments": it.arguments})
                messages.append({"role": "assistant", "content": f"<tool_call>{call}</tool_call>"})
            else:
                messages.append({"role": "user", "content": f"<tool_response>{it.output}</tool_response>"})
        return Conversation(messages=messages, items=[i.to_json(for_model=True) for i in items])
