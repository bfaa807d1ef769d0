"""The websocket transport: ``/v1/realtime`` on FastAPI/Starlette (uvicorn + ``websockets``).

This module only moves bytes and enforces connection limits: API-key auth (``Authorization:
Bearer`` or the browser subprotocol ``openai-insecure-api-key.<key>``), the Origin allow-list, the
event size limit, the per-session rate limit and a bounded outbound queue. Protocol work happens in
:class:`~omni_agent.realtime.session.RealtimeSession`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect

from audio.vad import SileroModelPool
from omni_agent.principal import LOCAL_PRINCIPAL
from omni_agent.realtime import metrics
from omni_agent.realtime.events import ProtocolError, looks_like_append, peek_event_id
from omni_agent.realtime.journal import Journal
from omni_agent.realtime.responder import DirectResponder, Responder
from omni_agent.realtime.session import SESSION_ID, RealtimeSession
from omni_agent.realtime.transcription import EngineTranscriber, Transcriber
from omni_agent.server.auth import principal_of
from omni_agent.server.errors import APIError
from omni_agent.settings import Settings

log = logging.getLogger(__name__)

BETA_SUBPROTOCOL = "openai-beta.realtime-v1"  # the browser form of the OpenAI-Beta header
CLOSE_POLICY = 1008  # RFC 6455 policy violation: auth, origin, slow consumer
CLOSE_TIMEOUT_S = 2.0  # a client that does not read cannot hold our close for long


class QueueOutbox:
    """Queue of serialised events capped in bytes; overflowing it means the client is too slow and is closed.

    ``close()`` (the client left) drops everything queued at once and refuses later events, so a
    departed client's buffers are freed without waiting for the garbage collector.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.items: deque[tuple[str, Callable[[], None] | None, Callable[[], bool] | None]] = deque()
        self.wake = asyncio.Event()
        self.overflow = asyncio.Event()
        self.closed = False

    def put(self, data: str, *, on_sent: Callable[[], None] | None = None,
            drop: Callable[[], bool] | None = None) -> None:
        if self.overflow.is_set() or self.closed:
            return
        if self.bytes + len(data) > self.max_bytes and self.items:
            self.overflow.set()
            self.close()
            return
        self.items.append((data, on_sent, drop))
        self.bytes += len(data)
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.items.clear()
        self.bytes = 0
        self.wake.set()

    async def drain(self, ws: WebSocket) -> None:
        while not self.overflow.is_set() and not self.closed:
            if not self.items:
                self.wake.clear()
                await self.wake.wait()  # until the session queues an event
                continue
            data, on_sent, drop = self.items.popleft()
            self.bytes -= len(data)
            if drop is not None and drop():
                continue  # e.g. audio of a response cancelled by barge-in: never reaches the client
            if on_sent is not None:
                on_sent()  # counted at hand-over, so truncation at cancel time sees exactly what went out
            await ws.send_text(data)


class TokenBucket:
    """Per-session event rate limit."""

    def __init__(self, rate: float) -> None:
        self.rate, self.capacity = rate, max(1.0, rate)  # one second of burst
        self.tokens, self.t = self.capacity, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def describe(self) -> list[dict[str, Any]]:
        return [{"name": "requests", "limit": int(self.capacity), "remaining": int(self.tokens),
                 "reset_seconds": round((self.capacity - self.tokens) / self.rate, 3)}]


def origin_allowed(ws: WebSocket, allowed: list[str]) -> bool:
    """Closed by default: no ``Origin`` (not a browser), the server's own origin, or one in the allow-list
    (``"*"`` opens it to every page)."""
    origin = ws.headers.get("origin")
    if origin is None or "*" in allowed or origin in allowed:
        return True
    host = ws.headers.get("host")
    return host is not None and origin in (f"http://{host}", f"https://{host}")


async def _refuse(ws: WebSocket, status: int, code: str, message: str) -> None:
    metrics.CONNECTIONS_REFUSED.labels(code).inc()
    body = {"type": "error", "error": {"type": "invalid_request_error", "code": code, "message": message}}
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(JSONResponse(body, status_code=status))
    else:
        await ws.close(code=CLOSE_POLICY, reason=message)  # before accept: the client sees HTTP 403


