"""The demo's stages, in the order a user meets the runtime.

Each stage is ``(settings, out_dir, quick) -> summary line`` and uses only public entry points: the serve
command's app on a real 127.0.0.1 port, the realtime protocol over a websocket, the HTTP API, and the
``run`` command for the agent's image and Android tools. ``quick`` keeps every reply and image to
the fewest tokens and steps that still go through the same code (the test suite runs the demo so).
Stages pass settings as flags or copies, never through ``os.environ``: no stage changes the next one's
environment.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from omni_agent.settings import Settings

VOICE_QUESTION = "Hello! Can you tell me what you can do?"


def stage_thinker(settings: Settings, out: Path, quick: bool = False) -> str:
    from omni_agent.model.processor import OmniProcessor
    from omni_agent.model.thinker import Thinker

    thinker = Thinker.from_preset(settings.model.preset, seed=settings.model.seed)
    processor = OmniProcessor.for_preset(settings.model.preset)
    prompt = processor([{"role": "user", "content": "Hello! Who are you?"}])
    n = sum(p.numel() for p in thinker.parameters())
    return f"thinker '{settings.model.preset}' built ({n / 1e6:.1f} M params); prompt has {len(prompt.input_ids)} tokens"


async def _voice_turn(url: str, out: Path, max_tokens: int) -> str:
    import soundfile as sf

    from omni_agent.realtime.testing import SR, RealtimeClient, stream_audio, utterance

    client = await RealtimeClient.connect(url)
    try:
        await client.wait_for("session.created")
        await client.send({"type": "session.update", "session": {
            "type": "realtime", "output_modalities": ["audio"],
            "max_output_tokens": max_tokens,  # random weights babble until the cap: keep the reply short
            "tool_choice": "none",  # a plain voice turn (think -> speak); random weights pick tools at random
            "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                                "transcription": {"model": "omni-agent", "language": "en"}}}}})
        await client.wait_for("session.updated")
        question = utterance(VOICE_QUESTION)
        sf.write(out / "voice-question.wav", question, SR)
        await stream_audio(client, question)
        stopped = await client.wait_for("input_audio_buffer.speech_stopped", timeout=120)
        t_stop = client.arrivals[client.events.index(stopped)]
        done = await client.wait_for("response.done", timeout=300)
        deltas = [(e, t) for e, t in zip(client.events, client.arrivals, strict=True)
                  if e["type"] == "response.output_audio.delta"]
        audio = b"".join(base64.b64decode(e["delta"]) for e, _ in deltas)
        wave = np.frombuffer(audio, dtype="<i2").astype(np.float32) / 32768.0
        sf.write(out / "voice-reply.wav", wave, SR)
        transcript = "".join(e.get("delta", "") for e in client.of("response.output_audio_transcript.delta"))
        first_ms = (deltas[0][1] - t_stop) * 1000 if deltas else float("nan")
        print(f"   you said (espeak-ng): {VOICE_QUESTION!r} -> voice-question.wav")
        print(f"   reply transcript: {transcript[:80]!r}")
        return (f"voice turn: speech_stopped -> first audio {first_ms:.0f} ms; {len(wave) / SR:.1f} s of reply audio "
                f"in voice-reply.wav; response status {done['response']['status']}")
    finally:
        await client.close()


def _http_turn(base: str, model: str, max_tokens: int) -> str:
    import httpx
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (224, 224), "white")
    ImageDraw.Draw(img).ellipse((40, 40, 184, 184), fill="red")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    body = {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}},
        {"type": "text", "text": "What shape is in this picture?"}]}]}
    timings = []
    for _ in range(2):  # the second question about the same image reuses its encoder output and prefix
        t0 = time.perf_counter()
        r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=300)
        r.raise_for_status()
        timings.append((time.perf_counter() - t0) * 1000)
    data = r.json()
    cached = (data["usage"].get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    print(f"   answer: {data['choices'][0]['message']['content'][:80]!r}")
    return (f"image QA over HTTP: first {timings[0]:.0f} ms, same image again {timings[1]:.0f} ms "
            f"({cached} of {data['usage']['prompt_tokens']} prompt tokens from the prefix cache)")


def stage_serve(settings: Settings, out: Path, quick: bool = False) -> str:
    from omni_agent.commands.serve import build_app
    from omni_agent.realtime.testing import LiveServer
    from omni_agent.server.app import model_id

    settings = settings.model_copy(deep=True)
    settings.agent.checkpoint_db = str(out / "sessions.sqlite")
    with LiveServer(build_app(settings), lifespan="on") as server:
        print(f"   serving on {server.http} (HTTP) and {server.url} (realtime)")
        voice = asyncio.run(_voice_turn(server.url, out, 8 if quick else 40))
        print(f"   {voice}")
        return _http_turn(server.http, model_id(settings), 4 if quick else 24)


def _cli(argv: list[str], settings: Settings, out: Path) -> int:
    """``omni-agent ARGV`` in this process, on the demo's model. Settings go in as flags, never through
    ``os.environ``, so that no stage changes the environment the next one (or the caller) runs in."""
    from omni_agent.cli import main

    m = settings.model
    model = ["--preset", m.preset, "--torch-device", m.device, "--dtype", m.dtype]
    if m.path:
        model += ["--model-path", m.path]
    return main([*argv, *model, "--db", str(out / "sessions.sqlite")])


def stage_image_tool(settings: Settings, out: Path, quick: bool = False) -> str:
    target = out / "bicycle.png"
    # --max-steps 2: random weights may keep calling the tool; one image is enough
    rc = _cli(["run", "draw a red bicycle", "--out", str(target), "--image-steps", "1" if quick else "4",
               "--tool", "generate_image", "--max-steps", "2", "--max-tokens", "4" if quick else "64"], settings, out)
    if rc != 0 or not target.exists():
        raise RuntimeError(f"omni-agent run exited with {rc}")
    return f"agent graph -> generate_image tool -> {target}"


def stage_android(settings: Settings, out: Path, quick: bool = False) -> str:
    rc = _cli(["run", "--task", "send_hello_alice", "--oracle", "--approve-all",
               "--out", str(out / "android")], settings, out)
    if rc != 0:
        raise RuntimeError(f"omni-agent run --task exited with {rc}")
    return f"Android task 'send_hello_alice' solved on the simulated phone over adb; trajectory in {out / 'android'}"


STAGES: list[tuple[str, Callable[[Settings, Path, bool], str]]] = [
    ("thinker: build the model and process a prompt", stage_thinker),
    ("serve: a voice turn over the realtime websocket, then image QA over HTTP", stage_serve),
    ("agent: 'draw a red bicycle' through the graph and the diffusion decoder", stage_image_tool),
    ("agent: a GUI task on the simulated Android phone (send needs approval: --approve-all)", stage_android),
]
