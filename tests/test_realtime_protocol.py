"""Protocol conformance: every emitted event validates against the openai SDK's types (GA and Beta),
G.711 round trips, Beta aliases, input transcription."""

import asyncio
import base64

import numpy as np
import pytest
from pydantic import TypeAdapter

from audio.dsp import alaw_decode, alaw_encode, mulaw_decode, mulaw_encode, resample
from omni_agent.realtime.events import BETA_EVENT_NAMES, parse_client_event
from omni_agent.realtime.testing import (
    SR,
    FakeResponder,
    LiveServer,
    RealtimeClient,
    make_app,
    stream_audio,
    utterance,
)
from omni_agent.settings import Settings


@pytest.fixture(scope="module")
def turn():
    return utterance("Please tell me a short story.", lead_s=0.5, tail_s=1.0)


class FakeTranscriber:
    def __init__(self, fail=False):
        self.fail, self.calls = fail, []

    async def transcribe(self, audio, language=None, prompt=None):
        self.calls.append((len(audio), language, prompt))
        if self.fail:
            raise RuntimeError("asr exploded")
        for piece in ("Cantonese\t", "hello ", "world"):
            await asyncio.sleep(0)
            yield piece


@pytest.fixture(scope="module")
def server():
    transcriber = FakeTranscriber()
    with LiveServer(make_app(Settings(), FakeResponder(steps=3), transcriber=transcriber)) as srv:
        srv.transcriber = transcriber
        yield srv


def _sdk_models(union):
    """type literal -> SDK model class (the SDK's unions carry their discriminator outside pydantic)."""
    from typing import get_args

    args = get_args(union)
    if args and not isinstance(args[0], type):
        args = get_args(args[0])
    return {get_args(m.model_fields["type"].annotation)[0]: m for m in args}


def _validate(models, event):
    model = models[event["type"]]  # KeyError: a type the SDK does not know
    TypeAdapter(model).validate_python(event)


def _strip(e):
    return {k: v for k, v in e.items() if not k.startswith("_")}


async def test_ga_events_validate_against_the_openai_sdk(server, turn):
    from openai.types.realtime import RealtimeServerEvent

    models = _sdk_models(RealtimeServerEvent)
    c = await RealtimeClient.connect(server.url)
    await c.wait_for("session.created")
    await c.send({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
        "transcription": {"model": "omni-asr", "language": "Cantonese"}}}}})
    await c.wait_for("session.updated")
    await stream_audio(c, turn)
    await c.wait_for("response.done")
    done = await c.wait_for("conversation.item.input_audio_transcription.completed")
    assert done["transcript"] == "hello world" and done["language"] == "Cantonese"
    assert [e["delta"] for e in c.of("conversation.item.input_audio_transcription.delta")] == [
        "Cantonese\t", "hello ", "world"]
    assert server.transcriber.calls[-1][1] == "Cantonese"
    await c.send({"type": "conversation.item.retrieve", "item_id": done["item_id"]})
    got = await c.wait_for("conversation.item.retrieved")
    assert got["item"]["content"][0]["transcript"] == "hello world"
    for e in c.events:
        _validate(models, _strip(e))  # raises on any field the SDK cannot read
    await c.close()


async def test_beta_clients_get_beta_names_and_shapes(server, turn):
    from openai.types.beta.realtime import RealtimeServerEvent as BetaServerEvent

    models = _sdk_models(BetaServerEvent)
    c = await RealtimeClient.connect(server.url, additional_headers={"OpenAI-Beta": "realtime=v1"})
    created = await c.wait_for("session.created")
    assert created["session"]["input_audio_format"] == "pcm16"
    assert created["session"]["turn_detection"]["silence_duration_ms"] == 500
    await stream_audio(c, turn)
    await c.wait_for("response.done")
    raw = [e["_raw_type"] for e in c.events]
    assert "response.audio.delta" in raw and "response.audio_transcript.delta" in raw
    assert "conversation.item.created" in raw and "response.output_audio.delta" not in raw
    assert "conversation.item.done" not in raw
    item = c.of("response.done")[0]["response"]["output"][0]
    assert item["content"][0]["type"] == "audio"
    for e in c.events:
        e = {**_strip(e), "type": e["_raw_type"]}
        if "session" in e:  # the Beta SDK types list OpenAI's model names only; ours is "omni-agent"
            e["session"] = {k: v for k, v in e["session"].items() if k != "model"}
        _validate(models, e)
    await c.close()


async def test_beta_session_shape_switches_to_beta_names(server):
    c = await RealtimeClient.connect(server.url)
    await c.wait_for("session.created")
    await c.send({"type": "session.update", "session": {"modalities": ["text"], "turn_detection": None,
                                                        "input_audio_format": "g711_ulaw", "voice": "alloy"}})
    upd = await c.wait_for("session.updated")
    assert upd["_raw_type"] == "session.updated"
    assert upd["session"]["modalities"] == ["text"] and upd["session"]["turn_detection"] is None
    assert upd["session"]["input_audio_format"] == "g711_ulaw" and upd["session"]["voice"] == "alloy"
    await c.send({"type": "response.create"})
    await c.wait_for("response.done")
    assert "response.text.delta" in [e["_raw_type"] for e in c.events]
    # and back to GA names through the documented session option
    await c.send({"type": "session.update", "session": {"protocol": "ga"}})
    await c.wait_for("session.updated", count=2)
    await c.send({"type": "response.create"})
    await c.wait_for("response.done", count=2)
    assert "response.output_text.delta" in [e["_raw_type"] for e in c.events]
    await c.close()


