"""``omni-agent bench realtime``: voice-turn latency, barge-in and concurrent sessions over a live server.

A real ``/v1/realtime`` server (uvicorn on 127.0.0.1, the serve command's app) with the configured
model (tiny by default) and the streaming TTS; clients stream espeak-ng speech at real time.

Keys:
    vad_to_first_audio_ms_p50 / _p95: the server's ``speech_stopped`` to the first audio delta, both
        as received by the client.
    overhead_ms_p50: that minus the model's own compute to its first audio chunk (``first_audio_ms``
        reported in ``response.done``): what the runtime adds.
    barge_in_stop_ms_p50: the client's first speech frame during a response to the last audio delta of
        that response received (0 when none arrived after that frame).
    barge_in_done_ms_p50: the same frame to the cancelled ``response.done`` (VAD detection + cancel).
    sessions_sustained: most concurrent sessions whose audio all arrives faster than real time
        (no playback underrun with a 200 ms jitter buffer).
    sessions_sustained_runtime: the same with a model-free responder paced at 2x real time: the
        capacity of the realtime runtime itself.
    vad_to_first_audio_ms_p50_loaded: ``vad_to_first_audio_ms_p50`` again while CPU hogs (``hogs=N``
        busy processes, default one per core) run beside the server; the goal is within 2x unloaded.
    loop_busy_fraction: how busy the server's event loop was during the unloaded voice turns (CPU time
        of the loop's thread over wall time); audio work runs on worker threads.

Options (``--opt``): ``turns=N``, ``hogs=N``, ``barge_ins=N``, ``max_sessions=N``, ``window_s=S`` (how long each
concurrent session is watched), ``responder=model|fake`` (model: the serve command's app, agent graph included).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from omni_agent.bench import BenchContext, benchmark

SR = 24000
CHUNK_MS = 20  # client audio block, like a microphone callback
JITTER_S = 0.2  # playback buffer a client keeps before it would hear a gap
WINDOW_S = 6.0  # how long each concurrent session is watched (long enough for several TTS chunks)


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2) if values else float("nan")


async def _stream(client: Any, wave: np.ndarray, t0: float | None = None) -> float:
    """Append ``wave`` paced at real time; returns when the first chunk was sent."""
    n = SR * CHUNK_MS // 1000
    start = time.perf_counter() if t0 is None else t0
    first = time.perf_counter()
    for k, i in enumerate(range(0, len(wave), n)):
        pcm = (np.clip(wave[i:i + n], -1, 1) * 32767).astype("<i2").tobytes()
        await client.append(pcm)
        await asyncio.sleep(max(0.0, start + (k + 1) * CHUNK_MS / 1000 - time.perf_counter()))
    return first


def _deltas(client: Any, response_id: str) -> list[tuple[float, float]]:
    """(arrival time, seconds of audio) of each audio delta of one response."""
    out = []
    for e, t in zip(client.events, client.arrivals, strict=True):
        if e["type"] == "response.output_audio.delta" and e["response_id"] == response_id:
            out.append((t, len(base64.b64decode(e["delta"])) / 2 / SR))
    return out


async def _turns(url: str, n: int, turn: np.ndarray) -> tuple[list[float], list[float]]:
    from omni_agent.realtime.testing import RealtimeClient

    first_audio, overhead = [], []
    c = await RealtimeClient.connect(url)
    await c.wait_for("session.created")
    # a plain voice turn (think -> speak): random weights would otherwise pick tools at random
    await c.send({"type": "session.update", "session": {"type": "realtime", "max_output_tokens": 24,
                                                        "tool_choice": "none"}})
    await c.wait_for("session.updated")
    for k in range(n):
        await _stream(c, turn)
        stopped = await c.wait_for("input_audio_buffer.speech_stopped", count=k + 1, timeout=60)
        t_stop = c.arrivals[c.events.index(stopped)]
        created = await c.wait_for("response.created", count=k + 1, timeout=60)
        rid = created["response"]["id"]
        delta = await c.wait_for("response.output_audio.delta", timeout=300, pred=lambda e, r=rid: e["response_id"] == r)
        t_first = c.arrivals[c.events.index(delta)]
        await c.send({"type": "response.cancel"})  # the figure is taken; do not wait for the whole answer
        done = await c.wait_for("response.done", count=k + 1, timeout=300)
        ms = (t_first - t_stop) * 1000
        first_audio.append(ms)
        model_ms = done["response"].get("latency", {}).get("first_audio_ms")
        if model_ms is not None:
            overhead.append(ms - model_ms)
    await c.close()
    return first_audio, overhead


async def _barge_ins(url: str, n: int, turn: np.ndarray,
                     interruption: np.ndarray) -> tuple[list[float], list[float]]:
    from omni_agent.realtime.testing import RealtimeClient

    stops, dones = [], []
    for _ in range(n):
        c = await RealtimeClient.connect(url)
        await c.wait_for("session.created")
        await _stream(c, turn)
        created = await c.wait_for("response.created", timeout=60)
        rid = created["response"]["id"]
        await c.wait_for("response.output_audio.delta", timeout=300, pred=lambda e, r=rid: e["response_id"] == r)
        t_speech = await _stream(c, interruption)
        done = await c.wait_for("response.done", timeout=300)
        if done["response"]["status"] == "cancelled":
            arrivals = [t for t, _ in _deltas(c, rid)]
            stops.append(max(0.0, (arrivals[-1] - t_speech) * 1000))
            dones.append((c.arrivals[c.events.index(done)] - t_speech) * 1000)
        await c.close()
    return stops, dones


async def _sustained(url: str, n: int, window_s: float) -> bool:
    """Do ``n`` concurrent sessions all get their audio faster than real time?"""
    from omni_agent.realtime.testing import RealtimeClient

    async def one() -> bool:
        c = await RealtimeClient.connect(url)
        await c.wait_for("session.created", timeout=60)
        await c.send({"type": "session.update", "session": {"type": "realtime", "max_output_tokens": 64,
                                                            "tool_choice": "none",
                                                            "audio": {"input": {"turn_detection": None}}}})
        await c.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Tell me a story."}]}})
        await c.send({"type": "response.create"})
        created = await c.wait_for("response.created", timeout=60)
        rid = created["response"]["id"]
        try:
            await c.wait_for("response.output_audio.delta", timeout=60)
            await c.wait_for("response.done", timeout=window_s)
        except TimeoutError:
            await c.send({"type": "response.cancel"})  # watched long enough
            await c.wait_for("response.done", timeout=60)
        deltas = _deltas(c, rid)
        await c.close()
        if not deltas:
            return False
        t0, queued = deltas[0][0], 0.0
        for t, dur in deltas:
            if t - t0 > window_s:
                break
            if t - t0 > queued + JITTER_S:  # the client would have run out of audio
                return False
            queued += dur
        return True

    results = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    return all(r is True for r in results)


async def _ladder(url: str, max_sessions: int, window_s: float) -> int:
    best, n = 0, 1
    while n <= max_sessions:
        if not await _sustained(url, n, window_s):
            break
        best = n
        n = n * 2 if n < 8 else n + 8
    lo, hi = best + 1, min(n, max_sessions + 1) - 1
    while lo <= hi:  # refine between the last count that held and the first that did not
        mid = (lo + hi) // 2
        if await _sustained(url, mid, window_s):
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


@contextlib.contextmanager
def _cpu_hogs(n: int) -> Iterator[None]:
    """``n`` busy-looping processes beside the server (the "CPU load" of a shared machine)."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.5)  # let them get going
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def _server(ctx: BenchContext, responder_kind: str) -> Any:
    from omni_agent.realtime.testing import FakeResponder, LiveServer, make_app

    settings = ctx.settings
    if responder_kind == "fake":
        return LiveServer(make_app(settings, FakeResponder(steps=50, chunk_s=0.2, delay_s=0.1)))
    from omni_agent.commands.serve import build_app

    return LiveServer(build_app(settings), lifespan="on")  # the serve command's app; lifespan starts the engine


