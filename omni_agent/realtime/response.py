"""One response in flight: responder frames -> output items, content parts and deltas, in protocol order.

Order for a spoken answer (GA names): ``response.created``, ``response.output_item.added``,
``conversation.item.added``, ``response.content_part.added``, then interleaved
``response.output_audio_transcript.delta`` / ``response.output_audio.delta``, then
``response.output_audio.done``, ``response.output_audio_transcript.done``,
``response.content_part.done``, ``response.output_item.done``, ``conversation.item.done``
(and ``conversation.item.truncated`` after a barge-in), ``response.done``, ``rate_limits.updated``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from audio.codec.base import CODE_RATE_HZ
from audio.dsp import StreamingResampler, resample
from audio.encoder import audio_token_count
from omni_agent.realtime import events as ev
from omni_agent.realtime import metrics
from omni_agent.realtime.config import GA_FORMAT
from omni_agent.realtime.conversation import OUTPUT_RATE, Item, item_id
from omni_agent.realtime.formats import FORMAT_RATE, b64encode, encode_audio
from omni_agent.realtime.responder import (
    Artifact,
    AudioDelta,
    ConfirmationRequest,
    FunctionCallDelta,
    FunctionCallDone,
    ResponseFinished,
    ResponseOptions,
    TextDelta,
    ToolProgress,
)

log = logging.getLogger(__name__)

CANCEL_GRACE_S = 5.0
"""A cancelled responder that has not stopped after this long is abandoned: ``response.done`` goes out anyway."""


class ResponseHost(Protocol):
    """What a response needs from its session (``RealtimeSession`` implements it; no import cycle)."""

    cfg: Any
    conversation: Any
    responder: Any
    has_spoken: bool

    @property
    def session_id(self) -> str: ...

    def emit(self, event: ev._ServerEvent, *, on_sent: Callable[[], None] | None = None,
             drop: Callable[[], bool] | None = None) -> None: ...

    def error(self, err: ev.ProtocolError) -> None: ...

    def response_view(self, resp: ActiveResponse) -> Any:
        """The conversation the responder continues (context truncation applied); may raise ProtocolError."""
        ...

    def response_finished(self, resp: ActiveResponse) -> None: ...

    def rate_limits(self) -> list[dict[str, Any]]: ...


class ActiveResponse:
    """Runs one response of a session; ``cancel()`` stops it within one audio chunk."""

    def __init__(self, session: ResponseHost, opts: dict[str, Any], input_items: list[Item] | None,
                 turn_end_t: float | None) -> None:
        self.session = session
        self.opts = opts
        self.id = f"resp_{uuid.uuid4().hex[:20]}"
        self.input_items = input_items
        self.turn_end_t = turn_end_t
        self.in_conversation = opts["conversation"] != "none"
        self.speak = "audio" in opts["modalities"]
        self.cancel_event = asyncio.Event()
        self.cancel_reason: str | None = None
        self.barge_in_t: float | None = None
        self.task: asyncio.Task | None = None
        self.started = False
        self.done = False
        """``response.done`` has been sent (exactly once, whatever happened)."""
        self.output: list[Item] = []
        self.message: Item | None = None
        self._out_rs: StreamingResampler | None = None  # G.711 output: 24 kHz -> 8 kHz over the message
        self.text = ""
        self.calls: dict[str, Item] = {}
        self.t0 = time.perf_counter()
        self.first_audio_t: float | None = None
        self.finished: ResponseFinished | None = None
        self.options = ResponseOptions(response_id=self.id)
        self.input_audio_tokens = 0
        self._watchdog: asyncio.TimerHandle | None = None

    def attach(self, task: asyncio.Task) -> None:
        """Bind the task running :meth:`run`; however it ends (even cancelled before it started), ``response.done`` goes out."""
        self.task = task
        task.add_done_callback(self._task_ended)

    def _task_ended(self, task: asyncio.Task) -> None:
        if self.done:
            return
        if task.cancelled():
            why = "the response task was cancelled before it finished"
        elif task.exception() is not None:
            why = f"the response task failed: {type(task.exception()).__name__}"
        else:
            why = "the response task ended without finishing the response"
        log.error("response %s: %s", self.id, why)
        self._finish_safely(None if self.cancel_event.is_set() else why)

    # ---------------------------------------------------------------------------------------------

    async def cancel(self, reason: str, barge_in_t: float | None = None) -> None:
        """Stop generating now; queued audio not yet written is dropped (see ``_dropped``).

        Safe at any moment: before the task has started, ``run`` sees the flag and finishes at once;
        a responder that does not stop within :data:`CANCEL_GRACE_S` is abandoned by a watchdog.
        """
        if self.done or self.cancel_event.is_set():
            return
        self.cancel_reason, self.barge_in_t = reason, barge_in_t
        self.cancel_event.set()
        if (self.started and self.task is not None and not self.task.done()
                and self.task is not asyncio.current_task()):
            self.task.cancel()  # interrupts the responder even while it waits on the model
        self._watchdog = asyncio.get_running_loop().call_later(CANCEL_GRACE_S, self._abandon)

    def _abandon(self) -> None:
        if self.done:
            return
        log.error("response %s: responder did not stop %.0f s after cancel; finishing without it", self.id,
                  CANCEL_GRACE_S)
        self._finish_safely(None)

    def _dropped(self) -> bool:
        return self.cancel_event.is_set()

    def _resource(self, status: str) -> dict[str, Any]:
        mot = self.opts["max_output_tokens"]
        common = {"id": self.id, "object": "realtime.response", "status": status, "status_details": None,
                  "output": [], "conversation_id": "conv_default" if self.in_conversation else None,
                  "max_output_tokens": mot, "metadata": self.opts["metadata"], "usage": None}
        if self.session.cfg.beta:
            return {**common, "modalities": self.opts["modalities"], "voice": self.opts["voice"],
                    "output_audio_format": self.opts["output_format"], "temperature": self.opts["temperature"]}
        return {**common, "output_modalities": self.opts["modalities"],
                "audio": {"output": {"format": GA_FORMAT[self.opts["output_format"]], "voice": self.opts["voice"]}}}

    def _response_options(self) -> ResponseOptions:
        s = self.session
        mot = self.opts["max_output_tokens"]
        choice = self.opts["tool_choice"]
        return ResponseOptions(
            response_id=self.id, modalities=tuple(self.opts["modalities"]), voice=self.opts["voice"],
            temperature=self.opts["temperature"], max_output_tokens=None if mot == "inf" else mot,
            tools=self.opts["tools"], tool_choice=choice if isinstance(choice, str) else "required",
            metadata=self.opts["metadata"], session_id=s.session_id if self.input_items is None else None)

    async def run(self) -> None:
        """Produce the response; always ends with exactly one ``response.done`` (see ``_finish_safely``)."""
        self.started = True
        s = self.session
        error: str | None = None
        gen = None
        try:
            s.emit(ev.ResponseCreated(response=self._resource("in_progress")))
            self.options = self._response_options()
            if not self.cancel_event.is_set():  # cancelled before it started: nothing to generate
                view = s.response_view(self)
                self.input_audio_tokens = _audio_tokens(view)
                gen = s.responder.respond(view, self.options, self.cancel_event)
                async for frame in gen:
                    if self.cancel_event.is_set() or self.done:
                        break
                    self._on_frame(frame)
        except asyncio.CancelledError:
            if not self.cancel_event.is_set():  # the session is closing
                self.cancel_reason = self.cancel_reason or "client_disconnected"
                self.cancel_event.set()
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # we asked for it: finish the response's events normally
        except ev.ProtocolError as e:  # e.g. the conversation does not fit and truncation is disabled
            error = e.message
        except Exception as e:
            log.exception("responder failed")
            error = f"{type(e).__name__}: {e}"
        self._finish_safely(error)
        if gen is not None:  # after response.done: a slow responder cannot hold the session's next turn
            with contextlib.suppress(Exception, asyncio.CancelledError):
                async with asyncio.timeout(CANCEL_GRACE_S):
                    await gen.aclose()

    # ---------------------------------------------------------------------------------------------

    def _on_frame(self, frame: Any) -> None:
        s = self.session
        if isinstance(frame, TextDelta):
            msg = self._open_message()
            self.text += frame.text
            cls = ev.ResponseOutputAudioTranscriptDelta if self.speak else ev.ResponseOutputTextDelta
            s.emit(cls(response_id=self.id, item_id=msg.id, output_index=self._index(msg), delta=frame.text),
                   drop=self._dropped)
        elif isinstance(frame, AudioDelta):
            if self.speak and len(frame.pcm):
                self._audio(frame)
        elif isinstance(frame, FunctionCallDelta):
            item = self._open_call(frame.call_id, frame.name)
            item.arguments = (item.arguments or "") + frame.arguments_delta
            s.emit(ev.ResponseFunctionCallArgumentsDelta(response_id=self.id, item_id=item.id,
                                                         output_index=self._index(item), call_id=frame.call_id,
                                                         delta=frame.arguments_delta))
        elif isinstance(frame, FunctionCallDone):
            item = self._open_call(frame.call_id, frame.name)
            if not item.arguments:  # no deltas were streamed: the done event carries the whole JSON
                item.arguments = frame.arguments
            self._close_call(item)  # else ``arguments`` stays the joined deltas, as clients rebuild it
        elif isinstance(frame, ResponseFinished):
            self.finished = frame
        elif s.cfg.omni_events:
            if isinstance(frame, ToolProgress):
                s.emit(ev.OmniToolProgress(response_id=self.id, call_id=frame.call_id, message=frame.message,
                                           fraction=frame.fraction))
            elif isinstance(frame, Artifact):
                s.emit(ev.OmniArtifact(response_id=self.id, kind=frame.kind, mime_type=frame.mime_type,
                                       data=b64encode(frame.data) if frame.data else None, uri=frame.uri,
                                       name=frame.name, call_id=frame.call_id))
            elif isinstance(frame, ConfirmationRequest):
                s.emit(ev.OmniConfirmationRequest(response_id=self.id, call_id=frame.call_id,
                                                  action=frame.action, reason=frame.reason))

    def _audio(self, frame: AudioDelta) -> None:
        s, msg = self.session, self._open_message()
        pcm = np.asarray(frame.pcm, np.float32)
        if frame.sample_rate != OUTPUT_RATE:
            pcm = resample(pcm, frame.sample_rate, OUTPUT_RATE)
        fmt = self.opts["output_format"]
        if fmt == "pcm16":
            data = b64encode(encode_audio(pcm, OUTPUT_RATE, fmt))
        else:  # G.711 at 8 kHz: one resampler over the message, so chunk edges are not zero-padded
            if self._out_rs is None:
                self._out_rs = StreamingResampler(OUTPUT_RATE, FORMAT_RATE[fmt])
            data = b64encode(encode_audio(self._out_rs.push(pcm), FORMAT_RATE[fmt], fmt))
        msg.output_audio.append(pcm)
        msg._chunk_texts.append(frame.text)
        s.has_spoken = True
        n = len(pcm)

        def sent() -> None:
            msg.sent_samples += n
            metrics.AUDIO_OUT_SECONDS.inc(n / OUTPUT_RATE)
            if self.first_audio_t is None:
                self.first_audio_t = time.perf_counter()

        s.emit(ev.ResponseOutputAudioDelta(response_id=self.id, item_id=msg.id, output_index=self._index(msg),
                                           delta=data), on_sent=sent, drop=self._dropped)

    def _index(self, item: Item) -> int:
        return self.output.index(item)

    def _add_output(self, item: Item) -> None:
        s = self.session
        self.output.append(item)
        s.emit(ev.ResponseOutputItemAdded(response_id=self.id, output_index=len(self.output) - 1,
                                          item=item.to_json()))
        if self.in_conversation:
            prev = s.conversation.add(item)
            s.emit(ev.ConversationItemAdded(previous_item_id=prev, item=item.to_json()))

    def _open_message(self) -> Item:
        if self.message is not None:
            return self.message
        item = Item(item_id(), "message", role="assistant", status="in_progress")
        self._add_output(item)
        part = {"type": "output_audio", "transcript": ""} if self.speak else {"type": "output_text", "text": ""}
        item.content.append(part)
        self.session.emit(ev.ResponseContentPartAdded(response_id=self.id, item_id=item.id,
                                                      output_index=self._index(item), part=_wire_part(part)))
        self.message, self.text = item, ""
        return item

    def _close_message(self, status: str) -> None:
        item, s = self.message, self.session
        if item is None:
            return
        self.message = None
        idx = self._index(item)
        part = item.content[0]
        if self.speak:
            part["transcript"] = self.text
            item._chunk_texts = _spread_text(item._chunk_texts, self.text)
            if self._out_rs is not None:  # the resampler's held-back tail (a few ms)
                fmt = self.opts["output_format"]
                tail = encode_audio(self._out_rs.flush(), FORMAT_RATE[fmt], fmt)
                if tail and not self.cancel_event.is_set():  # a cancelled answer stops where it was cut
                    s.emit(ev.ResponseOutputAudioDelta(response_id=self.id, item_id=item.id, output_index=idx,
                                                       delta=b64encode(tail)))
                self._out_rs = None
            s.emit(ev.ResponseOutputAudioDone(response_id=self.id, item_id=item.id, output_index=idx))
            s.emit(ev.ResponseOutputAudioTranscriptDone(response_id=self.id, item_id=item.id, output_index=idx,
                                                        transcript=self.text))
        else:
            part["text"] = self.text
            s.emit(ev.ResponseOutputTextDone(response_id=self.id, item_id=item.id, output_index=idx,
                                             text=self.text))
        s.emit(ev.ResponseContentPartDone(response_id=self.id, item_id=item.id, output_index=idx,
                                          part=_wire_part(part)))
        if status == "incomplete" and self.speak and item.sent_samples < item.output_audio_samples:
            # cut: audio never written to the client is not part of the item (no event: the client
            # truncates to what it played with conversation.item.truncate, as the spec asks)
            item.truncate_audio(item.sent_samples, keep_transcript=True)
        item.status = status
        s.emit(ev.ResponseOutputItemDone(response_id=self.id, output_index=idx, item=item.to_json()))
        if self.in_conversation:
            s.emit(ev.ConversationItemDone(item=item.to_json()))

    def _open_call(self, call_id: str, name: str) -> Item:
        if call_id in self.calls:
            return self.calls[call_id]
        self._close_message("completed")
        item = Item(item_id(), "function_call", status="in_progress", call_id=call_id, name=name, arguments="")
        self.calls[call_id] = item
        self._add_output(item)
        return item

    def _close_call(self, item: Item, status: str = "completed") -> None:
        s = self.session
        if item.status != "in_progress":
            return
        item.status = status
        idx = self._index(item)
        s.emit(ev.ResponseFunctionCallArgumentsDone(response_id=self.id, item_id=item.id, output_index=idx,
                                                    call_id=item.call_id or "", name=item.name or "",
                                                    arguments=item.arguments or ""))
        s.emit(ev.ResponseOutputItemDone(response_id=self.id, output_index=idx, item=item.to_json()))
        if self.in_conversation:
            s.emit(ev.ConversationItemDone(item=item.to_json()))

    # ---------------------------------------------------------------------------------------------

    def _finish_safely(self, error: str | None) -> None:
        """Send ``response.done`` once; an internal failure becomes an ``error`` event plus a failed ``response.done``."""
        if self.done:
            return
        self.done = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        s = self.session
        try:
            self._finish(error)
        except Exception as e:
            log.exception("response %s: finishing failed", self.id)
            message = f"internal error while finishing the response: {type(e).__name__}"
            s.error(ev.ProtocolError("server_error", message, type="server_error"))
            resource = self._resource("failed")
            resource["status_details"] = {"type": "failed", "error": {"type": "server_error", "message": message}}
            with contextlib.suppress(Exception):
                s.emit(ev.ResponseDone(response=resource))
        finally:
            s.response_finished(self)

    def _finish(self, error: str | None) -> None:
        s = self.session
        fin = self.finished or ResponseFinished()
        if error is not None:
            status, details = "failed", {"type": "failed", "error": {"type": "server_error", "message": error}}
        elif self.cancel_event.is_set():
            status, details = "cancelled", {"type": "cancelled", "reason": self.cancel_reason or "client_cancelled"}
        elif fin.status != "completed":
            status = fin.status
            details = {"type": fin.status, "reason": fin.reason} if fin.status != "failed" else {
                "type": "failed", "error": {"type": "server_error", "message": fin.reason or "responder failed"}}
        else:
            status, details = "completed", None
        item_status = "completed" if status == "completed" else "incomplete"
        self._close_message(item_status)
        for call in self.calls.values():
            self._close_call(call, item_status)
        now = time.perf_counter()
        model_latency = {**self.options.latency, **fin.latency}
        latency = {k: round(v, 2) for k, v in model_latency.items()}
        if self.first_audio_t is not None:
            latency["response_to_first_audio_ms"] = round((self.first_audio_t - self.t0) * 1000, 2)
            if self.turn_end_t is not None:
                first = (self.first_audio_t - self.turn_end_t) * 1000
                latency["turn_end_to_first_audio_ms"] = round(first, 2)
                metrics.FIRST_AUDIO_MS.observe(first)
                if "first_audio_ms" in model_latency:
                    latency["overhead_ms"] = round(first - model_latency["first_audio_ms"], 2)
                    metrics.OVERHEAD_MS.observe(max(0.0, latency["overhead_ms"]))
        if self.barge_in_t is not None:
            stop = (now - self.barge_in_t) * 1000
            latency["barge_in_stop_ms"] = round(stop, 2)
            metrics.BARGE_IN_MS.observe(stop)
        # a cancelled response never gets the responder's ResponseFinished: use what it counted so far
        u = fin.usage if self.finished is not None else self.options.usage
        audio_in = u.input_audio_tokens or min(self.input_audio_tokens, u.input_tokens or self.input_audio_tokens)
        spoken = sum(i.output_audio_samples for i in self.output if i.type == "message")  # cut at barge-in
        audio_out = u.output_audio_tokens or round(spoken / OUTPUT_RATE * CODE_RATE_HZ)
        input_tokens = max(u.input_tokens, audio_in)
        usage = {"total_tokens": input_tokens + u.output_tokens + audio_out, "input_tokens": input_tokens,
                 "output_tokens": u.output_tokens + audio_out,
                 "input_token_details": {"cached_tokens": u.cached_tokens, "text_tokens": input_tokens - audio_in,
                                         "audio_tokens": audio_in},
                 "output_token_details": {"text_tokens": u.output_tokens, "audio_tokens": audio_out}}
        resource = self._resource(status)
        resource.update(status_details=details, output=[i.to_json() for i in self.output], usage=usage,
                        latency=latency)
        metrics.RESPONSES.labels(status).inc()
        s.emit(ev.ResponseDone(response=resource))
        s.emit(ev.RateLimitsUpdated(rate_limits=s.rate_limits()))


def _wire_part(part: dict[str, Any]) -> dict[str, Any]:
    """Item content (``output_audio``/``output_text``) -> the ``part`` of content_part events."""
    if part["type"] == "output_audio":
        return {"type": "audio", "transcript": part.get("transcript", "")}
    return {"type": "text", "text": part.get("text", "")}


def _spread_text(chunk_texts: list[str], text: str) -> list[str]:
    """When the responder gave no per-chunk text, split the transcript evenly over the audio chunks."""
    if not chunk_texts or any(chunk_texts):
        return chunk_texts
    n = len(chunk_texts)
    step = max(1, -(-len(text) // n))
    return [text[i * step:(i + 1) * step] for i in range(n)]


def _audio_tokens(view: Any) -> int:
    """Audio tokens (25 Hz) of the user audio in a conversation view: the ``audio_tokens`` of the input usage."""
    n = 0
    for m in getattr(view, "messages", []):
        content = m.get("content")
        if isinstance(content, list):
            n += sum(audio_token_count(len(p["audio"])) for p in content
                     if p.get("type") == "audio" and p.get("audio") is not None)
    return n
