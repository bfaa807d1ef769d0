"""Safety (approval, allow-list, secrets) and trajectory recording/replay, over the websocket backend."""

from __future__ import annotations

import json

import pytest

from tools.android.bridge import DeviceBridge, WsDevice
from tools.android.device import SecretStore
from tools.android.safety import GuardedDevice, SafetyPolicy
from tools.android.sim import SimulatedDevice
from tools.android.tasks import SECRETS, find, get_task, run_oracle
from tools.android.trajectory import Recorder, load, replay

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def rig():
    bridge = DeviceBridge("t").start()
    sim = SimulatedDevice()
    sim.join_bridge(bridge.url, "t", name="p")
    bridge.wait_for_device("p")
    yield sim, bridge
    sim.stop()
    bridge.stop()


@pytest.fixture
def sim(rig):
    rig[0].reset()
    return rig[0]


@pytest.fixture
def dev(rig, sim):
    return WsDevice(rig[1], "p", secrets=SecretStore(dict(SECRETS)))


def _open_alice_with_draft(guarded: GuardedDevice) -> None:
    guarded.act({"action_type": "open_app", "app_name": "Messages"})
    guarded.act({"action_type": "click", "index": find(guarded.observe(), "Alice").index})
    obs = guarded.observe()
    guarded.act({"action_type": "input_text", "index": find(obs, "compose_message_text").index, "text": "hello"})


def test_send_is_blocked_until_approved(sim, dev):
    answers = iter([False, True])
    guarded = GuardedDevice(dev, confirm=lambda request: next(answers))
    _open_alice_with_draft(guarded)
    assert guarded.requests == []  # typing is not sensitive
    send = {"action_type": "click", "index": find(guarded.observe(), "Send").index}
    refused = guarded.act(send)
    assert refused.blocked and not refused.ok and "send action not approved" in refused.message
    assert sim.state.sent("Alice") == []
    assert guarded.requests[0].category == "send" and "Send" in guarded.requests[0].description
    approved = guarded.act(send)
    assert approved.ok and sim.state.sent("Alice") == ["hello"]


def test_send_by_coordinates_is_flagged_too(sim, dev):
    guarded = GuardedDevice(dev)  # default: deny everything sensitive
    _open_alice_with_draft(guarded)
    x, y = find(guarded.observe(), "Send").center
    assert guarded.act({"action_type": "click", "x": x, "y": y}).blocked
    enter = guarded.act({"action_type": "keyboard_enter"})  # chat apps send on ENTER
    assert enter.blocked and "keyboard_enter next to 'Send'" in enter.message
    assert sim.state.sent("Alice") == []


@pytest.mark.parametrize("name,category", [("delete_carol_thread", "delete"), ("sign_in", "login"),
                                           ("delete_alarm_0815", "delete")])
def test_oracles_of_sensitive_tasks_stop_without_approval(sim, dev, name, category):
    task = get_task(name)
    guarded = GuardedDevice(dev)
    episode = run_oracle(guarded, task)
    assert episode.blocked == 1 and not task.check(sim.state, episode)
    assert guarded.requests[-1].category == category


def test_allow_list(sim, dev):
    guarded = GuardedDevice(dev, SafetyPolicy(allowed_packages={"com.android.settings"}))
    assert guarded.act({"action_type": "open_app", "app_name": "Settings"}).ok
    blocked = guarded.act({"action_type": "open_app", "app_name": "Messages"})
    assert blocked.blocked and "not on the allow-list" in blocked.message
    assert sim.phone.package == "com.android.settings"


def test_secret_typed_by_reference_never_recorded(sim, dev, tmp_path):
    task = get_task("sign_in")
    guarded = GuardedDevice(dev, confirm=lambda request: True)
    with Recorder(tmp_path / "run", secrets=SECRETS.values(), marks=True) as rec:
        episode = run_oracle(guarded, task, recorder=rec)
    assert task.check(sim.state, episode)
    secret = SECRETS["account_password"]
    text = (tmp_path / "run" / "steps.jsonl").read_text()
    assert secret not in text and '{"secret": "account_password"}' in text
    for step in load(tmp_path / "run"):
        assert secret not in json.dumps(step)
    dump = dev.ui_dump()
    assert secret not in dump  # the screen shows bullets for the password field


def test_record_and_replay(sim, dev, tmp_path):
    task = get_task("alarm_0730")
    with Recorder(tmp_path / "rec") as rec:
        episode = run_oracle(dev, task, recorder=rec)
    assert task.check(sim.state, episode)
    steps = load(tmp_path / "rec")
    assert len(steps) == len(task.oracle) and steps[0]["action"] == {"action_type": "open_app", "app_name": "Clock"}
    assert (tmp_path / "rec" / steps[-1]["screenshot"]).read_bytes().startswith(b"\x89PNG")
    sim.reset()
    results = replay(tmp_path / "rec", dev)
    assert results[-1].done and task.check(sim.state, episode)


def test_agent_tool_wraps_the_guarded_phone(sim, dev):
    from tools.android.tool import AndroidTool

    tool = AndroidTool(GuardedDevice(dev), image_size=(360, 640))
    assert "click" in json.dumps(tool.parameters)
    _, first = tool.observe()
    assert first.image.size == (360, 640) and '"Settings"' in first.text
    out = tool('{"action_type": "open_app", "app_name": "Messages"}')
    assert out.result.ok and '"Start chat"' in out.text
    bad = tool({"action_type": "click", "index": 99})
    assert bad.error and "element index 99 does not exist" in bad.text
    assert "unknown action 'fly'" in tool("fly(x=1)").text
    # pixel coordinates of the 360x640 screenshot are scaled to the 720x1280 device
    tool({"action_type": "click", "x": 180, "y": 100})
    assert sim.phone.events[-1] == "tap 360 200"
    assert tool({"action_type": "status", "goal_status": "complete"}).done
