"""Helpers for tests and the realtime benchmark: a live server on 127.0.0.1, a client, fake speech.

Nothing here is imported by the server itself.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from omni_agent.realtime.events import parse_server_event
from omni_agent.realtime.responder import (
    AudioDelta,
    Conversation,
    ResponseFinished,
    ResponseOptions,
    TextDelta,
    Usage,
)

SR = 24000  # the protocol's pcm16 rate


class FakeResponder:
    """A responder without a model: ``steps`` sentences of text + a tone, ``delay_s`` of "compute" each.

    Records every conversation it was given (``calls``) so tests can check the history.
    """

    def __init__(self, steps: int = 3, chunk_s: float = 0.2, delay_s: float = 0.01, first_delay_s: float = 0.0,
                 text: str = "hello there. ") -> None:
        self.steps, self.chunk_s, self.delay_s, self.first_delay_s, self.text = steps, chunk_s, delay_s, first_delay_s, text
        self.calls: list[tuple[Conversation, ResponseOptions]] = []

    async def respond(self, conversation: Conversation, options: ResponseOptions,
                      cancel: asyncio.Event) -> AsyncIterator[Any]:
        from audio.encoder import audio_token_count

        self.calls.append((conversation, options))
        prompt = 10 + sum(audio_token_count(len(p["audio"])) for m in conversation.messages
                          if isinstance(m.get("content"), list) for p in m["content"] if p.get("type") == "audio")
        t0 = time.perf_counter()
        latency = options.latency
        n = int(self.chunk_s * SR)
        tone = (0.2 * np.sin(2 * np.pi * 220 * np.arange(n) / SR)).astype(np.float32)
        await asyncio.sleep(self.first_delay_s)  # "prefill"
        for i in range(self.steps):
            if cancel.is_set():
                break
            await asyncio.sleep(self.delay_s)  # "decode + vocode"
            options.usage.input_tokens, options.usage.output_tokens = prompt, 3 * (i + 1)
            yield TextDelta(self.text)
            if "audio" in options.modalities:
                latency.setdefault("first_audio_ms", (time.perf_counter() - t0) * 1000)
                yield AudioDelta(tone, SR, self.text)
        latency["total_ms"] = (time.perf_counter() - t0) * 1000
        status = "cancelled" if cancel.is_set() else "completed"
        yield ResponseFinished(status, None, Usage(input_tokens=prompt, output_tokens=self.steps * 3), latency)


class LiveServer:
    """uvicorn serving ``app`` on a free 127.0.0.1 port in a background thread (a context manager)."""

    def __init__(self, app: Any, ws_max_size: int = 16 * 2**20, lifespan: str = "off") -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", ws_max_size=ws_max_size, lifespan=lifespan,
                                ws_ping_interval=None)
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        serve = self.server.serve

        async def serve_and_keep_loop(sockets: Any = None) -> None:
            self.loop = asyncio.get_running_loop()  # the server's loop (LoopBusyMeter runs on it)
            await serve(sockets=sockets)

        self.server.serve = serve_and_keep_loop  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.time() + 120
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


class LoopBusyMeter:
    """How busy an event loop's thread is: its CPU time over wall time between ``start`` and ``stop``.

    Both must be called on the loop's own thread (``loop.call_soon_threadsafe``); work the loop hands
    to executor threads does not count. Works with any loop (uvloop included).
    """

    def __init__(self) -> None:
        self.cpu0 = self.wall0 = 0.0

    def start(self) -> None:
        self.cpu0, self.wall0 = time.thread_time(), time.perf_counter()

    def stop(self) -> float:
        wall = time.perf_counter() - self.wall0
        return round((time.thread_time() - self.cpu0) / wall, 3) if wall > 0 else float("nan")


def make_app(settings: Any, responder: Any, **kwargs: Any) -> Any:
    """A bare FastAPI app with the realtime route and ``/metrics`` (the serve command builds the full one)."""
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from omni_agent.realtime.routes import realtime_router

    app = FastAPI()
    app.include_router(realtime_router(settings, responder=responder, **kwargs))

    @app.get("/metrics")
    def metrics_route() -> PlainTextResponse:
        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)

    return app


class RealtimeClient:
    """A small protocol client over ``websockets`` that records every server event with its arrival time."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.arrivals: list[float] = []
        self._new = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, url: str, **kwargs: Any) -> RealtimeClient:
        from websockets.asyncio.client import connect

        ws = await connect(url, max_size=None, open_timeout=30, **kwargs)
        return cls(ws)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                ev = parse_server_event(raw)
                ev["_raw_type"] = json.loads(raw)["type"]
                self.events.append(ev)
                self.arrivals.append(time.perf_counter())
                async with self._new:
                    self._new.notify_all()
        except Exception:  # connection closed: waiters see it through self.closed
            pass
        finally:
            async with self._new:
                self._new.notify_all()

    @property
    def closed(self) -> bool:
        return self._reader.done()

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def append(self, pcm16: bytes) -> None:
        await self.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm16).decode()})

    def of(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == type_]

    async def wait_for(self, type_: str, timeout: float = 30.0, count: int = 1,  # noqa: ASYNC109
                       pred: Any = None) -> dict[str, Any]:
        """The ``count``-th event of ``type_`` (matching ``pred``), waiting up to ``timeout`` seconds."""
        async def matched() -> list[dict[str, Any]]:
            return [e for e in self.of(type_) if pred is None or pred(e)]

        async with asyncio.timeout(timeout):
            async with self._new:
                while len(found := await matched()) < count:
                    if self.closed:
                        raise ConnectionError(f"closed before {type_}; got {[e['type'] for e in self.events]}")
                    await self._new.wait()
        return found[count - 1]

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()


