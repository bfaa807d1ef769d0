"""One realtime session: client events in, server events out, independent of the transport.

The session owns the configuration, the input audio buffer with server VAD, the conversation and
at most one active response (see ``response.py``). It writes server events to an :class:`Outbox`;
the websocket route drains that outbox to the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from audio.vad import FRAME_SAMPLES, SileroModelPool, StreamingVAD, VadEvent, VadParams
from omni_agent.principal import LOCAL_PRINCIPAL, scoped_session_id
from omni_agent.realtime import events as ev
from omni_agent.realtime import metrics
from omni_agent.realtime import response as response_mod
from omni_agent.realtime import truncation as trunc
from omni_agent.realtime.audio_input import AudioRateLimit, InputAudio, audio_pool, audio_seconds
from omni_agent.realtime.config import SessionConfig, response_overrides
from omni_agent.realtime.conversation import (
    MODEL_RATE,
    OUTPUT_RATE,
    ConversationState,
    Item,
    item_from_client,
    item_from_stored,
    item_id,
)
from omni_agent.realtime.journal import Journal, SessionLog
from omni_agent.realtime.media import ItemMedia, decode_item_media, has_media
from omni_agent.realtime.responder import Conversation, Responder
from omni_agent.realtime.response import ActiveResponse
from omni_agent.realtime.transcription import Transcriber, split_language
from omni_agent.settings import RealtimeSettings

log = logging.getLogger(__name__)

MIN_COMMIT_MS = 100  # OpenAI refuses to commit less than 100 ms of audio
DEFAULT_MODEL_LEN = 8192  # the engine's default context, for the media budget when the responder hides its engine
SESSION_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")  # client-chosen ids become checkpoint thread ids


def valid_session_id(value: Any, event_id: str | None = None, param: str = "session_id") -> str:
    """A client-chosen session id, checked.

    Raises:
        ProtocolError: not 1..128 characters of letters, digits and ``_.:-``.
    """
    if not isinstance(value, str) or not SESSION_ID.match(value):
        raise ev.ProtocolError("invalid_value", "session_id must be 1..128 characters of letters, digits and _.:-",
                               event_id, param)
    return value


class Outbox(Protocol):
    def put(self, data: str, *, on_sent: Callable[[], None] | None = None,
            drop: Callable[[], bool] | None = None) -> None:
        """Queue one serialised event; ``drop()`` true at send time skips it; ``on_sent`` runs once written."""
        ...


class RealtimeSession:
    """Handles the client events of one connection.

    Args:
        settings: limits.
        responder: produces responses.
        outbox: where serialised server events go.
        transcriber: input transcription (None: transcription requests fail with an error event).
        vad_pool: Silero models (one is held while server VAD is on).
        protocol: ``"beta"`` to emit Beta names from the start.
        session_id: a client-chosen stable id (``?session_id=``) under which the responder keeps the
            conversation's state, so a reconnect resumes it; default the server's session id.
    """

    def __init__(self, settings: RealtimeSettings, responder: Responder, outbox: Outbox, *,
                 transcriber: Transcriber | None = None, vad_pool: SileroModelPool | None = None,
                 protocol: str = "ga", session_id: str | None = None, journal: Journal | None = None,
                 principal: str | None = None) -> None:
        self.settings = settings
        self.responder = responder
        self.outbox = outbox
        self.transcriber = transcriber
        self.vad_pool = vad_pool or SileroModelPool()
        self.cfg = SessionConfig(protocol="beta" if protocol == "beta" else "ga")
        self.client_session_id = session_id
        self.principal = principal
        """Who connected (the principal of the API key, as on the HTTP routes; None: the one local principal
        of a server without keys). Stored state is keyed by principal and session id, so a session id alone
        never reaches another principal's session."""
        self.journal = journal
        self.log: SessionLog | None = None
        self.conversation = ConversationState(media_budget=self._media_budget())
        self.response: ActiveResponse | None = None
        self.has_spoken = False
        self._vad: StreamingVAD | None = None
        self._tasks: set[asyncio.Task] = set()
        # Input audio buffer at 16 kHz; positions are ms of all audio appended this session.
        self._buffer: list[np.ndarray] = []
        self._buffer_samples = 0
        # decoding, one resampler over the whole input stream, and VAD: on the audio worker threads
        self._audio = InputAudio()
        self._audio_limit = AudioRateLimit(settings.audio_rate_limit, 2 * settings.max_buffered_audio_s)
        self._idle_timer: asyncio.TimerHandle | None = None
        self._count = trunc.tokenizer_counter(getattr(responder, "engine", None))
        self._buffer_start = 0  # stream sample index (16 kHz) of the buffer's first sample
        self._stream_samples = 0
        self._speech_item: str | None = None
        self._speech_start_ms = 0
        self.closed = False
        self.limits: Callable[[], list[dict[str, Any]]] | None = None

    @property
    def session_id(self) -> str:
        """The id responses are stored under: the client's stable id (within its principal), else the
        server's session id."""
        if self.client_session_id:  # the same thread id as the HTTP routes give this principal's id
            return scoped_session_id(self.principal or LOCAL_PRINCIPAL, self.client_session_id)
        return self.cfg.id

    def _media_budget(self) -> int:
        """Tokens one video may take: the context length (of the responder's engine) minus room for the turn."""
        from vision.video import media_token_budget

        engine = getattr(self.responder, "engine", None)
        return media_token_budget(getattr(engine, "max_model_len", None) or DEFAULT_MODEL_LEN)

    # ------------------------------------------------------------------------------------ output

    def emit(self, event: ev._ServerEvent, *, on_sent: Callable[[], None] | None = None,
             drop: Callable[[], bool] | None = None) -> None:
        data = ev.dump_event(event, beta=self.cfg.beta)
        if self.log is not None:  # numbered and stored even when the client has gone (replay)
            self.log.record(event, data, self.conversation)
        if data is None or self.closed:
            return
        metrics.SERVER_EVENTS.labels(event.type).inc()
        self.outbox.put(data, on_sent=on_sent, drop=drop)

    def error(self, err: ev.ProtocolError) -> None:
        metrics.ERRORS.labels(err.code).inc()
        self.emit(ev.Error(error=ev.ErrorDetail(type=err.type, code=err.code, message=err.message,
                                                param=err.param, event_id=err.event_id)))

    # ------------------------------------------------------------------------------------ lifecycle

    async def start(self, last_event_id: str | None = None) -> None:
        """Send ``session.created``; for a journaled session (``?session_id=``) first restore its
        conversation, then replay the events after ``last_event_id`` and close responses a restart cut."""
        await self._ensure_vad()
        replay: list[str] | None = []
        interrupted: list[Item] = []
        open_responses: list[dict[str, Any]] = []
        if self.journal is not None and self.client_session_id is not None:
            self.log = SessionLog(self.journal, self.session_id)
            if last_event_id is not None:
                replay = self.log.replay_after(last_event_id)
            interrupted = self.log.restore(self.conversation, item_from_stored)
            open_responses = self.log.open_responses()
        self.emit(ev.SessionCreated(session=self.cfg.render()))
        if replay is None:
            self.error(ev.ProtocolError("replay_unavailable", f"event {last_event_id} is not in this session's "
                                        "journal (unknown, or older than what is kept); nothing replayed",
                                        param="last_event_id"))
        for data in replay or []:
            self.outbox.put(data)
        for resp in open_responses:  # the server stopped while it ran: its output items are incomplete
            ids = {i.id for i in interrupted}
            output = [i.to_json() for i in self.conversation.items if i.id in ids]
            self.emit(ev.ResponseDone(response={**resp, "status": "incomplete", "output": output, "status_details": {
                "type": "incomplete", "reason": None,
                "error": {"type": "server_error", "code": "server_restarted",
                          "message": "the server restarted while this response was in progress"}}}))

    async def close(self) -> None:
        self._cancel_idle()
        resp = self.response
        if resp is not None:  # its response.done still goes out (to the replay journal at least)
            await resp.cancel("client_disconnected")
            if resp.task is not None:
                await asyncio.wait({resp.task}, timeout=response_mod.CANCEL_GRACE_S + 1)
        self.closed = True
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._vad is not None:
            self.vad_pool.release(self._vad.model)
            self._vad = None

    def spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _ensure_vad(self) -> None:
        td = self.cfg.turn_detection
        if td is None:
            if self._vad is not None:
                self.vad_pool.release(self._vad.model)
                self._vad = None
            self._audio.vad = None
            return
        params = VadParams(td.threshold, td.prefix_padding_ms, td.silence_duration_ms)
        if self._vad is None:
            # Loading a Silero model reads a file and builds TorchScript (~50 ms): off the event loop.
            model = await asyncio.get_running_loop().run_in_executor(audio_pool(), self.vad_pool.acquire)
            self._vad = StreamingVAD(params, model)
            self._vad.state.samples_seen = self._stream_samples  # positions continue the session's stream
        else:
            self._vad.params = params
        self._audio.vad = self._vad

    # ------------------------------------------------------------------------------------ input

    async def handle(self, raw: str | bytes) -> None:
        """Process one client event; every problem becomes an ``error`` event and the session goes on."""
        event = None
        try:
            event = ev.parse_client_event(raw)
            metrics.CLIENT_EVENTS.labels(event.type).inc()
            handler = getattr(self, "on_" + event.type.replace(".", "_"))
            await handler(event)
        except ev.ProtocolError as e:
            if e.event_id is None and event is not None:
                e.event_id = event.event_id
            self.error(e)
        except Exception as e:  # a bug must not kill the session
            log.exception("realtime event failed")
            self.error(ev.ProtocolError("server_error", f"internal error: {type(e).__name__}", None,
                                        type="server_error"))

    async def on_session_update(self, e: ev.SessionUpdate) -> None:
        raw = e.session.model_extra or {}
        sid = (e.session.omni or {}).get("session_id")
        if sid is not None:  # our extension: {"omni": {"session_id": "..."}}
            sid = valid_session_id(sid, e.event_id, "session.omni.session_id")
        self.cfg = self.cfg.updated(e.session, raw, has_responded_audio=self.has_spoken)
        if sid is not None:
            self.client_session_id = sid
        await self._ensure_vad()
        self.emit(ev.SessionUpdated(session=self.cfg.render()))

    async def on_input_audio_buffer_append(self, e: ev.InputAudioBufferAppend) -> None:
        fmt = self.cfg.input_format
        seconds = audio_seconds(len(e.audio), fmt)
        room = int(self.settings.max_buffered_audio_s * MODEL_RATE) - self._buffer_samples
        if seconds * MODEL_RATE > room + 1:  # what does not fit is refused as such, not counted as rate
            raise ev.ProtocolError("input_audio_buffer_full",
                                   f"the input audio buffer holds at most {self.settings.max_buffered_audio_s:g} s; "
                                   "commit or clear it", e.event_id, "audio")
        if not self._audio_limit.take(seconds):
            raise ev.ProtocolError("rate_limit_exceeded",
                                   f"audio arrives faster than {self.settings.audio_rate_limit:g}x real time beyond a "
                                   f"{2 * self.settings.max_buffered_audio_s:g} s burst; append dropped", e.event_id,
                                   type="rate_limit_error")
        got = await asyncio.get_running_loop().run_in_executor(
            audio_pool(self.settings.audio_workers), self._audio.process, e.audio, fmt, room,
            self.settings.max_buffered_audio_s, e.event_id)
        metrics.AUDIO_IN_SECONDS.inc(got.seconds)
        self._buffer.append(got.wave16)
        self._buffer_samples += len(got.wave16)
        self._stream_samples += len(got.wave16)
        for vad_event in got.vad_events:
            await self._on_vad(vad_event)
        if self._vad is not None and not self._vad.state.speaking and self.cfg.turn_detection is not None:
            # keep the prefix padding plus the samples VAD has not judged yet (a partial window and
            # the window in progress), so that speech_started can reach back audio_start_ms
            keep = self._ms_to_samples(self.cfg.turn_detection.prefix_padding_ms) + 2 * FRAME_SAMPLES
            self._trim_buffer(self._stream_samples - keep)

    @staticmethod
    def _ms_to_samples(ms: int) -> int:
        return ms * MODEL_RATE // 1000

    def _trim_buffer(self, keep_from: int) -> None:
        """Drop buffered audio before stream sample ``keep_from`` (VAD mode keeps only the prefix padding)."""
        drop = keep_from - self._buffer_start
        if drop <= 0:
            return
        audio = self._take_buffer()
        audio = audio[drop:]
        self._buffer = [audio] if len(audio) else []
        self._buffer_samples = len(audio)
        self._buffer_start = keep_from

    def _take_buffer(self) -> np.ndarray:
        return np.concatenate(self._buffer) if self._buffer else np.zeros(0, np.float32)

    async def _on_vad(self, v: VadEvent) -> None:
        self._cancel_idle()
        if v.kind == "speech_started":
            self._speech_item = item_id()
            self._speech_start_ms = v.audio_ms
            self._trim_buffer(self._ms_to_samples(v.audio_ms))
            self.emit(ev.InputAudioBufferSpeechStarted(audio_start_ms=v.audio_ms, item_id=self._speech_item))
            td = self.cfg.turn_detection
            if self.response is not None and td is not None and td.interrupt_response:
                await self.response.cancel("turn_detected", barge_in_t=time.perf_counter())
        else:
            iid = self._speech_item or item_id()
            self._speech_item = None
            self.emit(ev.InputAudioBufferSpeechStopped(audio_end_ms=v.audio_ms, item_id=iid))
            t_stop = time.perf_counter()
            item = self._commit(iid, end_sample=self._ms_to_samples(v.audio_ms), event_id=None)
            td = self.cfg.turn_detection
            if item is not None and td is not None and td.create_response and self.response is None:
                self._start_response(None, None, turn_end_t=t_stop)

    async def on_input_audio_buffer_commit(self, e: ev.InputAudioBufferCommit) -> None:
        if self._buffer_samples < self._ms_to_samples(MIN_COMMIT_MS):
            raise ev.ProtocolError(
                "input_audio_buffer_commit_empty",
                f"buffer too small: expected at least {MIN_COMMIT_MS} ms of audio, "
                f"got {self._buffer_samples * 1000 // MODEL_RATE} ms", e.event_id)
        self._commit(self._speech_item or item_id(), end_sample=None, event_id=e.event_id)
        self._speech_item = None

    def _commit(self, iid: str, end_sample: int | None, event_id: str | None) -> Item | None:
        audio = self._take_buffer()
        if end_sample is not None:
            cut = max(0, min(len(audio), end_sample - self._buffer_start))
            rest, audio = audio[cut:], audio[:cut]
        else:
            rest = np.zeros(0, np.float32)
        self._buffer = [rest] if len(rest) else []
        self._buffer_start += len(audio)
        self._buffer_samples = len(rest)
        if not len(audio):
            return None
        item = Item(iid, "message", role="user", input_audio=audio,
                    content=[{"type": "input_audio", "transcript": None}])
        prev = self.conversation.add(item)
        self.emit(ev.InputAudioBufferCommitted(previous_item_id=prev, item_id=iid))
        self.emit(ev.ConversationItemAdded(previous_item_id=prev, item=item.to_json()))
        self.emit(ev.ConversationItemDone(previous_item_id=prev, item=item.to_json()))
        if self.cfg.transcription is not None:
            self.spawn(self._transcribe(item))
        return item

    async def _transcribe(self, item: Item) -> None:
        tr = self.cfg.transcription
        assert tr is not None and item.input_audio is not None
        try:
            if self.transcriber is None:
                raise RuntimeError("no transcriber is configured on this server")
            text = ""
            async for delta in self.transcriber.transcribe(item.input_audio, tr.language, tr.prompt):
                text += delta
                self.emit(ev.InputAudioTranscriptionDelta(item_id=item.id, delta=delta))
            language, transcript = split_language(text, tr.language)
            for p in item.content:
                if p["type"] == "input_audio":
                    p["transcript"] = transcript
            self.emit(ev.InputAudioTranscriptionCompleted(
                item_id=item.id, transcript=transcript, language=language,
                usage={"type": "duration", "seconds": round(len(item.input_audio) / MODEL_RATE, 3)}))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            metrics.ERRORS.labels("transcription_failed").inc()
            self.emit(ev.InputAudioTranscriptionFailed(item_id=item.id, error=ev.ErrorDetail(
                type="transcription_error", code="transcription_failed", message=f"{type(e).__name__}: {e}")))

    async def on_input_audio_buffer_clear(self, e: ev.InputAudioBufferClear) -> None:
        self._buffer, self._buffer_samples, self._buffer_start = [], 0, self._stream_samples
        self._audio.reset()
        self.emit(ev.InputAudioBufferCleared())

    # ------------------------------------------------------------------------------------ conversation

    async def _decode_media(self, spec: ev.ItemIn, event_id: str | None) -> ItemMedia | None:
        if not has_media(spec):
            return None
        budget = self.conversation.media_budget
        # Decoding a video or an image is CPU work (PyAV, resizing): off the event loop. Events of this
        # session wait for it (the read loop awaits each event), other sessions do not.
        return await asyncio.get_running_loop().run_in_executor(
            None, lambda: decode_item_media(spec, event_id, max_tokens=budget))

    async def on_conversation_item_create(self, e: ev.ConversationItemCreate) -> None:
        media = await self._decode_media(e.item, e.event_id)
        item = item_from_client(e.item, self.cfg.input_format, e.event_id, media)
        prev = self.conversation.add(item, e.previous_item_id, e.event_id)
        if item.media.frames:
            # a camera frame extends a run: build its clip now (resizing) rather than on the event loop later
            await asyncio.get_running_loop().run_in_executor(None, self.conversation.prepare_clips,
                                                             self.conversation.media_budget)
        self.emit(ev.ConversationItemAdded(previous_item_id=prev, item=item.to_json()))
        self.emit(ev.ConversationItemDone(previous_item_id=prev, item=item.to_json()))

    def _item(self, iid: str, event_id: str | None) -> Item:
        item = self.conversation.get(iid)
        if item is None:
            raise ev.ProtocolError("item_not_found", f"item {iid} does not exist", event_id, "item_id")
        return item

    async def on_conversation_item_retrieve(self, e: ev.ConversationItemRetrieve) -> None:
        item = self._item(e.item_id, e.event_id)
        fmt = self.cfg.output_format if item.role == "assistant" else self.cfg.input_format
        self.emit(ev.ConversationItemRetrieved(item=item.to_json(audio_format=fmt)))

    async def on_conversation_item_delete(self, e: ev.ConversationItemDelete) -> None:
        self._item(e.item_id, e.event_id)
        self.conversation.delete(e.item_id)
        self.emit(ev.ConversationItemDeleted(item_id=e.item_id))

    async def on_conversation_item_truncate(self, e: ev.ConversationItemTruncate) -> None:
        item = self._item(e.item_id, e.event_id)
        if item.role != "assistant" or not any(p["type"] == "output_audio" for p in item.content):
            raise ev.ProtocolError("invalid_item", "only assistant audio items can be truncated", e.event_id, "item_id")
        if e.content_index != 0:
            raise ev.ProtocolError("invalid_value", "content_index must be 0", e.event_id, "content_index")
        have_ms = item.output_audio_samples * 1000 // OUTPUT_RATE
        if e.audio_end_ms > have_ms:
            raise ev.ProtocolError("invalid_value", f"audio_end_ms {e.audio_end_ms} is beyond the item's audio "
                                   f"({have_ms} ms)", e.event_id, "audio_end_ms")
        item.truncate_audio(e.audio_end_ms * OUTPUT_RATE // 1000)
        self.emit(ev.ConversationItemTruncated(item_id=item.id, content_index=0, audio_end_ms=e.audio_end_ms))

    # ------------------------------------------------------------------------------------ responses

    async def on_response_create(self, e: ev.ResponseCreate) -> None:
        self._cancel_idle()
        if self.response is not None:
            raise ev.ProtocolError("conversation_already_has_active_response",
                                   f"response {self.response.id} is still in progress", e.event_id)
        opts = response_overrides(self.cfg, e.response)
        extra: list[Item] | None = None
        if opts["input"] is not None:
            extra = [item_from_client(i, self.cfg.input_format, e.event_id, await self._decode_media(i, e.event_id))
                     for i in opts["input"]]
        self._start_response(opts, extra, turn_end_t=None)

    def _start_response(self, opts: dict[str, Any] | None, input_items: list[Item] | None,
                        turn_end_t: float | None) -> None:
        opts = opts or response_overrides(self.cfg, None)
        self._cancel_idle()
        resp = ActiveResponse(self, opts, input_items, turn_end_t)
        self.response = resp
        resp.attach(self.spawn(resp.run()))

    def response_view(self, resp: ActiveResponse) -> Conversation:
        """What the responder continues (``truncation.response_view``)."""
        return trunc.response_view(self.conversation, self.cfg.truncation, resp, self._model_len(), self._count)

    def _model_len(self) -> int:
        engine = getattr(self.responder, "engine", None)
        return getattr(engine, "max_model_len", None) or self.settings.context_tokens or DEFAULT_MODEL_LEN

    def rate_limits(self) -> list[dict[str, Any]]:
        """What ``rate_limits.updated`` reports: the per-session event budget (set by the transport)."""
        return self.limits() if self.limits is not None else []

    def response_finished(self, resp: ActiveResponse) -> None:
        if self.response is resp:
            self.response = None
        td = self.cfg.turn_detection
        if td is not None and td.idle_timeout_ms and not self.closed:
            # the timeout counts from when the answer's audio has finished playing on the client
            played_s = sum(i.sent_samples for i in resp.output if i.type == "message") / OUTPUT_RATE
            wait_s = max(0.0, played_s - (time.perf_counter() - resp.t0)) + td.idle_timeout_ms / 1000
            self._idle_timer = asyncio.get_running_loop().call_later(wait_s, self._idle_fired)

    def _cancel_idle(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _idle_fired(self) -> None:
        """``idle_timeout_ms`` passed without speech: commit what the buffer holds and answer (as the spec says)."""
        self._idle_timer = None
        td = self.cfg.turn_detection
        if self.closed or self.response is not None or td is None or (self._vad is not None and self._vad.state.speaking):
            return
        iid = item_id()
        start_ms = self._buffer_start * 1000 // MODEL_RATE
        end_ms = self._stream_samples * 1000 // MODEL_RATE
        self.emit(ev.InputAudioBufferTimeoutTriggered(audio_start_ms=start_ms, audio_end_ms=end_ms, item_id=iid))
        if self._buffer_samples >= self._ms_to_samples(MIN_COMMIT_MS):
            self._commit(iid, end_sample=None, event_id=None)
        self._start_response(None, None, turn_end_t=None)

    async def on_response_cancel(self, e: ev.ResponseCancel) -> None:
        resp = self.response
        if resp is None or (e.response_id and e.response_id != resp.id):
            raise ev.ProtocolError("response_cancel_not_active", "there is no active response to cancel",
                                   e.event_id, "response_id")
        await resp.cancel("client_cancelled")