def realtime_router(settings: Settings, engine: Any = None, tts: Any = None, responder: Responder | None = None,
                    *, transcriber: Transcriber | None = None, vad_pool: SileroModelPool | None = None,
                    journal: Journal | None = None) -> APIRouter:
    """The ``/v1/realtime`` websocket route.

    Args:
        settings: server (api_key, allowed_origins) and realtime limits.
        engine: the AsyncEngine (input transcription, and the default responder).
        tts: StreamingTTS for the default responder.
        responder: produces responses; defaults to ``DirectResponder(engine, tts)``.
        transcriber: input transcription; defaults to the engine's ASR prompt.
        vad_pool: Silero models shared by the sessions.
        journal: where resumable sessions' events and items are kept (default: ``realtime.journal_db``).
    """
    if responder is None:
        if engine is None:
            raise ValueError("realtime_router needs a responder or an engine")
        responder = DirectResponder(engine, tts)
    if transcriber is None and engine is not None:
        transcriber = EngineTranscriber(engine)
    pool = vad_pool or SileroModelPool()
    rt = settings.realtime
    if journal is None and rt.journal_db:
        journal = Journal(rt.journal_db, replay_bytes=rt.replay_bytes)
    router = APIRouter()

    @router.websocket("/v1/realtime")
    async def realtime(websocket: WebSocket) -> None:
        if not origin_allowed(websocket, settings.server.allowed_origins):
            origin = websocket.headers.get("origin")
            await _refuse(websocket, 403, "origin_not_allowed",
                          f"origin {origin} is not allowed (server.allowed_origins opens it)")
            return
        try:  # the HTTP routes' keys (server.api_key and api_keys), principals and failed-auth throttle
            principal = principal_of(websocket, settings)
        except APIError as e:
            await _refuse(websocket, e.status, e.code or "invalid_api_key", e.message)
            return
        session_id = websocket.query_params.get("session_id")
        if session_id is not None and not SESSION_ID.match(session_id):
            await _refuse(websocket, 400, "invalid_session_id",
                          "session_id must be 1..128 characters of letters, digits and _.:-")
            return
        last_event_id = websocket.query_params.get("last_event_id")
        if last_event_id is not None and (session_id is None or not SESSION_ID.match(last_event_id)):
            await _refuse(websocket, 400, "invalid_last_event_id",
                          "last_event_id needs session_id and must be an event_id this server sent")
            return
        offered = websocket.scope.get("subprotocols") or []
        # A browser that offers subprotocols fails the handshake unless the server picks one of them, so a
        # client offering only the key subprotocol gets that one back (it sent it; nothing new is revealed).
        await websocket.accept(subprotocol="realtime" if "realtime" in offered else (offered[0] if offered else None))
        beta = ("realtime=v1" in websocket.headers.get("openai-beta", "")
                or websocket.query_params.get("protocol") == "beta" or BETA_SUBPROTOCOL in offered)
        await serve_session(websocket, settings, responder, transcriber, pool, beta, session_id,
                            None if principal == LOCAL_PRINCIPAL else principal, last_event_id)

    async def serve_session(ws: WebSocket, settings: Settings, responder: Responder,
                            transcriber: Transcriber | None, pool: SileroModelPool, beta: bool,
                            session_id: str | None, principal: str | None, last_event_id: str | None) -> None:
        outbox = QueueOutbox(rt.max_outbound_bytes)
        session = RealtimeSession(rt, responder, outbox, transcriber=transcriber, vad_pool=pool,
                                  protocol="beta" if beta else "ga", session_id=session_id, journal=journal,
                                  principal=principal)
        bucket = TokenBucket(rt.max_events_per_s)
        session.limits = bucket.describe
        metrics.SESSIONS_ACTIVE.inc()
        metrics.SESSIONS_TOTAL.inc()
        writer = asyncio.create_task(outbox.drain(ws))
        overflow = asyncio.create_task(outbox.overflow.wait())
        reader: asyncio.Task | None = None
        try:
            await session.start(last_event_id)  # before reading: the first appends need the VAD ready
            reader = asyncio.create_task(read_loop(ws, session, bucket))
            done, _ = await asyncio.wait({writer, reader, overflow}, return_when=asyncio.FIRST_COMPLETED)
            if overflow in done:
                metrics.SLOW_CLIENT_CLOSES.inc()
                log.warning("realtime session %s: client too slow, closing", session.cfg.id)
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(CLOSE_TIMEOUT_S):
                        await ws.close(code=CLOSE_POLICY, reason="client too slow: outbound queue full")
        finally:
            tasks = [t for t in (writer, reader, overflow) if t is not None]
            for t in tasks:
                t.cancel()
            await session.close()
            outbox.close()  # the client is gone: its queued events are freed now
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            metrics.SESSIONS_ACTIVE.dec()

    async def read_loop(ws: WebSocket, session: RealtimeSession, bucket: TokenBucket) -> None:
        while True:
            try:
                msg = await ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if msg["type"] == "websocket.disconnect":
                return
            data = msg.get("text")
            if data is None:
                data = msg.get("bytes") or b""
            if len(data) > rt.max_event_bytes:
                session.error(ProtocolError("event_too_large",
                                            f"event of {len(data)} bytes exceeds the limit of {rt.max_event_bytes}",
                                            peek_event_id(data)))
                continue
            # appends are limited by the seconds of audio they carry (the session's AudioRateLimit), so a
            # client's buffered burst is not refused for its event count
            if not looks_like_append(data) and not bucket.take():
                session.error(ProtocolError("rate_limit_exceeded",
                                            f"more than {rt.max_events_per_s:g} events per second; event dropped",
                                            peek_event_id(data), type="rate_limit_error"))
                continue
            await session.handle(data)

    return router
