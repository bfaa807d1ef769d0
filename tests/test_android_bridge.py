"""The websocket device bridge: auth, JSON-RPC calls, binary screenshots, timeouts, reconnects, oracles."""

from __future__ import annotations

import json
import time

import pytest
from websockets.sync.client import connect

from tools.android.bridge import BridgeError, DeviceBridge, WsDevice
from tools.android.bridge_protocol import CLOSE_BAD_TOKEN, answer_challenge
from tools.android.device import SecretStore
from tools.android.safety import GuardedDevice
from tools.android.sim import SimulatedDevice
from tools.android.tasks import SECRETS, TASKS, run_oracle

pytestmark = pytest.mark.timeout(120)
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def bridge():
    b = DeviceBridge(TOKEN).start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def sim(bridge):
    s = SimulatedDevice()
    agent = s.join_bridge(bridge.url, TOKEN, name="sim-ws")
    bridge.wait_for_device("sim-ws")
    s.agent = agent
    yield s
    s.stop()


@pytest.fixture
def dev(bridge, sim):
    sim.reset()
    bridge.wait_for_device("sim-ws")
    return WsDevice(bridge, "sim-ws", secrets=SecretStore(dict(SECRETS)))


def test_methods_and_binary_screenshot(bridge, sim, dev):
    assert bridge.call("sim-ws", "state") == {"screen": [720, 1280], "package": "com.android.launcher3"}
    shot = bridge.call("sim-ws", "screenshot")
    assert shot["format"] == "png" and shot["data"].startswith(b"\x89PNG") and shot["size"] == len(shot["data"])
    assert "com.android.settings" in bridge.call("sim-ws", "packages")["packages"]
    bridge.call("sim-ws", "launch", {"package": "com.android.settings"})
    obs = dev.observe()
    wifi = next(e for e in obs.elements if e.text == "Wi-Fi")
    bridge.call("sim-ws", "tap", {"x": wifi.center[0], "y": wifi.center[1]})
    assert sim.state.toggles["wifi"]
    bridge.call("sim-ws", "swipe", {"x1": 360, "y1": 1000, "x2": 360, "y2": 400, "duration_ms": 300})
    assert sim.phone.scroll["settings"] > 0
    bridge.call("sim-ws", "swipe", {"x1": 360, "y1": 400, "x2": 360, "y2": 1000, "duration_ms": 300})
    obs = dev.observe()
    listing = next(e for e in obs.elements if e.scrollable)
    dev.act({"action_type": "scroll", "direction": "down", "index": listing.index})  # inside the list only
    assert sim.phone.scroll["settings"] > 0
    bridge.call("sim-ws", "key", {"code": 3})
    assert sim.phone.package == "com.android.launcher3"


async def test_call_from_another_event_loop(bridge, sim, dev):
    state = await bridge.call_async("sim-ws", "state")
    assert state["screen"] == [720, 1280]


def test_device_errors_come_back_as_errors(bridge, sim, dev):
    with pytest.raises(BridgeError, match="no text field has focus"):
        bridge.call("sim-ws", "input", {"text": "hello"})
    with pytest.raises(BridgeError, match="-32602"):
        bridge.call("sim-ws", "tap", {"x": "left"})
    with pytest.raises(BridgeError, match="not connected"):
        bridge.call("no-such-phone", "state", timeout=0.2)


def test_bad_token_is_refused(bridge):
    with connect(bridge.url) as ws:
        ws.send(answer_challenge(ws.recv(timeout=5), "wrong", "intruder").model_dump_json())
        assert json.loads(ws.recv(timeout=5)) == {"type": "error", "message": "bad token"}
        with pytest.raises(Exception):  # noqa: B017 - the close frame ends the iteration/recv
            ws.recv(timeout=5)
        assert ws.close_code == CLOSE_BAD_TOKEN
    assert "intruder" not in bridge.devices()


def test_call_times_out_when_the_phone_is_silent(bridge):
    with connect(bridge.url) as ws:
        ws.send(answer_challenge(ws.recv(timeout=5), TOKEN, "mute").model_dump_json())
        assert json.loads(ws.recv(timeout=5))["type"] == "welcome"
        t0 = time.perf_counter()
        with pytest.raises(BridgeError, match="timed out"):
            bridge.call("mute", "state", timeout=0.3)
        assert time.perf_counter() - t0 < 2
        request = json.loads(ws.recv(timeout=5))
        assert request["jsonrpc"] == "2.0" and request["method"] == "state" and isinstance(request["id"], int)


def test_request_ids_match_concurrent_calls(bridge, sim, dev):
    import concurrent.futures as cf

    with cf.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(bridge.call, "sim-ws", m) for m in ("state", "screenshot", "packages", "state") * 3]
        results = [f.result() for f in futures]
    assert all("screen" in r for r in results[0::4]) and all("data" in r for r in results[1::4])
    assert all("packages" in r for r in results[2::4])


def test_reconnect_after_drop(bridge, sim, dev):
    before = sim.agent.connections
    bridge.drop("sim-ws")
    # the call waits for the phone to reconnect instead of failing
    assert dev.act({"action_type": "open_app", "app_name": "Clock"}).ok
    assert sim.agent.connections == before + 1
    assert sim.phone.package == "com.google.android.deskclock"


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
def test_oracle_solves_task_through_websocket(sim, dev, task):
    episode = run_oracle(GuardedDevice(dev, confirm=lambda request: True), task)
    assert task.check(sim.state, episode), (task.name, episode)
