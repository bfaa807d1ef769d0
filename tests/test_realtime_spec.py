"""Each protocol deviation found with the SDK and the browser, fixed to the GA spec: every server event of
every scenario is validated with the openai SDK's own pydantic types (``model_validate``), GA and Beta."""

import asyncio
import json

import numpy as np
import pytest

from omni_agent.realtime.responder import (
    FunctionCallDelta,
    FunctionCallDone,
    ResponseFinished,
    Usage,
)
from omni_agent.realtime.testing import (
    SR,
    FakeResponder,
    LiveServer,
    RealtimeClient,
    make_app,
    pcm16,
    sdk_validate,
)
from omni_agent.settings import Settings


def validate_all(events, beta=False):
    sdk_validate(events, beta)


class ToolResponder:
    """A function call whose arguments stream as deltas; the done frame's JSON is ASCII-escaped differently."""

    async def respond(self, conversation, options, cancel):
        for piece in ('{"city": ', '"Zürich"', "}"):
            yield FunctionCallDelta("call_1", "weather", piece)
        yield FunctionCallDone("call_1", "weather", json.dumps({"city": "Zürich"}))
        yield ResponseFinished("completed", None, Usage(input_tokens=5, output_tokens=4))


@pytest.fixture(scope="module")
def server():
    with LiveServer(make_app(Settings(), FakeResponder(steps=3))) as srv:
        yield srv


async def _client(url, beta=False):
    headers = {"OpenAI-Beta": "realtime=v1"} if beta else {}
    c = await RealtimeClient.connect(url, additional_headers=headers)
    await c.wait_for("session.created")
    return c


async def _error_for(c, event, eid):
    await c.send({**event, "event_id": eid})
    return (await c.wait_for("error", pred=lambda e: e["error"]["event_id"] == eid, timeout=5))["error"]


@pytest.mark.parametrize("beta", [False, True])
async def test_session_echo_is_complete_and_validates(server, beta):
    c = await _client(server.url, beta)
    if beta:
        await c.send({"type": "session.update", "session": {"model": "gpt-4o-realtime-preview", "voice": "alloy",
                                                            "turn_detection": {"type": "server_vad"}}})
    else:
        await c.send({"type": "session.update", "session": {
            "type": "realtime", "model": "gpt-realtime", "truncation": {"type": "retention_ratio",
                                                                       "retention_ratio": 0.7},
            "tracing": None, "include": [], "audio": {"output": {"voice": "marin", "speed": 1.0}}}})
    upd = (await c.wait_for("session.updated"))["session"]
    if beta:
        assert upd["model"] == "gpt-4o-realtime-preview" and upd["voice"] == "alloy"
    else:
        assert upd["model"] == "gpt-realtime" and upd["truncation"]["retention_ratio"] == 0.7
        assert upd["tracing"] is None and upd["audio"]["output"] == {
            "format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin", "speed": 1.0}
    validate_all(c.events, beta)
    await c.close()


REFUSED = [
    ({"turn_detection": {"type": "semantic_vad"}}, "turn_detection.type"),
    ({"speed": 1.1}, "speed"),
    ({"noise_reduction": {"type": "near_field"}}, "noise_reduction"),
    ({"voice": "no-such-voice"}, "voice"),
    ({"output_modalities": []}, "output_modalities"),
    ({"tool_choice": {"type": "function", "name": "ghost"}}, "tool_choice"),
    ({"tools": [{"type": "function", "name": "f", "parameters": {"type": "objekt"}}]}, "parameters"),
    ({"tools": [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": []}}]},
     "parameters"),
    ({"tracing": "auto"}, "tracing"),
    ({"include": ["item.input_audio_transcription.logprobs"]}, "include"),
]


@pytest.mark.parametrize(("change", "param"), REFUSED)
async def test_options_not_implemented_are_refused_not_rewritten(server, change, param):
    c = await _client(server.url)
    session = {"type": "realtime"}
    for k, v in change.items():
        if k in ("turn_detection", "noise_reduction"):
            session["audio"] = {"input": {k: v}}
        elif k in ("speed", "voice"):
            session["audio"] = {"output": {k: v}}
        else:
            session[k] = v
    err = await _error_for(c, {"type": "session.update", "session": session}, "bad")
    assert param in (err["param"] or "") and err["message"]
    await c.send({"type": "session.update", "session": {"instructions": "alive"}})
    assert (await c.wait_for("session.updated"))["session"]["instructions"] == "alive"
    validate_all(c.events)
    await c.close()


@pytest.mark.parametrize("beta", [False, True])
async def test_cancelled_spoken_response_reports_its_usage(server, beta):
    c = await _client(server.url, beta)
    await c.send({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}}})
    await c.wait_for("session.updated")
    await c.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_audio", "audio": __import__("base64").b64encode(
            pcm16((0.1 * np.sin(np.arange(SR) / 4)).astype(np.float32))).decode()}]}})
    await c.send({"type": "response.create"})
    await c.wait_for("response.output_audio.delta", count=2)
    await c.send({"type": "response.cancel"})
    done = (await c.wait_for("response.done"))["response"]
    assert done["status"] == "cancelled"
    u = done["usage"]
    assert u["output_tokens"] > 0 and u["output_token_details"]["audio_tokens"] > 0
    assert u["input_token_details"]["audio_tokens"] == 25  # 1 s of user audio at 25 Hz
    validate_all(c.events, beta)
    await c.close()


@pytest.mark.parametrize("beta", [False, True])
async def test_function_call_arguments_done_is_the_joined_deltas(beta):
    with LiveServer(make_app(Settings(), ToolResponder())) as srv:
        c = await _client(srv.url, beta)
        await c.send({"type": "session.update", "session": {"type": "realtime", "tools": [
            {"type": "function", "name": "weather", "parameters": {"type": "object", "properties": {
                "city": {"type": "string"}}}}]}})
        await c.wait_for("session.updated")
        await c.send({"type": "response.create"})
        done = await c.wait_for("response.function_call_arguments.done")
        deltas = "".join(e["delta"] for e in c.of("response.function_call_arguments.delta"))
        assert done["arguments"] == deltas == '{"city": "Zürich"}'
        await c.wait_for("response.done")
        validate_all(c.events, beta)
        await c.close()


async def test_idle_timeout_triggers_a_response():
    with LiveServer(make_app(Settings(), FakeResponder(steps=1))) as srv:
        c = await _client(srv.url)
        await c.send({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
            "turn_detection": {"type": "server_vad", "idle_timeout_ms": 300}}}}})
        upd = await c.wait_for("session.updated")
        assert upd["session"]["audio"]["input"]["turn_detection"]["idle_timeout_ms"] == 300
        await c.send({"type": "response.create"})
        first = await c.wait_for("response.done")
        silence = pcm16(np.zeros(SR // 10, np.float32))
        for _ in range(10):  # 1 s of silence, no speech: the timeout fires after the answer has played
            await c.append(silence)
            await asyncio.sleep(0.1)
        ev = await c.wait_for("input_audio_buffer.timeout_triggered", timeout=5)
        assert ev["audio_end_ms"] >= ev["audio_start_ms"] and ev["item_id"]
        second = await c.wait_for("response.done", count=2, timeout=5)
        assert second["response"]["id"] != first["response"]["id"]
        validate_all(c.events)
        await c.close()
