"""Fault suite, issue 21 item 8: the Android device bridge against replays, junk frames and guessing.

A simulated phone stays connected through every attack and keeps answering calls; nothing it is
asked reaches the attacker.
"""

from __future__ import annotations

import json
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from omni_agent.throttle import FailureThrottle
from tools.android.bridge import FAILED_HELLO_DELAY_S, DeviceBridge
from tools.android.bridge_protocol import (
    CLOSE_BAD_HELLO,
    CLOSE_BAD_TOKEN,
    CLOSE_THROTTLED,
    Hello,
    answer_challenge,
)
from tools.android.sim import SimulatedDevice

pytestmark = pytest.mark.timeout(120)
TOKEN = "bridge-secret"


@pytest.fixture
def rig():
    bridge = DeviceBridge(TOKEN).start()
    sim = SimulatedDevice()
    sim.join_bridge(bridge.url, TOKEN, name="phone")
    bridge.wait_for_device("phone")
    yield bridge, sim
    sim.stop()
    bridge.stop()


def _closed_with(ws) -> int | None:
    try:
        while True:
            ws.recv(timeout=5)
    except ConnectionClosed:
        pass
    return ws.close_code


def test_replayed_hello_is_refused_and_the_phone_keeps_its_calls(rig):
    bridge, sim = rig
    with connect(bridge.url) as ws:  # a hello captured on one connection ...
        captured = answer_challenge(ws.recv(timeout=5), TOKEN, "phone").model_dump_json()
    assert '"token"' not in captured.replace('"token":null', "")  # the token itself never crossed the wire
    with connect(bridge.url) as ws:  # ... replayed on another
        ws.recv(timeout=5)  # this connection's challenge, ignored by the replayer
        ws.send(captured)
        err = json.loads(ws.recv(timeout=5))
        assert err["type"] == "error" and "challenge" in err["message"]
        assert _closed_with(ws) == CLOSE_BAD_TOKEN
    assert bridge.devices() == ["phone"]
    assert bridge.call("phone", "state")["screen"] == [720, 1280]  # the real phone still answers


def test_protocol_one_hello_with_the_token_in_clear_is_refused(rig):
    bridge, _ = rig
    with connect(bridge.url) as ws:
        ws.recv(timeout=5)
        ws.send(Hello(device_id="phone", token=TOKEN).model_dump_json())
        assert "protocol 1" in json.loads(ws.recv(timeout=5))["message"]
        assert _closed_with(ws) == CLOSE_BAD_HELLO
    assert bridge.devices() == ["phone"]


@pytest.mark.parametrize("frames", [
    [b"\x00\x01"],  # the 2-byte binary frame (it used to drop the phone with 1011)
    [b""], [b"\x00\x00\x00\x63png"], ["not json"], ['{"jsonrpc": "2.0"}'], ["[" * 10_000],
    ['{"jsonrpc": "2.0", "id": 99999, "result": {"binary": true}}', b"\x00\x01\x86\x9fpng"],  # nobody asked
], ids=["short-binary", "empty-binary", "binary-unknown-id", "not-json", "no-id", "deep-json", "unasked-payload"])
def test_malformed_frames_get_an_error_not_a_drop(frames):
    bridge = DeviceBridge(TOKEN).start()
    try:
        with connect(bridge.url) as ws:  # a phone-side agent under our control
            ws.send(answer_challenge(ws.recv(timeout=5), TOKEN, "raw").model_dump_json())
            assert json.loads(ws.recv(timeout=5))["type"] == "welcome"
            for frame in frames:
                ws.send(frame)
            reply = json.loads(ws.recv(timeout=5))
            assert reply["type"] == "error" and reply["message"]
            assert bridge.devices() == ["raw"]  # still connected
            ws.send('{"jsonrpc": "2.0", "id": 1, "result": {}}')  # and still read: a late answer is ignored
            assert bridge.devices() == ["raw"]
    finally:
        bridge.stop()


def test_wrong_tokens_are_slowed_then_throttled():
    bridge = DeviceBridge(TOKEN)
    bridge.throttle = FailureThrottle(free=3, window_s=60)
    bridge.start()
    try:
        t0 = time.perf_counter()
        for i in range(3):
            with connect(bridge.url) as ws:
                ws.send(answer_challenge(ws.recv(timeout=5), f"guess-{i}", "phone").model_dump_json())
                assert json.loads(ws.recv(timeout=5))["message"] == "bad token"
                assert _closed_with(ws) == CLOSE_BAD_TOKEN
        assert time.perf_counter() - t0 >= 3 * FAILED_HELLO_DELAY_S  # each wrong answer cost the guesser time
        with connect(bridge.url) as ws:  # past the free failures: refused before any challenge
            assert "too many failed hellos" in json.loads(ws.recv(timeout=5))["message"]
            assert _closed_with(ws) == CLOSE_THROTTLED
    finally:
        bridge.stop()
