"""Bad events get an ``error`` event (type, code, message, event_id) and the session lives on; auth, Origin, limits."""

import asyncio
import base64
import json

import pytest
from websockets.exceptions import InvalidStatus

from omni_agent.realtime.testing import FakeResponder, LiveServer, RealtimeClient, make_app
from omni_agent.settings import Settings


@pytest.fixture(scope="module")
def server():
    settings = Settings.model_validate({"realtime": {"max_event_bytes": 64 * 1024, "max_buffered_audio_s": 2.0,
                                                    "max_events_per_s": 1000}})
    with LiveServer(make_app(settings, FakeResponder(steps=1))) as srv:
        yield srv


BAD = [
    ("not json", "invalid_json", None),
    (json.dumps([1, 2]), "invalid_json", None),
    (json.dumps({"event_id": "e1"}), "missing_type", "e1"),
    (json.dumps({"type": "nope.nope", "event_id": "e2"}), "unknown_event", "e2"),
    (json.dumps({"type": "input_audio_buffer.append", "audio": "***", "event_id": "e3"}), "invalid_base64", "e3"),
    (json.dumps({"type": "input_audio_buffer.append", "audio": 123, "event_id": "e4"}), "invalid_value", "e4"),
    (json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x00\x01\x02").decode(),
                 "event_id": "e5"}), "invalid_audio_format", "e5"),
    (json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 70_000, "event_id": "e6"}), "event_too_large", "e6"),
    (json.dumps({"type": "session.update", "session": {"temperature": "hot"}, "event_id": "e7"}), "invalid_value", "e7"),
    (json.dumps({"type": "session.update", "session": {"output_modalities": ["video"]}, "event_id": "e8"}),
     "invalid_value", "e8"),
    (json.dumps({"type": "conversation.item.truncate", "item_id": "x", "content_index": 0, "audio_end_ms": -5,
                 "event_id": "e9"}), "invalid_value", "e9"),
    (json.dumps({"type": "conversation.item.retrieve", "item_id": "missing", "event_id": "e10"}), "item_not_found", "e10"),
    (json.dumps({"type": "conversation.item.delete", "item_id": "missing", "event_id": "e11"}), "item_not_found", "e11"),
    ('{"event_id": "deep", "type": "session.update", "session": ' + "[" * 20_000 + "]" * 20_000 + "}",
     "invalid_json", "deep"),
    ('{"event_id": "digits", "type": "response.cancel", "response_id": ' + "9" * 5000 + "}", "invalid_json", "digits"),
    (json.dumps({"type": "input_audio_buffer.commit", "event_id": "e12"}), "input_audio_buffer_commit_empty", "e12"),
    (json.dumps({"type": "response.cancel", "event_id": "e13"}), "response_cancel_not_active", "e13"),
    (json.dumps({"type": "conversation.item.create", "item": {"type": "message"}, "event_id": "e14"}),
     "invalid_value", "e14"),
    (json.dumps({"type": "response.create", "response": {"max_output_tokens": 0}, "event_id": "e15"}),
     "invalid_value", "e15"),
    (b"\xff\xfe binary", "invalid_json", None),
]


@pytest.mark.parametrize(("raw", "code", "event_id"), BAD, ids=[b[1] + str(i) for i, b in enumerate(BAD)])
async def test_bad_event_gets_an_error_and_the_session_lives_on(server, raw, code, event_id):
    c = await RealtimeClient.connect(server.url)
    await c.wait_for("session.created")
    await c.send_raw(raw)
    err = (await c.wait_for("error"))["error"]
    assert err["code"] == code
    assert err["event_id"] == event_id
    assert err["type"] and err["message"]
    # still alive and serving
    await c.send({"type": "session.update", "session": {"instructions": "still here"}})
    upd = await c.wait_for("session.updated")
    assert upd["session"]["instructions"] == "still here"
    await c.close()


async def test_buffered_audio_limit(server):
    c = await RealtimeClient.connect(server.url)
    await c.wait_for("session.created")
    await c.send({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}}})
    await c.wait_for("session.updated")
    second = b"\x00\x00" * 24000
    await c.append(second)
    await c.append(second)
    await c.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(second).decode(), "event_id": "full"})
    err = (await c.wait_for("error"))["error"]
    assert err["code"] == "input_audio_buffer_full" and err["event_id"] == "full"
    await c.send({"type": "input_audio_buffer.clear"})
    await c.wait_for("input_audio_buffer.cleared")
    await c.append(second)  # room again after clearing
    await c.send({"type": "input_audio_buffer.commit"})
    await c.wait_for("input_audio_buffer.committed")
    await c.close()


