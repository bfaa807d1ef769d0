"""The ADB backend against the simulator through a real ``adb`` server (its own port, killed afterwards)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from omni_agent.cli import main
from tools.android.adb import AdbDevice, escape_input_text
from tools.android.device import SecretStore
from tools.android.observation import ObservationError
from tools.android.safety import GuardedDevice
from tools.android.sim import SimulatedDevice
from tools.android.tasks import SECRETS, TASKS, find, run_oracle
from tools.android.testing import adb_server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def adb_port():
    with adb_server() as port:
        yield port


@pytest.fixture(scope="module")
def sim():
    with SimulatedDevice() as s:
        yield s


@pytest.fixture
def dev(sim, adb_port):
    sim.reset()
    return AdbDevice(sim.serial, port=adb_port, secrets=SecretStore(dict(SECRETS)))


def adb(port: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["adb", "-P", str(port), *args], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)


def test_real_adb_client_sees_and_drives_the_simulator(sim, dev, adb_port):
    listed = adb(adb_port, "devices").stdout
    assert f"{sim.serial}\tdevice" in listed
    out = adb(adb_port, "-s", sim.serial, "shell", "wm", "size")
    assert out.returncode == 0 and out.stdout.strip() == "Physical size: 720x1280"
    assert adb(adb_port, "-s", sim.serial, "shell", "false").returncode == 1  # shell v2 carries exit codes
    adb(adb_port, "-s", sim.serial, "shell", "input", "keyevent", "3")
    png = subprocess.run(["adb", "-P", str(adb_port), "-s", sim.serial, "exec-out", "screencap", "-p"],
                         capture_output=True, timeout=30).stdout
    assert png.startswith(b"\x89PNG")
    assert dev.screen_size() == (720, 1280)


def test_every_action_through_adb(sim, dev):
    phone = sim.phone
    assert dev.act({"action_type": "open_app", "app_name": "Settings"}).ok
    assert phone.package == "com.android.settings"
    obs = dev.observe()
    dev.act({"action_type": "click", "index": find(obs, "Wi-Fi").index})
    assert sim.state.toggles["wifi"]
    x, y = find(obs, "Bluetooth").center
    dev.act({"action_type": "click", "x": x, "y": y})
    assert not sim.state.toggles["bluetooth"]
    dev.act({"action_type": "scroll", "direction": "down"})  # content moves up: later rows appear
    assert phone.scroll["settings"] > 0 and "Dark theme" in [e.text for e in dev.observe().elements]
    dev.act({"action_type": "swipe", "direction": "down"})  # the finger moves down: back to the top
    assert phone.scroll["settings"] == 0
    dev.act({"action_type": "navigate_back"})
    assert phone.package == "com.android.launcher3"

    dev.act({"action_type": "open_app", "app_name": "com.google.android.deskclock"})
    obs = dev.observe()
    dev.act({"action_type": "long_press", "index": find(obs, "08:15").index})
    assert phone.dialog is not None and phone.events[-1].endswith(" 1000")  # swipe on one point, 1000 ms
    dev.act({"action_type": "navigate_back"})
    assert phone.dialog is None
    obs = dev.observe()
    dev.act({"action_type": "click", "index": find(obs, "Add alarm").index})
    obs = dev.observe()
    dev.act({"action_type": "input_text", "index": find(obs, "hour", editable=True).index, "text": "7"})
    dev.act({"action_type": "keyboard_enter"})
    assert phone.focus == "minute"
    dev.act({"action_type": "input_text", "text": "3"})
    dev.observe()
    dev.act({"action_type": "input_text", "text": "45", "clear_text": True})  # DEL presses remove the "3"
    assert phone.fields == {"hour": "7", "minute": "45"}
    dev.act({"action_type": "navigate_home"})
    assert phone.package == "com.android.launcher3"

    dev.act({"action_type": "open_app", "app_name": "Messages"})
    obs = dev.observe()
    dev.act({"action_type": "click", "index": find(obs, "Alice").index})
    obs = dev.observe()
    dev.act({"action_type": "double_tap", "index": find(obs, "Are we still on for lunch?").index})
    assert sim.state.conversations["Alice"][0].liked
    assert dev.act({"action_type": "wait", "seconds": 0.01}).ok
    assert dev.act({"action_type": "answer", "text": "42"}).answer == "42"
    done = dev.act({"action_type": "status", "goal_status": "complete"})
    assert done.done and done.goal_status == "complete"


@pytest.mark.parametrize("text", [
    "it's a \"test\" & more; $HOME `x` | (y) * 100% done",  # ASCII through `input text` with escaping
    "你好，世界 👋 café",  # Unicode through the IME broadcast
    "mixed ascii then ünïcödé",
])
def test_text_input_ascii_and_unicode(sim, dev, text):
    dev.act({"action_type": "open_app", "app_name": "Messages"})
    obs = dev.observe()
    dev.act({"action_type": "click", "index": find(obs, "Bob").index})
    obs = dev.observe()
    dev.act({"action_type": "input_text", "index": find(obs, "compose_message_text").index, "text": text})
    assert sim.phone.fields["compose"] == text
    sent_by_ime = any(e.startswith("text") for e in sim.phone.events)
    assert sent_by_ime


def test_escape_input_text():
    assert escape_input_text("a b'c") == "'a%sb'\"'\"'c'"
    with pytest.raises(ValueError, match="ASCII-only"):
        escape_input_text("é")


def test_ui_dump_is_retried_when_not_idle(sim, dev):
    sim.shell.dump_failures = 2
    assert dev.observe().elements
    sim.shell.dump_failures = 100
    with pytest.raises(ObservationError, match="could not get idle state"):
        dev.ui_dump()
    sim.shell.dump_failures = 0


def test_unknown_app_and_bad_index_errors(dev):
    from tools.android.actions import ActionError

    with pytest.raises(ActionError, match=r"unknown app 'Fooify' \(known: .*Settings"):
        dev.act({"action_type": "open_app", "app_name": "Fooify"})
    dev.observe()
    with pytest.raises(ActionError, match="element index 99 does not exist"):
        dev.act({"action_type": "click", "index": 99})


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
def test_oracle_solves_task_through_adb(sim, dev, task):
    episode = run_oracle(GuardedDevice(dev, confirm=lambda request: True), task)
    assert task.check(sim.state, episode), (task.name, episode)


def test_cli_devices_and_do(sim, adb_port, capsys):
    sim.reset()
    assert main(["android", "--adb-port", str(adb_port), "devices"]) == 0
    assert sim.serial in capsys.readouterr().out
    action = json.dumps({"action_type": "open_app", "app_name": "Clock"})
    assert main(["android", "--adb-port", str(adb_port), "do", action, "--device", sim.serial, "--observe"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out.splitlines()[0])["ok"] and '"08:15"' in out
    assert main(["android", "--adb-port", str(adb_port), "do", '{"action_type": "fly"}', "-s", sim.serial]) == 1
    assert "unknown action type 'fly'" in capsys.readouterr().err


def test_cli_do_refuses_a_send_without_yes(sim, dev, adb_port, capsys):
    dev.act({"action_type": "open_app", "app_name": "Messages"})
    dev.act({"action_type": "click", "index": find(dev.observe(), "Alice").index})
    dev.act({"action_type": "input_text", "index": find(dev.observe(), "compose_message_text").index, "text": "yo"})
    x, y = find(dev.observe(), "Send").center
    send = json.dumps({"action_type": "click", "x": x, "y": y})
    base = ["android", "--adb-port", str(adb_port), "do", send, "--device", sim.serial]
    assert main(base) == 1
    assert "refused without --yes" in capsys.readouterr().err and sim.state.sent("Alice") == []
    assert main([*base, "--yes"]) == 0
    assert sim.state.sent("Alice") == ["yo"]


def test_cli_sim_serves_adb(adb_port):
    proc = subprocess.Popen([sys.executable, "-m", "omni_agent", "android", "sim", "--exit-after", "20"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        serial = line.split()[-1]
        assert line.startswith("simulator serial: 127.0.0.1:")
        assert "connected" in adb(adb_port, "connect", serial).stdout
        assert adb(adb_port, "-s", serial, "shell", "wm", "size").stdout.strip() == "Physical size: 720x1280"
        adb(adb_port, "disconnect", serial)
    finally:
        proc.terminate()
        proc.wait(10)


def test_adbutils_high_level_api_and_file_sync(sim, dev, adb_port, tmp_path):
    import adbutils

    d = adbutils.AdbClient(host="127.0.0.1", port=adb_port).device(sim.serial)
    assert tuple(d.window_size()) == (720, 1280)
    assert d.shell2("false").returncode == 1
    d.app_start("com.android.settings")
    assert sim.phone.package == "com.android.settings"
    d.keyevent(3)
    assert d.dump_hierarchy().startswith("<?xml")  # uiautomator dump + a sync: RECV of the file
    assert d.screenshot().size == (720, 1280)
    d.sync.push(b"hello", "/sdcard/note.txt")
    assert d.sync.read_bytes("/sdcard/note.txt") == b"hello"
    out = adb(adb_port, "-s", sim.serial, "pull", "/sdcard/note.txt", str(tmp_path / "note.txt"))
    assert out.returncode == 0 and (tmp_path / "note.txt").read_bytes() == b"hello"
    assert adb(adb_port, "-s", sim.serial, "pull", "/sdcard/missing", str(tmp_path / "m")).returncode != 0
