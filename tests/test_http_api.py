"""The OpenAI-compatible server, live on 127.0.0.1, driven by the official ``openai`` SDK."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import time
from types import SimpleNamespace

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf
import uvicorn
from PIL import Image
from pydantic import BaseModel

from omni_agent.engine import AsyncEngine
from omni_agent.server.app import create_app
from omni_agent.settings import Settings


def start_server(settings: Settings, engine: AsyncEngine) -> tuple[uvicorn.Server, threading.Thread, str]:
    return start_app(create_app(settings, engine))


def start_app(app) -> tuple[uvicorn.Server, threading.Thread, str]:
    """Run ``app`` with uvicorn in a background thread on a free 127.0.0.1 port."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    db = tmp_path_factory.mktemp("sessions") / "sessions.sqlite"
    settings = Settings.model_validate({"engine": {"kv_cache_mb": 16, "default_max_tokens": 16},
                                        "agent": {"checkpoint_db": str(db)}})
    engine = AsyncEngine.from_settings(settings)
    app = create_app(settings, engine)
    server, thread, url = start_app(app)
    yield SimpleNamespace(url=url, engine=engine, responder=app.state.responder,
                          client=openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0))
    server.should_exit = True
    thread.join(10)


def png_data_url(seed: int = 0) -> str:
    arr = np.random.default_rng(seed).integers(0, 255, (280, 280, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def wav_b64(seconds: float = 0.5, sr: int = 24000) -> str:
    t = np.arange(int(seconds * sr)) / sr
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return base64.b64encode(buf.getvalue()).decode()


def test_models_health_metrics(live):
    assert [m.id for m in live.client.models.list().data] == ["tiny"]
    assert httpx.get(live.url + "/health").json()["status"] == "ok"
    live.client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    text = httpx.get(live.url + "/metrics").text
    for name in ("omni_engine_time_to_first_token_seconds_bucket", "omni_engine_decode_tokens_per_second",
                 "omni_engine_queue_depth", "omni_engine_prefix_cache_hit_rate", "omni_engine_generated_tokens_total"):
        assert name in text


def test_non_streaming_and_streaming_agree(live):
    kw = dict(model="tiny", messages=[{"role": "user", "content": "Say something."}], max_tokens=12, temperature=0)
    full = live.client.chat.completions.create(**kw)
    assert full.choices[0].finish_reason in ("length", "stop")
    assert full.usage.completion_tokens <= 12 and full.usage.prompt_tokens > 0
    chunks = list(live.client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == full.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_sampling_params_over_http(live):
    kw = dict(model="tiny", messages=[{"role": "user", "content": "Pick words."}], max_tokens=10)
    a = live.client.chat.completions.create(seed=3, temperature=1.0, **kw).choices[0].message.content
    b = live.client.chat.completions.create(seed=3, temperature=1.0, **kw).choices[0].message.content
    assert a == b
    r = live.client.chat.completions.create(temperature=0, **{**kw, "max_tokens": 3})
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3
    full = live.client.chat.completions.create(temperature=0, **kw).choices[0].message.content
    stop = full[3:5]
    cut = live.client.chat.completions.create(temperature=0, stop=[stop], **kw)
    assert cut.choices[0].message.content == full[:full.find(stop)] and cut.choices[0].finish_reason == "stop"


def test_image_and_audio_parts(live):
    content = [{"type": "text", "text": "What do you see and hear?"},
               {"type": "image_url", "image_url": {"url": png_data_url()}},
               {"type": "input_audio", "input_audio": {"data": wav_b64(), "format": "wav"}}]
    r = live.client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": content}],
                                            max_tokens=6, temperature=0)
    assert r.usage.prompt_tokens > 100  # image (100 tokens) + audio placeholders
    stream = live.client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": content}],
                                                 max_tokens=6, temperature=0, stream=True,
                                                 stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == r.choices[0].message.content
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens > 0  # the second ask reused the prefix


class Forecast(BaseModel):
    city: str
    days: int
    unit: str


def test_tool_call_with_json_schema(live):
    tools = [{"type": "function", "function": {"name": "get_forecast", "description": "Weather forecast",
                                               "parameters": Forecast.model_json_schema()}},
             {"type": "function", "function": {"name": "noop", "parameters": {"type": "object", "properties": {}}}}]
    for choice in ({"type": "function", "function": {"name": "get_forecast"}}, "required"):
        r = live.client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Weather in Paris for 3 days?"}],
            tools=tools, tool_choice=choice, max_tokens=200, temperature=1.0, seed=1)
        assert r.choices[0].finish_reason == "tool_calls"
        call = r.choices[0].message.tool_calls[0]
        args = json.loads(call.function.arguments)
        if call.function.name == "get_forecast":
            Forecast.model_validate(args)
        else:
            assert call.function.name == "noop" and isinstance(args, dict)
    # streaming: the SDK accumulates the tool call deltas
    stream = live.client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Weather?"}], tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_forecast"}}, max_tokens=200, stream=True)
    chunks = list(stream)
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].function.name == "get_forecast"
    Forecast.model_validate_json(calls[0].function.arguments)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_response_format_json_schema(live):
    r = live.client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Give me a forecast as JSON."}], max_tokens=200,
        response_format={"type": "json_schema", "json_schema": {"name": "forecast",
                                                                "schema": Forecast.model_json_schema()}})
    Forecast.model_validate_json(r.choices[0].message.content)


