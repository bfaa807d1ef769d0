"""GUI mode on the simulated phone, driven through a real adb server: observe -> think -> act."""

from __future__ import annotations

import re
import socket

import pytest

from omni_agent.agent.graph import RunContext, build_graph
from omni_agent.agent.gui import GuiEnv
from omni_agent.agent.models import ModelRequest, ScriptedChatModel, call
from omni_agent.agent.persistence import close_checkpointer, open_checkpointer
from omni_agent.agent.runner import AgentRunner
from tools.android.adb import AdbDevice, kill_server, start_server
from tools.android.sim import SimulatedDevice

LINE = re.compile(r'^\[(\d+)\] (\w+) "(.*)"(?: \((.*)\))?$')


def elements(request: ModelRequest) -> list[tuple[int, str, str, str]]:
    """(index, class, label, flags) parsed back out of the observation text the model sees."""
    out = []
    for line in (request.observation or {}).get("elements", "").splitlines():
        m = LINE.match(line)
        if m:
            out.append((int(m[1]), m[2], m[3], m[4] or ""))
    return out


def find(request: ModelRequest, label: str) -> tuple[int, str] | None:
    return next(((i, flags) for i, _cls, lab, flags in elements(request) if lab.startswith(label)), None)


def wifi_policy(request: ModelRequest):
    """Turn Wi-Fi on: open Settings from home, flip the Wi-Fi switch, report complete."""
    wifi = find(request, "Wi-Fi")
    if wifi is not None:
        if "checked=true" in wifi[1]:
            return call("android_action", action_type="status", goal_status="complete")
        return call("android_action", action_type="click", index=wifi[0])
    settings = find(request, "Settings")
    if settings is not None:
        return call("android_action", action_type="click", index=settings[0])
    return call("android_action", action_type="navigate_home")


def message_policy(request: ModelRequest):
    """Send "on my way" to Bob; the Send tap is risky and waits for confirmation."""
    sent = any(label == "on my way" and cls != "EditText" for _i, cls, label, _f in elements(request))
    if sent:
        return call("android_action", action_type="status", goal_status="complete")
    compose = next(((i, f) for i, cls, _label, f in elements(request) if cls == "EditText"), None)
    if compose is not None:
        typed = any(m.name == "android_action" and "on my way" in m.content for m in request.messages
                    if m.type == "tool")
        if not typed:
            return call("android_action", action_type="input_text", index=compose[0], text="on my way")
        return call("android_action", action_type="click", index=find(request, "Send")[0])
    bob = find(request, "Bob")
    if bob is not None:
        return call("android_action", action_type="click", index=bob[0])
    return call("android_action", action_type="open_app", app_name="Messages")


@pytest.fixture(scope="module")
def adb_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    start_server(port)
    yield port
    kill_server(port)


@pytest.fixture
def phone(adb_port):
    sim = SimulatedDevice().start()
    dev = AdbDevice(sim.serial, port=adb_port)
    yield sim, dev
    dev.close()
    sim.stop()


@pytest.fixture
async def saver(tmp_path):
    s = await open_checkpointer(tmp_path / "gui.sqlite")
    yield s
    await close_checkpointer(s)


async def run_events(agen) -> list[dict]:
    return [e async for e in agen]


async def test_gui_task_solved_by_policy_reading_elements(phone, saver):
    sim, dev = phone
    env = GuiEnv(dev)
    model = ScriptedChatModel([wifi_policy], repeat_last=True)
    runner = AgentRunner(build_graph(model, [env.tool()], saver, gui=env, max_steps=6), max_steps=6)
    events = await run_events(runner.gui_task("gui1", "Turn on Wi-Fi"))
    assert events[-1]["status"] == "complete"
    assert sim.state.toggles["wifi"] is True
    state = await runner.state("gui1")
    actions = [t["action"]["action_type"] for t in state["trajectory"]]
    assert actions == ["click", "click", "status"]
    assert sum(e["type"] == "observation" for e in events) == 3
    assert model.requests[0].images and "Settings" in model.requests[0].observation["elements"]


async def test_gui_max_steps(phone, saver):
    _sim, dev = phone
    env = GuiEnv(dev)
    model = ScriptedChatModel([call("android_action", action_type="wait", seconds=0)], repeat_last=True)
    runner = AgentRunner(build_graph(model, [env.tool()], saver, gui=env, max_steps=3), max_steps=3)
    events = await run_events(runner.gui_task("gui2", "Never finishes"))
    assert events[-1]["status"] == "max_steps" and len(model.requests) == 3