@benchmark("realtime", help="voice turn latency, runtime overhead, barge-in stop time, concurrent sessions")
def run(ctx: BenchContext) -> dict[str, Any]:
    return asyncio.run(_run(ctx))


async def _run(ctx: BenchContext) -> dict[str, Any]:
    from omni_agent.realtime.testing import FakeResponder, LiveServer, espeak, make_app

    q = ctx.quick
    turns = int(ctx.options.get("turns", 2 if q else 8))
    barge_ins = int(ctx.options.get("barge_ins", 1 if q else 5))
    max_sessions = int(ctx.options.get("max_sessions", 2 if q else 32))
    kind = ctx.options.get("responder", "model")
    window_s = float(ctx.options.get("window_s", 2.0 if q else WINDOW_S))
    speech = espeak("Hello there, how are you today?", SR)
    voiced = np.nonzero(np.abs(speech) > 0.01)[0]
    speech = speech[voiced[0]:voiced[-1] + 1]  # espeak pads with silence: the first frame is speech
    turn = np.concatenate([np.zeros(int(0.3 * SR), np.float32), speech, np.zeros(int(0.9 * SR), np.float32)])
    interruption = np.concatenate([speech, np.zeros(int(0.3 * SR), np.float32)])

    t0 = time.perf_counter()
    # building the model and starting uvicorn block for seconds: in a thread, off this loop
    srv = await asyncio.to_thread(_server, ctx, kind)
    await asyncio.to_thread(srv.__enter__)
    try:
        from omni_agent.realtime.testing import LoopBusyMeter

        meter = LoopBusyMeter()
        on_server = srv.loop.call_soon_threadsafe  # the meter runs on the server's own loop
        on_server(meter.start)
        first_audio, overhead = await _turns(srv.url, turns, turn)
        done_meter: asyncio.Future = asyncio.get_running_loop().create_future()
        outer = asyncio.get_running_loop()
        on_server(lambda: outer.call_soon_threadsafe(done_meter.set_result, meter.stop()))
        busy = await done_meter
        with _cpu_hogs(int(ctx.options.get("hogs", os.cpu_count() or 2))):
            loaded, _ = await _turns(srv.url, turns, turn)
        stops, dones = await _barge_ins(srv.url, barge_ins, turn, interruption)
        sustained = await _ladder(srv.url, max_sessions, window_s)
    finally:
        await asyncio.to_thread(srv.__exit__, None, None, None)
    with LiveServer(make_app(ctx.settings, FakeResponder(steps=40, chunk_s=0.2, delay_s=0.1))) as srv:
        runtime_sustained = await _ladder(srv.url, 4 if q else 64, window_s)
    return {
        "vad_to_first_audio_ms_p50": _pct(first_audio, 50),
        "vad_to_first_audio_ms_p95": _pct(first_audio, 95),
        "vad_to_first_audio_ms_p50_loaded": _pct(loaded, 50),
        "loop_busy_fraction": busy,
        "overhead_ms_p50": _pct(overhead, 50),
        "barge_in_stop_ms_p50": _pct(stops, 50),
        "barge_in_done_ms_p50": _pct(dones, 50),
        "sessions_sustained": sustained,
        "sessions_sustained_runtime": runtime_sustained,
        "turns": len(first_audio),
        "barge_ins": len(stops),
        "responder": kind,
        "model": ctx.settings.model.path or ctx.settings.model.preset,
        "device": ctx.settings.model.device,
        "seconds": round(time.perf_counter() - t0, 1),
    }