async def test_rate_limit():
    settings = Settings.model_validate({"realtime": {"max_events_per_s": 5}})
    with LiveServer(make_app(settings, FakeResponder(steps=1))) as srv:
        c = await RealtimeClient.connect(srv.url)
        await c.wait_for("session.created")
        for i in range(20):
            await c.send({"type": "input_audio_buffer.clear", "event_id": f"c{i}"})
        err = (await c.wait_for("error"))["error"]
        assert err["code"] == "rate_limit_exceeded" and err["event_id"].startswith("c")
        await asyncio.sleep(1.1)  # the bucket refills
        await c.send({"type": "input_audio_buffer.clear", "event_id": "later"})
        await c.wait_for("input_audio_buffer.cleared", count=6)
        await c.close()


async def test_api_key_auth():
    settings = Settings.model_validate({"server": {"api_key": "sk-test"}})
    with LiveServer(make_app(settings, FakeResponder(steps=1))) as srv:
        with pytest.raises(InvalidStatus) as e:
            await RealtimeClient.connect(srv.url)
        assert e.value.response.status_code in (401, 403)
        with pytest.raises(InvalidStatus):
            await RealtimeClient.connect(srv.url, additional_headers={"Authorization": "Bearer wrong"})
        with pytest.raises(InvalidStatus):
            await RealtimeClient.connect(srv.url, subprotocols=["realtime", "openai-insecure-api-key.wrong"])
        c = await RealtimeClient.connect(srv.url, additional_headers={"Authorization": "Bearer sk-test"})
        await c.wait_for("session.created")
        await c.close()
        # the browser form: key in a subprotocol; the server answers with "realtime"
        c = await RealtimeClient.connect(srv.url, subprotocols=["realtime", "openai-insecure-api-key.sk-test"])
        assert c.ws.subprotocol == "realtime"
        await c.wait_for("session.created")
        await c.close()


async def test_origin_allow_list():
    settings = Settings.model_validate({"server": {"allowed_origins": ["https://good.example"]}})
    with LiveServer(make_app(settings, FakeResponder(steps=1))) as srv:
        with pytest.raises(InvalidStatus) as e:
            await RealtimeClient.connect(srv.url, origin="https://evil.example")
        assert e.value.response.status_code == 403
        c = await RealtimeClient.connect(srv.url, origin="https://good.example")
        await c.wait_for("session.created")
        await c.close()
        c = await RealtimeClient.connect(srv.url)  # non-browser clients send no Origin
        await c.wait_for("session.created")
        await c.close()


async def test_origin_is_closed_by_default():
    with LiveServer(make_app(Settings(), FakeResponder(steps=1))) as srv:
        with pytest.raises(InvalidStatus) as e:
            await RealtimeClient.connect(srv.url, origin="https://any-page.example")
        assert e.value.response.status_code == 403
        c = await RealtimeClient.connect(srv.url, origin=f"http://127.0.0.1:{srv.port}")  # our own page
        await c.wait_for("session.created")
        await c.close()
    opened = Settings.model_validate({"server": {"allowed_origins": ["*"]}})
    with LiveServer(make_app(opened, FakeResponder(steps=1))) as srv:
        c = await RealtimeClient.connect(srv.url, origin="https://any-page.example")
        await c.wait_for("session.created")
        await c.close()


async def test_slow_client_is_closed_not_buffered():
    """A client that stops reading: the server's queue stays bounded and the session is closed."""
    from websockets.asyncio.client import connect

    settings = Settings.model_validate({"realtime": {"max_outbound_bytes": 65536}})
    # 2 s chunks of audio, 200 of them: far more than the socket buffers hold
    with LiveServer(make_app(settings, FakeResponder(steps=200, chunk_s=2.0, delay_s=0.0))) as srv:
        ws = await connect(srv.url, max_queue=1, max_size=None)
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime",
                                  "audio": {"input": {"turn_detection": None}}}}))
        await ws.send(json.dumps({"type": "response.create"}))
        await asyncio.sleep(3.0)  # not reading
        closed = None
        try:
            async with asyncio.timeout(20):
                async for _ in ws:
                    pass
        except Exception as e:  # noqa: BLE001 - any close is fine, we check the code below
            closed = e
        assert ws.close_code == 1008 or closed is not None
        assert "too slow" in (ws.close_reason or "")