@pytest.mark.parametrize("approved", [True, False])
async def test_gui_risky_action_needs_confirmation(phone, saver, approved):
    sim, dev = phone
    env = GuiEnv(dev)
    model = ScriptedChatModel([message_policy], repeat_last=True)
    runner = AgentRunner(build_graph(model, [env.tool()], saver, gui=env, max_steps=8), max_steps=8)
    events = await run_events(runner.gui_task("gui3", "Tell Bob I'm on my way"))
    conf = [e for e in events if e["type"] == "confirmation"]
    assert len(conf) == 1 and "Send" in conf[0]["reason"] and sim.state.sent("Bob") == []
    if approved:
        events = await run_events(runner.resolve("gui3", True))
        assert events[-1]["status"] == "complete" and sim.state.sent("Bob") == ["on my way"]
    else:
        # denied: the model is told, and here it gives up the task
        model.script, model.repeat_last = [call("android_action", action_type="status", goal_status="infeasible")], False
        model._i = 0
        events = await run_events(runner.resolve("gui3", False))
        assert events[-1]["status"] == "infeasible" and sim.state.sent("Bob") == []
        denied = next(e for e in events if e["type"] == "tool_result")
        assert denied.get("denied") is True


async def test_gui_bad_action_reported(phone, saver):
    _sim, dev = phone
    env = GuiEnv(dev)
    model = ScriptedChatModel([call("android_action", action_type="click", index=99),
                               call("android_action", action_type="status", goal_status="infeasible")])
    runner = AgentRunner(build_graph(model, [env.tool()], saver, gui=env), max_steps=8)
    events = await run_events(runner.gui_task("gui4", "Tap something that is not there"))
    err = next(e for e in events if e["type"] == "tool_result")
    assert err["is_error"] and "does not exist" in err["content"]
    assert events[-1]["status"] == "infeasible"


async def test_gui_with_approve_all(phone, saver):
    sim, dev = phone
    env = GuiEnv(dev)
    model = ScriptedChatModel([message_policy], repeat_last=True)
    runner = AgentRunner(build_graph(model, [env.tool()], saver, gui=env), max_steps=8)
    events = await run_events(runner.gui_task("gui5", "Tell Bob", RunContext(approve_all=True)))
    assert events[-1]["status"] == "complete" and sim.state.sent("Bob") == ["on my way"]


def oracle_policy(task, env: GuiEnv):
    """The task suite's oracle as a chat-model policy: each step reads the env's current screen."""
    steps = iter(task.oracle)

    def policy(request: ModelRequest):
        step = next(steps)
        action = step(env.last) if callable(step) else step
        return call("android_action", **action)

    return policy


def episode_of(state: dict, status: str):
    from tools.android.tasks import Episode

    answers = [t["result"].removeprefix("answered: ") for t in state["trajectory"]
               if t["result"].startswith("answered: ")]
    return Episode(actions=[t["action"] for t in state["trajectory"]], status=status,
                   answer=answers[-1] if answers else None)


async def _solve(task, adb_port, saver, tmp_path):
    from tools.android.device import SecretStore
    from tools.android.tasks import SECRETS
    from tools.android.trajectory import Recorder, load

    sim = SimulatedDevice().start()
    try:
        dev = AdbDevice(sim.serial, port=adb_port, secrets=SecretStore(dict(SECRETS)))
        rec = Recorder(tmp_path / task.name)
        env = GuiEnv(dev, recorder=rec, goal=task.goal)
        model = ScriptedChatModel([oracle_policy(task, env)], repeat_last=True)
        runner = AgentRunner(build_graph(model, [env.tool()], saver, gui=env, max_steps=12), max_steps=12)
        events = await run_events(runner.gui_task(task.name, task.goal, RunContext(approve_all=True)))
        rec.close()
        state = await runner.state(task.name)
        status = events[-1]["status"]
        assert task.check(sim.state, episode_of(state, status)), (task.name, status, state["trajectory"])
        assert len(load(tmp_path / task.name)) == len(state["trajectory"])
    finally:
        sim.stop()


@pytest.mark.parametrize("name", ["wifi_on", "send_hello_alice", "answer_alice_phone", "sign_in"])
async def test_task_suite_through_graph(name, adb_port, saver, tmp_path):
    from tools.android.tasks import get_task

    await _solve(get_task(name), adb_port, saver, tmp_path)


@pytest.mark.slow
async def test_full_task_suite_through_graph(adb_port, saver, tmp_path):
    from tools.android.tasks import TASKS

    for task in TASKS:
        await _solve(task, adb_port, saver, tmp_path)
