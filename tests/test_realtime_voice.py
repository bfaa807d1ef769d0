"""Voice turns over a live /v1/realtime server: server VAD, responses in protocol order, barge-in, history."""

import asyncio
import base64
import json

import numpy as np
import pytest

from omni_agent.realtime.testing import (
    SR,
    FakeResponder,
    LiveServer,
    RealtimeClient,
    make_app,
    pcm16,
    sdk_validate,
    stream_audio,
    utterance,
)
from omni_agent.settings import Settings


@pytest.fixture(scope="module")
def turn():
    return utterance("Hello, what is the weather like today?", lead_s=0.5, tail_s=1.0)


def _audio_ms(events, response_id=None):
    n = sum(len(base64.b64decode(e["delta"])) // 2 for e in events
            if e["type"] == "response.output_audio.delta" and (response_id is None or e["response_id"] == response_id))
    return n * 1000 // SR


RESPONSE_ORDER = [
    "response.created", "response.output_item.added", "conversation.item.added", "response.content_part.added",
    "response.output_audio.done", "response.output_audio_transcript.done", "response.content_part.done",
    "response.output_item.done", "conversation.item.done", "response.done",
]


async def test_spoken_turn_gets_vad_events_and_a_spoken_response(turn):
    responder = FakeResponder(steps=3)
    with LiveServer(make_app(Settings(), responder)) as srv:
        c = await RealtimeClient.connect(srv.url)
        created = await c.wait_for("session.created")
        td = created["session"]["audio"]["input"]["turn_detection"]
        assert td == {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                      "silence_duration_ms": 500, "create_response": True, "interrupt_response": True}
        await stream_audio(c, turn)
        done = await c.wait_for("response.done")
        started = c.of("input_audio_buffer.speech_started")[0]
        stopped = c.of("input_audio_buffer.speech_stopped")[0]
        assert 0 < started["audio_start_ms"] < 500 < stopped["audio_end_ms"] <= len(turn) * 1000 // SR
        assert started["item_id"] == stopped["item_id"] == c.of("input_audio_buffer.committed")[0]["item_id"]
        # protocol order of the response's lifecycle events
        types = [e["type"] for e in c.events]
        first = types.index("response.created")
        seq = [t for t in types[first:] if t in RESPONSE_ORDER]
        dedup = [t for i, t in enumerate(seq) if t not in seq[:i] or t.startswith("conversation.item")]
        assert dedup == RESPONSE_ORDER
        assert types.index("input_audio_buffer.committed") < first
        assert done["response"]["status"] == "completed"
        assert _audio_ms(c.events) == 3 * 200
        item = done["response"]["output"][0]
        assert item["role"] == "assistant" and item["content"][0]["transcript"] == "hello there. " * 3
        usage = done["response"]["usage"]
        assert usage["output_token_details"] == {"text_tokens": 9, "audio_tokens": 30}  # 0.6 s of 50 Hz codes
        assert usage["output_tokens"] == 39 and usage["input_token_details"]["audio_tokens"] > 0
        assert {"turn_end_to_first_audio_ms", "overhead_ms", "first_audio_ms"} <= set(done["response"]["latency"])
        # the responder heard the user's audio (16 kHz) of about the committed length
        conv, _ = responder.calls[0]
        audio = conv.messages[-1]["content"][0]["audio"]
        committed_ms = stopped["audio_end_ms"] - started["audio_start_ms"]
        assert abs(len(audio) / 16 - committed_ms) < 40
        await c.close()