def test_fifty_concurrent_streams(live):
    async def main():
        client = openai.AsyncOpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, timeout=120)

        async def one(i):
            stream = await client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": f"count {i}"}], max_tokens=8, stream=True)
            finish = None
            async for chunk in stream:  # read the SSE stream to the end
                if chunk.choices and chunk.choices[0].finish_reason:
                    finish = chunk.choices[0].finish_reason
            return finish

        try:
            return await asyncio.gather(*(one(i) for i in range(50)))
        finally:
            await client.close()  # close the connection pool before the loop goes away

    finishes = asyncio.run(main())
    assert all(f in ("stop", "length") for f in finishes)
    assert live.engine.stats()["kv_blocks_used"] == 0


@pytest.mark.parametrize("body", [
    b"{not json",
    b'{"model": "tiny"}',
    b'{"model": "tiny", "messages": []}',
    b'{"model": "tiny", "messages": [{"role": "wizard", "content": "hi"}]}',
    b'{"model": "tiny", "messages": [{"role": "user", "content": [{"type": "hologram"}]}]}',
    b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": -1}',
    b'{"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}',
    b'{"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}]}]}',
    b'{"model": "tiny", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "!!", "format": "wav"}}]}]}',
    b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "tool_choice": "required"}',
    b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}',
    b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "n": 9}',
    b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}}}',
])
def test_malformed_requests_get_openai_400(live, body):
    r = httpx.post(live.url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    ok = live.client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "still there?"}],
                                             max_tokens=2)
    assert ok.choices[0].message.content is not None


def test_sdk_raises_bad_request(live):
    with pytest.raises(openai.BadRequestError):
        live.client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x " * 20000}])


def test_client_disconnect_frees_cache(live):
    with httpx.stream("POST", live.url + "/v1/chat/completions", json={
            "model": "tiny", "messages": [{"role": "user", "content": "go on forever"}], "max_tokens": 3000,
            "stream": True, "temperature": 0}) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                break
    for _ in range(200):
        if live.engine.stats()["kv_blocks_used"] == 0 and live.engine.stats()["running"] == 0:
            break
        time.sleep(0.02)
    assert live.engine.stats()["kv_blocks_used"] == 0


def test_api_key_required_when_set(tmp_path):
    settings = Settings.model_validate({"server": {"api_key": "sekrit"}, "engine": {"kv_cache_mb": 4},
                                        "agent": {"checkpoint_db": str(tmp_path / "s.sqlite")}})
    engine = AsyncEngine.from_settings(settings)
    server, thread, url = start_server(settings, engine)
    try:
        bad = openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        good = openai.OpenAI(base_url=url + "/v1", api_key="sekrit", max_retries=0)
        assert good.models.list().data[0].id == "tiny"
        assert httpx.get(url + "/health").status_code == 200
    finally:
        server.should_exit = True
        thread.join(10)


def test_video_extension_part(live):
    from tests.video_fixtures import make_video

    url = "data:video/mp4;base64," + base64.b64encode(make_video(seconds=2.0, audio=None)).decode()
    before = live.engine.stats()["encoder_calls"]
    answers = []
    for part_type, q in (("video_url", "What happens in this video?"), ("video", "What happens later?")):
        part = {"type": part_type, part_type: {"url": url, "fps": 2.0}}
        r = live.client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": [part, {"type": "text", "text": q}]}],
            max_tokens=4, temperature=0)
        answers.append(r)
    assert answers[0].usage.prompt_tokens > 100
    assert answers[1].usage.prompt_tokens_details.cached_tokens > 0
    assert live.engine.stats()["encoder_calls"] == before + 1  # the second question reused the video