def sdk_validate(events: list[dict[str, Any]], beta: bool = False) -> None:
    """``model_validate`` every recorded server event with the openai SDK's own type for its wire name
    (GA or Beta); our ``omni.*`` extension events are skipped. Raises on any field the SDK cannot read."""
    from typing import get_args

    if beta:
        from openai.types.beta.realtime import RealtimeServerEvent
    else:
        from openai.types.realtime import RealtimeServerEvent
    args = get_args(RealtimeServerEvent)
    if args and not isinstance(args[0], type):
        args = get_args(args[0])
    models = {get_args(m.model_fields["type"].annotation)[0]: m for m in args}
    for e in events:
        raw = {k: v for k, v in e.items() if not k.startswith("_")}
        raw["type"] = e.get("_raw_type", e["type"])
        if not raw["type"].startswith("omni."):
            models[raw["type"]].model_validate(raw)


def pcm16(wave: np.ndarray) -> bytes:
    return (np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes()


def espeak(text: str, sr: int = SR, voice: str = "en") -> np.ndarray:
    """Speech synthesised by ``espeak-ng`` at ``sr`` (float32 mono)."""
    from audio.dsp import load_audio

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "s.wav")
        subprocess.run([exe, "-v", voice, "-s", "160", "-w", path, text], check=True, capture_output=True)
        wave, _ = load_audio(path, target_sr=sr)
    return wave


def utterance(text: str, lead_s: float = 0.5, tail_s: float = 1.0, sr: int = SR) -> np.ndarray:
    """Silence, speech, silence: what a turn of a voice call looks like."""
    speech = espeak(text, sr)
    return np.concatenate([np.zeros(int(lead_s * sr), np.float32), speech,
                           np.zeros(int(tail_s * sr), np.float32)])


async def stream_audio(client: RealtimeClient, wave: np.ndarray, chunk_ms: int = 40, realtime: float = 0.0,
                       sr: int = SR) -> None:
    """Append ``wave`` in ``chunk_ms`` chunks; ``realtime`` > 0 paces it (1.0 = real time)."""
    n = sr * chunk_ms // 1000
    for i in range(0, len(wave), n):
        await client.append(pcm16(wave[i:i + n]))
        if realtime:
            await asyncio.sleep(chunk_ms / 1000 / realtime)