async def test_barge_in_cancels_and_truncates_at_the_audio_sent(turn):
    # a long answer (20 x 200 ms) produced slower than the client's speech arrives
    responder = FakeResponder(steps=20, delay_s=0.1)
    with LiveServer(make_app(Settings(), responder)) as srv:
        c = await RealtimeClient.connect(srv.url)
        await c.wait_for("session.created")
        await stream_audio(c, turn)
        created = await c.wait_for("response.created")
        await c.wait_for("response.output_audio.delta", count=3)
        await stream_audio(c, turn[: int(1.5 * SR)], realtime=1.0)  # the user talks over the answer
        done = await c.wait_for("response.done")
        assert done["response"]["id"] == created["response"]["id"]
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
        assert done["response"]["latency"]["barge_in_stop_ms"] < 150
        item_id = done["response"]["output"][0]["id"]
        sent_ms = _audio_ms(c.events, created["response"]["id"])
        assert 0 < sent_ms < 20 * 200
        # nothing of the cancelled response arrives after its response.done
        idx = c.events.index(done)
        assert not [e for e in c.events[idx:] if e.get("response_id") == done["response"]["id"]
                    and e["type"].endswith("delta")]
        # the server does not truncate on its own (the spec leaves that to the client): the item holds
        # exactly the audio that was written, with the transcript of those chunks
        await c.send({"type": "conversation.item.retrieve", "item_id": item_id, "event_id": "r1"})
        got = await c.wait_for("conversation.item.retrieved")
        assert not c.of("conversation.item.truncated")
        assert got["item"]["status"] == "incomplete"
        assert len(base64.b64decode(got["item"]["content"][0]["audio"])) // 2 * 1000 // SR == sent_ms
        assert got["item"]["content"][0]["transcript"] == "hello there. " * (sent_ms // 200)
        # beyond the audio: an error, nothing clamped
        await c.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                      "audio_end_ms": sent_ms + 1, "event_id": "t_far"})
        err = await c.wait_for("error")
        assert err["error"]["event_id"] == "t_far" and err["error"]["param"] == "audio_end_ms"
        # the client truncates to what it played: echoed as asked, transcript removed, nothing re-sent
        await c.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                      "audio_end_ms": 42})
        truncated = await c.wait_for("conversation.item.truncated")
        assert truncated["item_id"] == item_id and truncated["audio_end_ms"] == 42
        await c.send({"type": "conversation.item.retrieve", "item_id": item_id})
        got = await c.wait_for("conversation.item.retrieved", count=2)
        assert len(base64.b64decode(got["item"]["content"][0]["audio"])) // 2 == 42 * SR // 1000
        assert got["item"]["content"][0]["transcript"] == ""
        await asyncio.sleep(0.2)
        assert len(c.of("conversation.item.truncated")) == 1
        sdk_validate(c.events)  # every event of the barge-in, error and truncation, with the SDK's types
        await c.close()