def on_server(live, coro):
    """Run ``coro`` on the server's event loop (the session database belongs to it)."""
    return asyncio.run_coroutine_threadsafe(coro, live.engine._loop).result(30)


def test_chat_turns_run_through_the_agent_graph(live):
    kw = dict(model="tiny", max_tokens=4, temperature=0)
    first = live.client.chat.completions.create(messages=[{"role": "user", "content": "Remember: blue."}],
                                                user="sess-http-1", **kw)
    msgs = on_server(live, live.responder.runner.messages("local/sess-http-1"))
    assert [m.type for m in msgs] == ["human", "ai"]  # the graph's checkpoint of a plain turn (think)
    assert msgs[1].content.strip() == first.choices[0].message.content.strip()
    # same session (by header this time): the request carries only the new message, the graph the history
    second = httpx.post(live.url + "/v1/chat/completions", headers={"X-Session-Id": "sess-http-1"}, json={
        **kw, "messages": [{"role": "user", "content": "Which colour?"}]}, timeout=60).json()
    msgs = on_server(live, live.responder.runner.messages("local/sess-http-1"))
    assert [m.type for m in msgs] == ["human", "ai", "human", "ai"]
    assert msgs[0].content == "Remember: blue." and msgs[2].content == "Which colour?"
    alone = live.client.chat.completions.create(messages=[{"role": "user", "content": "Which colour?"}], **kw)
    assert second["usage"]["prompt_tokens"] > alone.usage.prompt_tokens  # the history was in the prompt
    # without a session id a request is stateless: the same request again sees the same prompt
    again = live.client.chat.completions.create(messages=[{"role": "user", "content": "Which colour?"}], **kw)
    assert again.usage.prompt_tokens == alone.usage.prompt_tokens
    assert again.choices[0].message.content == alone.choices[0].message.content


def test_server_side_tools_are_not_offered_over_http(live):
    tools = [{"type": "function", "function": {"name": "noop", "parameters": {"type": "object", "properties": {}}}}]
    r = live.client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Draw a cat."}],
                                            tools=tools, tool_choice="required", max_tokens=50)
    assert [c.function.name for c in r.choices[0].message.tool_calls] == ["noop"]  # never generate_image
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0  # decide + arguments requests
    bad = httpx.post(live.url + "/v1/chat/completions", json={
        "model": "tiny", "messages": [{"role": "user", "content": "Draw a cat."}], "tools": tools,
        "tool_choice": {"type": "function", "function": {"name": "generate_image"}}})
    assert bad.status_code == 400 and bad.json()["error"]["message"]


def test_client_tool_round_trip_in_a_session(live):
    tools = [{"type": "function", "function": {"name": "get_forecast", "parameters": Forecast.model_json_schema()}}]
    history = [{"role": "user", "content": "Weather in Paris?"}]
    # max_tokens covers the tool decision and its arguments too: room for a whole call
    r = live.client.chat.completions.create(model="tiny", messages=history, tools=tools, tool_choice="required",
                                            user="sess-tools", max_tokens=256)
    call = r.choices[0].message.tool_calls[0]  # returned to the client, not run on the server
    history += [r.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'}]
    answer = live.client.chat.completions.create(model="tiny", messages=history, tools=tools, tool_choice="none",
                                                 user="sess-tools", max_tokens=4)
    assert answer.choices[0].finish_reason in ("stop", "length") and answer.choices[0].message.content is not None
    msgs = on_server(live, live.responder.runner.messages("local/sess-tools"))
    assert [m.type for m in msgs] == ["human", "ai", "tool", "ai"]
    assert msgs[1].tool_calls[0]["id"] == call.id and msgs[2].tool_call_id == call.id


def test_http_media_parts_keep_their_order_and_text(live):
    content = [{"type": "image_url", "image_url": {"url": png_data_url(5)}},
               {"type": "input_audio", "input_audio": {"data": wav_b64(), "format": "wav"}},
               {"type": "text", "text": "What is in the picture?"}]
    live.client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": content}],
                                        user="sess-media", max_tokens=2)
    human = on_server(live, live.responder.runner.messages("local/sess-media"))[0]
    # media by reference in their places; the text next to a recording is still asked
    assert [p["type"] for p in human.content] == ["image", "audio", "text"]
    assert human.content[2]["text"] == "What is in the picture?"
    assert all(p["artifact_id"].startswith("art_") for p in human.content[:2])
