"""Durable realtime sessions: missed events replayed after a reconnect and after kill -9 + restart,
the conversation restored, the turn in flight marked incomplete (not lost); sessions keyed by principal."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

from omni_agent.realtime.journal import Journal
from omni_agent.realtime.session import RealtimeSession
from omni_agent.realtime.testing import FakeResponder, LiveServer, RealtimeClient, make_app
from omni_agent.settings import RealtimeSettings, Settings

SERVER = """
import sys, uvicorn
from omni_agent.realtime.testing import FakeResponder, make_app
from omni_agent.settings import RealtimeSettings, Settings
settings = Settings.model_validate({"realtime": {"journal_db": sys.argv[1]}})
app = make_app(settings, FakeResponder(steps=400, chunk_s=0.05, delay_s=0.02))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", ws_ping_interval=None)
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(db, port):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(db), str(port)], env=env)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def _user_item(text):
    return {"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                         "content": [{"type": "input_text", "text": text}]}}


TEXT_ONLY = {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"],
                                                   "audio": {"input": {"turn_detection": None}}}}


async def _turn_in_flight(url, text, deltas):
    """A client that asked a question and has seen ``deltas`` text deltas of the answer."""
    c = await RealtimeClient.connect(url)
    await c.wait_for("session.created")
    await c.send(TEXT_ONLY)
    await c.send(_user_item(text))
    await c.send({"type": "response.create"})
    await c.wait_for("response.output_text.delta", count=deltas)
    return c


async def test_reconnect_replays_what_was_missed(tmp_path):
    settings = Settings.model_validate({"realtime": {"journal_db": str(tmp_path / "j.sqlite")}})
    with LiveServer(make_app(settings, FakeResponder(steps=30, delay_s=0.01))) as srv:
        url = srv.url + "?session_id=talk1"
        c = await _turn_in_flight(url, "hello", 3)
        seen = c.of("response.output_text.delta")[0]["event_id"]  # pretend the client missed what came after
        await c.close()  # the client drops mid-response; the server finishes and journals it
        await asyncio.sleep(0.3)
        c2 = await RealtimeClient.connect(url + f"&last_event_id={seen}")
        done = await c2.wait_for("response.done")
        got = [e["type"] for e in c2.events]
        assert got[0] == "session.created"
        assert "response.output_text.delta" in got and done["response"]["status"] == "cancelled"
        ids = [e["event_id"] for e in c2.events[1:]]
        assert len(ids) == len(set(ids)) and seen not in ids
        # the conversation is the same session's
        user = next(e for e in c.events if e["type"] == "conversation.item.added")["item"]["id"]
        await c2.send({"type": "conversation.item.retrieve", "item_id": user})
        assert (await c2.wait_for("conversation.item.retrieved"))["item"]["content"][0]["text"] == "hello"
        # an unknown last_event_id is a clear error, the session goes on
        c3 = await RealtimeClient.connect(url + "&last_event_id=event_nope")
        err = await c3.wait_for("error")
        assert err["error"]["code"] == "replay_unavailable"
        await c2.close()
        await c3.close()


async def test_kill_9_and_restart_replays_and_marks_the_turn_incomplete(tmp_path):
    db, port = tmp_path / "journal.sqlite", _free_port()
    url = f"ws://127.0.0.1:{port}/v1/realtime?session_id=call7"
    proc = _start(db, port)
    try:
        c = await _turn_in_flight(url, "what is the weather?", 5)
        user = c.of("conversation.item.added")[0]["item"]["id"]
        answer = c.of("response.output_item.added")[0]["item"]["id"]
        seen = c.events[4]["event_id"]  # the client missed everything after its fifth event
        await asyncio.sleep(0.1)  # let the journal's writer commit (every 5 ms)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        await c.close()
        proc = _start(db, port)
        c2 = await RealtimeClient.connect(url + f"&last_event_id={seen}")
        done = await c2.wait_for("response.done", timeout=10)
        assert done["response"]["status"] == "incomplete"
        assert done["response"]["status_details"]["error"]["code"] == "server_restarted"
        replayed = [e for e in c2.events if e["type"] == "response.output_text.delta"]
        assert len(replayed) >= 3  # the deltas the client had not seen before the crash
        await c2.send({"type": "conversation.item.retrieve", "item_id": user})
        got = await c2.wait_for("conversation.item.retrieved")
        assert got["item"]["content"][0]["text"] == "what is the weather?"
        await c2.send({"type": "conversation.item.retrieve", "item_id": answer})
        got = await c2.wait_for("conversation.item.retrieved", count=2)
        assert got["item"]["status"] == "incomplete" and got["item"]["content"][0]["text"].startswith("hello")
        # and the session answers a new turn after the restart
        await c2.send(TEXT_ONLY)
        await c2.send(_user_item("again"))
        await c2.send({"type": "response.create", "response": {"max_output_tokens": 16}})
        await c2.send({"type": "response.cancel"})
        assert (await c2.wait_for("response.done", count=2, timeout=10))["response"]["status"] == "cancelled"
        await c2.close()
    finally:
        proc.kill()
        proc.wait(10)


class Outbox:
    def __init__(self):
        self.events = []

    def put(self, data, *, on_sent=None, drop=None):
        self.events.append(json.loads(data))


async def test_a_session_id_alone_never_reaches_another_principals_session(tmp_path):
    journal = Journal(tmp_path / "j.sqlite")

    async def open_as(principal):
        out = Outbox()
        s = RealtimeSession(RealtimeSettings(), FakeResponder(steps=1), out, session_id="shared-name",
                            journal=journal, principal=principal)
        await s.start()
        return s, out

    a, _ = await open_as("k-alice")
    await a.handle(json.dumps(_user_item("my secret")))
    await a.close()
    journal.flush()
    b, out_b = await open_as("k-mallory")
    assert b.conversation.items == [] and b.session_id != a.session_id  # same id, other principal: nothing
    await b.close()
    a2, _ = await open_as("k-alice")
    assert [i.content[0]["text"] for i in a2.conversation.items] == ["my secret"]
    assert a2.session_id == a.session_id  # the agent's checkpoint thread is the principal's too
    await a2.close()
    journal.close()


async def test_websocket_principals_are_the_http_keys():
    """The websocket takes the HTTP routes' keys (``server.api_key`` and ``api_keys``): no key, a wrong key
    or an unknown one is refused; each configured key connects as its own principal."""
    import websockets

    settings = Settings()
    settings.server.api_keys = {"alice": "sk-alice-123456", "bob": "sk-bob-1234567"}
    with LiveServer(make_app(settings, FakeResponder())) as srv:
        for headers in ({}, {"Authorization": "Bearer sk-nobody-12345"}):
            try:
                ws = await websockets.connect(srv.url, additional_headers=headers)
            except websockets.InvalidStatus as e:
                assert e.response.status_code == 401
            else:
                await ws.close()
                raise AssertionError(f"connected without a valid key: {headers}")
        for key in ("sk-alice-123456", "sk-bob-1234567"):
            c = await RealtimeClient.connect(srv.url, additional_headers={"Authorization": f"Bearer {key}"})
            await c.wait_for("session.created")
            await c.close()
        # the browser form: the key as a subprotocol
        ws = await websockets.connect(srv.url, subprotocols=["realtime", "openai-insecure-api-key.sk-bob-1234567"])
        assert ws.subprotocol == "realtime"
        await ws.close()