async def test_history_feeds_the_next_turn_and_conversation_ops():
    responder = FakeResponder(steps=2)
    with LiveServer(make_app(Settings(), responder)) as srv:
        c = await RealtimeClient.connect(srv.url)
        await c.wait_for("session.created")
        await c.send({"type": "session.update", "session": {
            "type": "realtime", "instructions": "Be brief.", "output_modalities": ["text"],
            "audio": {"input": {"turn_detection": None}}}})
        upd = await c.wait_for("session.updated")
        assert upd["session"]["audio"]["input"]["turn_detection"] is None
        assert upd["session"]["output_modalities"] == ["text"]
        await c.send({"type": "conversation.item.create", "item": {
            "id": "u1", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi!"}]}})
        await c.wait_for("conversation.item.added")
        await c.send({"type": "response.create"})
        d1 = await c.wait_for("response.done")
        assert c.of("response.output_text.delta") and not c.of("response.output_audio.delta")
        assert d1["response"]["output"][0]["content"][0] == {"type": "output_text", "text": "hello there. " * 2}
        await c.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "More?"}]}})
        await c.send({"type": "response.create", "response": {"instructions": "Be verbose.", "temperature": 0.3}})
        await c.wait_for("response.done", count=2)
        conv, opts = responder.calls[1]
        assert [{k: v for k, v in m.items() if k != "item_id"} for m in conv.messages] == [
            {"role": "system", "content": "Be verbose."}, {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "hello there. " * 2}, {"role": "user", "content": "More?"}]
        assert opts.temperature == 0.3 and opts.modalities == ("text",)
        # retrieve, insert after, delete
        await c.send({"type": "conversation.item.retrieve", "item_id": "u1"})
        got = await c.wait_for("conversation.item.retrieved")
        assert got["item"]["content"] == [{"type": "input_text", "text": "Hi!"}]
        await c.send({"type": "conversation.item.create", "previous_item_id": "u1", "item": {
            "id": "sys", "type": "message", "role": "system", "content": [{"type": "input_text", "text": "x"}]}})
        added = await c.wait_for("conversation.item.added", pred=lambda e: e["item"]["id"] == "sys")
        assert added["previous_item_id"] == "u1"
        await c.send({"type": "conversation.item.delete", "item_id": "u1"})
        assert (await c.wait_for("conversation.item.deleted"))["item_id"] == "u1"
        await c.send({"type": "response.create", "response": {"conversation": "none", "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "aside"}]}]}})
        d3 = await c.wait_for("response.done", count=3)
        assert d3["response"]["conversation_id"] is None
        assert responder.calls[2][0].messages[-1] == {"role": "user", "content": "aside",
                                                      "item_id": responder.calls[2][0].items[-1]["id"]}
        assert "u1" not in [m.get("id") for m in responder.calls[2][0].items]
        await c.close()


async def test_client_cancel_truncate_and_function_items(turn):
    responder = FakeResponder(steps=30, delay_s=0.05)
    with LiveServer(make_app(Settings(), responder)) as srv:
        c = await RealtimeClient.connect(srv.url)
        await c.wait_for("session.created")
        await c.send({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}}})
        await c.wait_for("session.updated")
        await c.send({"type": "response.create"})
        await c.wait_for("response.output_audio.delta", count=2)
        await c.send({"type": "response.create", "event_id": "dup"})
        err = await c.wait_for("error")
        assert err["error"]["code"] == "conversation_already_has_active_response" and err["error"]["event_id"] == "dup"
        await c.send({"type": "response.cancel"})
        done = await c.wait_for("response.done")
        assert done["response"]["status_details"]["reason"] == "client_cancelled"
        item_id = done["response"]["output"][0]["id"]
        sent = _audio_ms(c.events)
        await c.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                      "audio_end_ms": 100_000, "event_id": "far"})
        err = await c.wait_for("error", count=2)
        assert err["error"]["event_id"] == "far"  # beyond the audio: refused, never clamped
        await c.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                      "audio_end_ms": sent})
        tr = await c.wait_for("conversation.item.truncated")
        assert tr["audio_end_ms"] == sent  # the item holds exactly what was sent
        await c.send({"type": "conversation.item.create", "item": {
            "type": "function_call", "call_id": "c1", "name": "get_time", "arguments": "{}"}})
        await c.send({"type": "conversation.item.create", "item": {
            "type": "function_call_output", "call_id": "c1", "output": "12:00"}})
        await c.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        await c.wait_for("response.done", count=2)
        msgs = responder.calls[-1][0].messages
        assert "get_time" in msgs[-2]["content"] and "12:00" in msgs[-1]["content"]
        await c.close()


async def test_twenty_concurrent_sessions(turn):
    import asyncio

    responder = FakeResponder(steps=2)
    with LiveServer(make_app(Settings(), responder)) as srv:
        async def one(i):
            c = await RealtimeClient.connect(srv.url)
            await c.wait_for("session.created")
            if i % 2:  # half without VAD: manual commit
                await c.send({"type": "session.update", "session": {"type": "realtime",
                              "audio": {"input": {"turn_detection": None}}}})
                await c.wait_for("session.updated")
                await c.append(pcm16(turn[: SR]))
                await c.send({"type": "input_audio_buffer.commit"})
                await c.send({"type": "response.create"})
            else:
                await stream_audio(c, turn, chunk_ms=100)
            done = await c.wait_for("response.done", timeout=90)
            await c.close()
            return done["response"]["status"], _audio_ms(c.events)

        results = await asyncio.gather(*(one(i) for i in range(20)))
    assert results == [("completed", 400)] * 20


async def test_metrics_show_realtime_figures(turn):
    import httpx

    with LiveServer(make_app(Settings(), FakeResponder(steps=1))) as srv:
        c = await RealtimeClient.connect(srv.url)
        await stream_audio(c, turn)
        await c.wait_for("response.done")
        await c.close()
        async with httpx.AsyncClient() as h:
            text = (await h.get(srv.http + "/metrics")).text
    for name in ("omni_realtime_sessions_active", "omni_realtime_vad_to_first_audio_ms_bucket",
                 "omni_realtime_responses_total", "omni_realtime_client_events_total"):
        assert name in text


def test_events_json_is_compact():
    from omni_agent.realtime.events import InputAudioBufferCleared, dump_event

    assert json.loads(dump_event(InputAudioBufferCleared()))["type"] == "input_audio_buffer.cleared"
    assert np.isfinite(1.0)
