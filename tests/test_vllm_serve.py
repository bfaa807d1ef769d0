"""``omni-agent serve --engine vllm``: the serve command's app with the thinker in a real vLLM server.

A spoken realtime turn and a chat completion with media run through the agent graph and vLLM (the
plugin on the tiny preset's checkpoint); an unreachable or dying vLLM gives a clear error while the
session and the server carry on.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from omni_agent.engine import EngineError, GenerationRequest, SamplingParams
from omni_agent.engine.vllm_client import VllmEngine, VllmUnavailable
from omni_agent.engine.vllm_server import free_port
from omni_agent.model.processor import OmniProcessor
from omni_agent.realtime.testing import LiveServer, RealtimeClient, stream_audio, utterance
from omni_agent.settings import Settings


def _settings(tmp_path, **engine) -> Settings:
    return Settings.model_validate({"engine": {"backend": "vllm", "max_model_len": 4096, **engine},
                                    "agent": {"checkpoint_db": str(tmp_path / "sessions.sqlite")}})


@pytest.fixture(scope="module")
def server(tmp_path_factory, monkeypatch_module):
    from omni_agent.commands.serve import build_app

    tmp = tmp_path_factory.mktemp("vllm_serve")
    monkeypatch_module.setenv("OMNI_VLLM_CACHE", str(tmp / "cache"))
    app = build_app(_settings(tmp))
    with LiveServer(app, lifespan="on") as srv:
        yield srv


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


async def test_spoken_turn_through_vllm(server):
    async with httpx.AsyncClient() as http:
        health = (await http.get(f"{server.http}/health")).json()
    assert health["engine"]["engine"] == "vllm"
    c = await RealtimeClient.connect(server.url)
    await c.wait_for("session.created")
    await c.send({"type": "session.update", "session": {"type": "realtime", "max_output_tokens": 8,
                                                        "tool_choice": "none"}})
    await c.wait_for("session.updated")
    await stream_audio(c, utterance("Hello, can you hear me?", 0.4, 1.0))
    done = await c.wait_for("response.done", timeout=240)
    assert done["response"]["status"] in ("completed", "incomplete")
    usage = done["response"]["usage"]  # output_tokens counts text and audio tokens, as OpenAI's does
    assert 0 < usage["output_token_details"]["text_tokens"] <= 8 and usage["output_token_details"]["audio_tokens"] > 0
    audio = b"".join(base64.b64decode(e["delta"]) for e in c.of("response.output_audio.delta"))
    assert len(audio) > 2 * 2400
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{server.http}/health")).json()["engine"]["tokens_generated"] > 0
    await c.close()


def test_chat_completion_with_an_image_through_vllm(server):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (56, 84, 3), dtype=np.uint8)).save(buf, "PNG")
    png = base64.b64encode(buf.getvalue()).decode()
    body = {"model": "tiny", "max_tokens": 6, "temperature": 0, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
        {"type": "text", "text": "What is in the picture?"}]}]}
    r = httpx.post(f"{server.http}/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert usage["prompt_tokens"] > 100 and 0 < usage["completion_tokens"] <= 6  # the image's placeholders went in


async def test_unreachable_vllm_is_a_clear_error_and_the_session_survives(tmp_path):
    from omni_agent.commands.serve import build_app

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with LiveServer(build_app(_settings(tmp_path, vllm_url=url)), lifespan="on") as srv:
        c = await RealtimeClient.connect(srv.url)
        await c.wait_for("session.created")
        await c.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                                    "content": [{"type": "input_text", "text": "Hi"}]}})
        await c.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        done = await c.wait_for("response.done", timeout=60)
        assert done["response"]["status"] == "failed"
        assert url in json.dumps(done) + json.dumps(c.of("error"))  # the error names the vLLM server
        await c.send({"type": "session.update", "session": {"type": "realtime", "instructions": "still here"}})
        await c.wait_for("session.updated")  # the session lives on
        await c.close()


async def test_vllm_dying_mid_stream_is_an_engine_error():
    """A server that sends one delta and drops the connection: the stream ends with VllmUnavailable."""
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    app = FastAPI()

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/ming/generate")
    def generate() -> StreamingResponse:
        def lines():
            yield json.dumps({"token_ids": [300], "finished": False}) + "\n"
            raise RuntimeError("engine process died")

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    processor = OmniProcessor.for_preset("tiny")
    with LiveServer(app) as srv:
        engine = VllmEngine(srv.http, processor, max_model_len=4096)
        await engine.start()
        req = GenerationRequest("r1", processor([{"role": "user", "content": "Hi"}]), SamplingParams(max_tokens=8))
        got = []
        with pytest.raises(VllmUnavailable, match=srv.http):
            async for out in engine.generate(req):
                got += out.token_ids
        assert got == [300]
        assert issubclass(VllmUnavailable, EngineError)
        await engine.shutdown()
        await asyncio.sleep(0)


def test_video_questions_reuse_vllm_prefix_cache(server):
    """Video QA through vLLM: the second question about the same video hits vLLM's prefix cache (the
    video item is keyed by the runtime's content hash)."""
    from tests.video_fixtures import make_video

    url = "data:video/mp4;base64," + base64.b64encode(make_video(seconds=2.0, audio=None)).decode()
    usages = []
    for q in ("What happens in this video?", "What happens later?"):
        body = {"model": "tiny", "max_tokens": 4, "temperature": 0, "messages": [{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": url, "fps": 2.0}}, {"type": "text", "text": q}]}]}
        r = httpx.post(f"{server.http}/v1/chat/completions", json=body, timeout=120)
        assert r.status_code == 200, r.text
        usages.append(r.json()["usage"])
    assert usages[0]["prompt_tokens"] > 100
    assert usages[1]["prompt_tokens_details"]["cached_tokens"] > 100


def test_forced_tool_call_is_schema_constrained_by_vllm(server):
    """The agent's tool choice and the call's arguments are JSON-schema constrained through vLLM's
    structured outputs (xgrammar)."""
    tools = [{"type": "function", "function": {"name": "set_mode", "parameters": {
        "type": "object", "properties": {"mode": {"enum": ["eco", "boost"]}, "fast": {"type": "boolean"}},
        "required": ["mode", "fast"], "additionalProperties": False}}}]
    # max_tokens covers the tool decision and the arguments (as OpenAI counts them), so leave room for both
    body = {"model": "tiny", "max_tokens": 256, "temperature": 0, "tools": tools, "tool_choice": "required",
            "messages": [{"role": "user", "content": "Switch to eco mode."}]}
    r = httpx.post(f"{server.http}/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    call = r.json()["choices"][0]["message"]["tool_calls"][0]
    args = json.loads(call["function"]["arguments"])
    assert call["function"]["name"] == "set_mode"
    assert args["mode"] in ("eco", "boost") and isinstance(args["fast"], bool)


def test_local_thinker_for_image_conditions_loads_on_first_use(server, tmp_path):
    from omni_agent.engine.backends import preset_checkpoint
    from omni_agent.model.thinker import Thinker

    path = preset_checkpoint("tiny", 0)
    engine = VllmEngine("http://127.0.0.1:9", OmniProcessor.from_pretrained(path), model_path=str(path))
    proxy = engine.thinker
    assert proxy.hidden_size == 128 and proxy._model is None  # the realtime responder's check loads nothing
    ref = Thinker.from_pretrained(path)
    assert torch.equal(proxy.model.lm_head.weight, ref.model.lm_head.weight)


def test_serve_without_a_vllm_environment_says_how_to_build_one(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMNI_VLLM_PYTHON": str(tmp_path / "none" / "python"), "OMNI_VLLM_CACHE": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "omni_agent", "serve", "--engine", "vllm", "--port", "0"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "make vllm" in proc.stderr and "Traceback" not in proc.stderr
