"""A response always reaches ``response.done`` exactly once, whatever the timing of cancel, barge-in,
disconnect or failure: 1,000 random interleavings on one session, the watchdog, internal failures."""

import asyncio
import base64
import json
import random

import numpy as np
import pytest

from audio.vad import SileroModelPool
from omni_agent.realtime import response as response_mod
from omni_agent.realtime.session import RealtimeSession
from omni_agent.realtime.testing import FakeResponder, pcm16
from omni_agent.settings import RealtimeSettings


class ListOutbox:
    """Writes at once (``drop`` checked, ``on_sent`` run), like a client that reads everything."""

    def __init__(self):
        self.events = []

    def put(self, data, *, on_sent=None, drop=None):
        if drop is not None and drop():
            return
        if on_sent is not None:
            on_sent()
        self.events.append(json.loads(data))

    def of(self, t):
        return [e for e in self.events if e["type"] == t]


def _ev(t, **kw):
    return json.dumps({"type": t, **kw})


AUDIO = base64.b64encode(pcm16(0.1 * np.sin(np.arange(2400) / 7.0).astype(np.float32))).decode()  # 100 ms


POOL = SileroModelPool()


async def _new_session(responder, outbox=None):
    outbox = outbox or ListOutbox()
    s = RealtimeSession(RealtimeSettings(), responder, outbox, vad_pool=POOL)
    await s.start()
    await s.handle(_ev("session.update", session={"type": "realtime", "audio": {"input": {"turn_detection": None}}}))
    return s, outbox


async def _quiet(s, limit_s=3.0):
    async with asyncio.timeout(limit_s):
        while s.response is not None:  # noqa: ASYNC110 - polling the session under test
            await asyncio.sleep(0.001)


def _check_lifecycle(outbox):
    created = [e["response"]["id"] for e in outbox.of("response.created")]
    done = [e["response"]["id"] for e in outbox.of("response.done")]
    assert sorted(created) == sorted(done), (created, done)
    assert len(set(done)) == len(done)  # exactly once each


async def _normal_turn(s, outbox):
    n = len(outbox.of("response.done"))
    await s.handle(_ev("conversation.item.create", item={"type": "message", "role": "user",
                                                         "content": [{"type": "input_text", "text": "hi"}]}))
    await s.handle(_ev("response.create", response={"output_modalities": ["text"]}))
    await _quiet(s)
    done = outbox.of("response.done")
    assert len(done) == n + 1 and done[-1]["response"]["status"] == "completed", done[-1]


OPS = ["create", "create", "cancel", "cancel", "append", "commit", "clear", "truncate", "yield", "sleep",
       "disconnect"]


async def test_a_thousand_random_interleavings_never_wedge():
    rng = random.Random(1234)
    responder = FakeResponder(steps=2, chunk_s=0.02, delay_s=0.0005)
    s, outbox = await _new_session(responder)
    sessions = 1
    for trial in range(1000):
        for _ in range(rng.randint(2, 7)):
            op = rng.choice(OPS)
            if op == "create":
                await s.handle(_ev("response.create"))
            elif op == "cancel":
                await s.handle(_ev("response.cancel"))
            elif op == "append":
                await s.handle(_ev("input_audio_buffer.append", audio=AUDIO))
            elif op == "commit":
                await s.handle(_ev("input_audio_buffer.commit"))
            elif op == "clear":
                await s.handle(_ev("input_audio_buffer.clear"))
            elif op == "truncate":
                items = [e["item"] for e in outbox.of("response.output_item.added")]
                if items:
                    await s.handle(_ev("conversation.item.truncate", item_id=items[-1]["id"], content_index=0,
                                       audio_end_ms=rng.choice([0, 5, 20])))
            elif op == "yield":
                await asyncio.sleep(0)
            elif op == "sleep":
                await asyncio.sleep(rng.choice([0.0005, 0.002]))
            elif op == "disconnect":
                async with asyncio.timeout(3):
                    await s.close()
                assert s.response is None
                _check_lifecycle(outbox)
                s, outbox = await _new_session(responder)
                sessions += 1
        await _quiet(s)
        _check_lifecycle(outbox)
        assert not [e for e in outbox.of("error") if e["error"]["type"] == "server_error"], trial
        await _normal_turn(s, outbox)  # after every trial the session still answers a normal turn
    await _normal_turn(s, outbox)
    await s.close()
    assert sessions > 10


async def test_create_then_cancel_at_once_finishes_every_time():
    for _ in range(50):
        s, outbox = await _new_session(FakeResponder(steps=3, delay_s=0.001))
        await s.handle(_ev("response.create"))
        await s.handle(_ev("response.cancel", event_id="c"))
        await _quiet(s)
        done = outbox.of("response.done")
        assert len(done) == 1 and done[0]["response"]["status"] == "cancelled"
        assert not outbox.of("error")  # the cancel was answered by the response.done, not an error
        await _normal_turn(s, outbox)
        await s.close()


class StuckResponder:
    """Ignores cancel and does not end until released."""

    released = False

    async def respond(self, conversation, options, cancel):
        yield response_mod.TextDelta("x")
        while not self.released:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                continue  # refuses to stop


async def test_watchdog_finishes_a_responder_that_does_not_stop(monkeypatch, caplog):
    monkeypatch.setattr(response_mod, "CANCEL_GRACE_S", 0.2)
    stuck = StuckResponder()
    s, outbox = await _new_session(stuck)
    await s.handle(_ev("response.create", response={"output_modalities": ["text"]}))
    await asyncio.sleep(0.05)
    await s.handle(_ev("response.cancel"))
    await _quiet(s, limit_s=2)
    done = outbox.of("response.done")
    assert len(done) == 1 and done[0]["response"]["status"] == "cancelled"
    assert "did not stop" in caplog.text
    s.responder = FakeResponder(steps=1)
    await _normal_turn(s, outbox)
    stuck.released = True
    await s.close()


class FailingResponder:
    async def respond(self, conversation, options, cancel):
        yield response_mod.TextDelta("half an answer")
        raise RuntimeError("model exploded")


async def test_a_responder_failure_is_a_failed_response_and_the_session_goes_on():
    s, outbox = await _new_session(FailingResponder())
    await s.handle(_ev("response.create", response={"output_modalities": ["text"]}))
    await _quiet(s)
    done = outbox.of("response.done")[-1]["response"]
    assert done["status"] == "failed" and "model exploded" in done["status_details"]["error"]["message"]
    s.responder = FakeResponder(steps=1)
    await _normal_turn(s, outbox)
    await s.close()


async def test_an_internal_failure_while_finishing_becomes_error_and_failed_done(monkeypatch, caplog):
    s, outbox = await _new_session(FakeResponder(steps=1))

    def broken(self, error):
        raise KeyError("bug")

    monkeypatch.setattr(response_mod.ActiveResponse, "_finish", broken)
    await s.handle(_ev("response.create", response={"output_modalities": ["text"]}))
    await _quiet(s)
    assert outbox.of("error")[-1]["error"]["type"] == "server_error"
    assert outbox.of("response.done")[-1]["response"]["status"] == "failed"
    assert "finishing failed" in caplog.text
    monkeypatch.undo()
    await _normal_turn(s, outbox)
    await s.close()


@pytest.mark.parametrize("when", [0, 1, 3])
async def test_disconnect_at_any_point_ends_the_response(when):
    s, outbox = await _new_session(FakeResponder(steps=5, delay_s=0.002))
    await s.handle(_ev("response.create"))
    for _ in range(when):
        await asyncio.sleep(0.001)
    async with asyncio.timeout(3):
        await s.close()
    assert s.response is None and not s._tasks