async def test_query_option_selects_beta(server):
    c = await RealtimeClient.connect(server.url + "?protocol=beta")
    created = await c.wait_for("session.created")
    assert "input_audio_format" in created["session"]
    await c.close()


@pytest.mark.parametrize(("fmt", "ga", "enc", "dec"), [
    ("g711_ulaw", "audio/pcmu", mulaw_encode, mulaw_decode),
    ("g711_alaw", "audio/pcma", alaw_encode, alaw_decode),
])
async def test_g711_round_trip(server, turn, fmt, ga, enc, dec):
    c = await RealtimeClient.connect(server.url)
    await c.wait_for("session.created")
    await c.send({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"format": {"type": ga}}, "output": {"format": {"type": ga}}}}})
    upd = await c.wait_for("session.updated")
    assert upd["session"]["audio"]["output"]["format"] == {"type": ga}
    wave8k = resample(turn, SR, 8000)
    data = enc(wave8k)
    for i in range(0, len(data), 320):  # 40 ms of 8 kHz G.711
        await c.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(data[i:i + 320]).decode()})
    await c.wait_for("response.done")
    stopped = c.of("input_audio_buffer.speech_stopped")[0]
    assert stopped["audio_end_ms"] > 1000
    deltas = [base64.b64decode(e["delta"]) for e in c.of("response.output_audio.delta")]
    # 3 x 200 ms at 8 kHz, one byte per sample; one resampler over the message holds back a few ms per
    # delta (context for the next) and the last delta carries the tail, so nothing is lost
    assert sum(len(d) for d in deltas) == 3 * 1600
    # the tone comes back: compare the middle of each chunk with the reference at 8 kHz
    tone = resample((0.2 * np.sin(2 * np.pi * 220 * np.arange(int(0.2 * SR)) / SR)).astype(np.float32), SR, 8000)
    got = dec(b"".join(deltas))[:1600]
    mid = slice(200, 1400)
    snr = 10 * np.log10(np.sum(tone[mid] ** 2) / np.sum((tone[mid] - got[mid]) ** 2))
    assert snr > 25
    # the committed input item comes back in the session's input format
    item_id = c.of("input_audio_buffer.committed")[0]["item_id"]
    await c.send({"type": "conversation.item.retrieve", "item_id": item_id})
    got_item = await c.wait_for("conversation.item.retrieved")
    audio = base64.b64decode(got_item["item"]["content"][0]["audio"])
    started = c.of("input_audio_buffer.speech_started")[0]
    assert abs(len(audio) / 8 - (stopped["audio_end_ms"] - started["audio_start_ms"])) < 20
    await c.close()


async def test_transcription_failure_is_reported():
    with LiveServer(make_app(Settings(), FakeResponder(steps=1), transcriber=FakeTranscriber(fail=True))) as srv:
        c = await RealtimeClient.connect(srv.url)
        await c.wait_for("session.created")
        await c.send({"type": "session.update", "session": {"input_audio_transcription": {"model": "x"},
                                                            "turn_detection": None}})
        await c.wait_for("session.updated")
        await c.append(b"\x00\x01" * 4800)
        await c.send({"type": "input_audio_buffer.commit"})
        failed = await c.wait_for("conversation.item.input_audio_transcription.failed")
        assert "asr exploded" in failed["error"]["message"]
        await c.close()


def test_every_client_event_parses():
    samples = [
        {"type": "session.update", "session": {"type": "realtime", "instructions": "x", "output_modalities": ["audio"],
                                               "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                                                   "turn_detection": {"type": "server_vad",
                                                                                      "threshold": 0.6}},
                                                         "output": {"voice": "marin"}},
                                               "max_output_tokens": "inf", "tools": [
                                                   {"type": "function", "name": "f", "parameters": {}}]}},
        {"type": "input_audio_buffer.append", "audio": "AAAA"},
        {"type": "input_audio_buffer.commit"}, {"type": "input_audio_buffer.clear"},
        {"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": "hi"}]}},
        {"type": "conversation.item.retrieve", "item_id": "a"},
        {"type": "conversation.item.truncate", "item_id": "a", "content_index": 0, "audio_end_ms": 10},
        {"type": "conversation.item.delete", "item_id": "a"},
        {"type": "response.create", "response": {"output_modalities": ["text"]}},
        {"type": "response.cancel"},
    ]
    import json

    for s in samples:
        assert parse_client_event(json.dumps(s)).type == s["type"]
    assert BETA_EVENT_NAMES["response.output_audio.delta"] == "response.audio.delta"


async def test_the_openai_sdk_talks_to_the_server():
    from openai import AsyncOpenAI

    settings = Settings.model_validate({"server": {"api_key": "sk-sdk"}})
    with LiveServer(make_app(settings, FakeResponder(steps=2))) as srv:
        client = AsyncOpenAI(api_key="sk-sdk", websocket_base_url=f"ws://127.0.0.1:{srv.port}/v1")
        async with client.realtime.connect(model="omni-agent") as conn:
            await conn.session.update(session={"type": "realtime", "output_modalities": ["audio"]})
            await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": "Hi!"}]})
            await conn.response.create()
            audio = b""
            async with asyncio.timeout(30):
                async for event in conn:
                    if event.type == "response.output_audio.delta":
                        audio += base64.b64decode(event.delta)
                    if event.type == "response.done":
                        assert event.response.status == "completed"
                        break
    assert len(audio) == 2 * 2 * int(0.2 * SR)
