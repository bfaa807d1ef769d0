"""The task suite: goals for the simulated phone, success checks on its state, scripted oracles.

An oracle is a list of steps; a step is an action (dict) or a function of the current observation
that returns one (to find an element by its label, as a model would). Oracles only use the public
action API, so running one through a backend proves that backend can solve the task.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tools.android.observation import Observation, UIElement
from tools.android.sim.state import PhoneState

Step = dict | Callable[[Observation], dict]
SECRETS = {"account_password": "hunter2-Secret!"}  # the sign-in task types this by reference only


@dataclass
class Episode:
    """What the agent (or oracle) did and said."""

    actions: list[dict] = field(default_factory=list)
    answer: str | None = None
    status: str | None = None
    step_ms: list[float] = field(default_factory=list)
    blocked: int = 0


@dataclass(frozen=True)
class Task:
    name: str
    goal: str
    check: Callable[[PhoneState, Episode], bool]
    oracle: tuple[Step, ...]
    sensitive: bool = False
    """The oracle needs approval for a send/delete/login step."""


class OracleError(RuntimeError):
    """An oracle step could not find what it looks for on screen."""


def find(obs: Observation, label: str, *, editable: bool | None = None) -> UIElement:
    """The element whose text or description is ``label`` (else starts with it)."""
    pool = [e for e in obs.elements if editable is None or e.editable == editable]
    for test in (lambda e: label in (e.text, e.content_desc), lambda e: e.text.startswith(label),
                 lambda e: e.resource_id.endswith("/" + label)):
        hit = next((e for e in pool if test(e)), None)
        if hit is not None:
            return hit
    raise OracleError(f"no element {label!r} on screen: {[e.label for e in obs.elements]}")


def tap(label: str) -> Step:
    return lambda obs: {"action_type": "click", "index": find(obs, label).index}


def tap_xy(label: str) -> Step:
    """Click by coordinates (exercises the pixel path rather than the index path)."""
    def step(obs: Observation) -> dict:
        x, y = find(obs, label).center
        return {"action_type": "click", "x": x, "y": y}
    return step


def type_into(field_id: str, text: Any) -> Step:
    return lambda obs: {"action_type": "input_text", "index": find(obs, field_id, editable=True).index, "text": text}


def press(action_type: str, label: str) -> Step:
    return lambda obs: {"action_type": action_type, "index": find(obs, label).index}


def op(action_type: str, **kw: Any) -> dict:
    return {"action_type": action_type, **kw}


DONE = op("status", goal_status="complete")


def _alarm(st: PhoneState, h: int, m: int) -> bool:
    return any(a.hour == h and a.minute == m and a.enabled for a in st.alarms)


TASKS: tuple[Task, ...] = (
    Task("wifi_on", "Turn on Wi-Fi.", lambda st, ep: st.toggles["wifi"],
         (op("open_app", app_name="Settings"), tap("Wi-Fi"), DONE)),
    Task("bluetooth_off", "Turn off Bluetooth.", lambda st, ep: not st.toggles["bluetooth"],
         (op("open_app", app_name="Settings"), tap_xy("Bluetooth"), DONE)),
    Task("airplane_on", "Turn on airplane mode.", lambda st, ep: st.toggles["airplane"],
         (op("navigate_home"), tap("Settings"), tap("Airplane mode"), DONE)),
    Task("dark_theme_on", "Turn on the dark theme.", lambda st, ep: st.toggles["dark_theme"],
         (op("open_app", app_name="Settings"), op("scroll", direction="down"), tap("Dark theme"), DONE)),
    Task("send_hello_alice", "Send 'hello' to Alice.", lambda st, ep: st.sent("Alice")[-1:] == ["hello"],
         (op("open_app", app_name="Messages"), tap("Alice"), type_into("compose_message_text", "hello"),
          tap("Send"), DONE), sensitive=True),
    Task("send_unicode_bob", "Send '你好，明天见 👋' to Bob.", lambda st, ep: st.sent("Bob")[-1:] == ["你好，明天见 👋"],
         (op("open_app", app_name="Messages"), tap("Bob"), type_into("compose_message_text", "你好，明天见 👋"),
          tap("Send"), DONE), sensitive=True),
    Task("message_new_contact", "Text Carol 'on my way' by starting a new chat.",
         lambda st, ep: st.sent("Carol")[-1:] == ["on my way"],
         (op("open_app", app_name="Messages"), tap("Start chat"), tap("Carol"),
          type_into("compose_message_text", "on my way"), tap("Send"), DONE), sensitive=True),
    Task("like_alice_message", "Like Alice's last message.", lambda st, ep: st.conversations["Alice"][-1].liked,
         (op("open_app", app_name="Messages"), tap("Alice"), press("double_tap", "Are we still on for lunch?"), DONE)),
    Task("delete_carol_thread", "Delete the conversation with Carol.", lambda st, ep: "Carol" not in st.conversations,
         (op("open_app", app_name="Messages"), tap("Carol"), tap("Delete conversation"), tap("Delete"), DONE),
         sensitive=True),
    Task("add_contact_dave", "Create a contact named Dave with phone number 555-0199.",
         lambda st, ep: (c := st.contact("Dave")) is not None and c.phone == "555-0199",
         (op("open_app", app_name="Contacts"), tap("Create contact"), type_into("name", "Dave"),
          op("keyboard_enter"), op("input_text", text="555-0199"), tap("Save"), DONE)),
    Task("star_bob", "Add Bob to favourites.", lambda st, ep: bool((c := st.contact("Bob")) and c.starred),
         (op("open_app", app_name="Contacts"), tap("Bob"), tap("Favourite"), DONE)),
    Task("answer_alice_phone", "What is Alice's phone number?", lambda st, ep: (ep.answer or "").strip() == "555-0101",
         (op("open_app", app_name="Contacts"), tap("Alice"), op("answer", text="555-0101"), DONE)),
    Task("alarm_0730", "Set an alarm for 7:30.", lambda st, ep: _alarm(st, 7, 30),
         (op("open_app", app_name="Clock"), tap("Add alarm"), type_into("hour", "7"), op("keyboard_enter"),
          op("input_text", text="30"), tap("Save"), DONE)),
    Task("alarm_0600_off", "Turn off the 6:00 alarm.",
         lambda st, ep: not _alarm(st, 6, 0) and any(a.hour == 6 for a in st.alarms),
         (op("open_app", app_name="Clock"), tap("06:00"), DONE)),
    Task("delete_alarm_0815", "Delete the 8:15 alarm.",
         lambda st, ep: not any(a.hour == 8 and a.minute == 15 for a in st.alarms),
         (op("open_app", app_name="Clock"), press("long_press", "08:15"), tap("Delete"), DONE), sensitive=True),
    Task("sign_in", "Sign in to Accounts as me@example.com with the saved password.",
         lambda st, ep: st.account == "me@example.com" and st.last_password == SECRETS["account_password"],
         (op("open_app", app_name="Settings"), op("scroll", direction="down"), tap("Accounts"),
          type_into("email", "me@example.com"), type_into("password", {"secret": "account_password"}),
          tap("Sign in"), DONE), sensitive=True),
    Task("home_after_clock", "Open the Clock app, then go back to the home screen.",
         lambda st, ep: ep.status == "complete" and any(a.get("app_name") == "Clock" for a in ep.actions),
         (op("open_app", app_name="Clock"), op("wait", seconds=0.05), op("navigate_back"), DONE)),
    Task("infeasible_5g", "Turn on 5G ultra mode.", lambda st, ep: ep.status == "infeasible",
         (op("open_app", app_name="Settings"), op("swipe", direction="up"),
          op("status", goal_status="infeasible"))),
)


def get_task(name: str) -> Task:
    for task in TASKS:
        if task.name == name:
            return task
    raise KeyError(f"unknown task {name!r} (known: {', '.join(t.name for t in TASKS)})")


def run_oracle(device: Any, task: Task, *, recorder: Any = None, max_steps: int = 20) -> Episode:
    """Run the task's oracle on ``device`` (a Device or GuardedDevice); observe before every step."""
    ep = Episode()
    for i, step in enumerate(task.oracle[:max_steps]):
        t0 = time.perf_counter()
        obs = device.observe()
        action = step(obs) if callable(step) else step
        result = device.act(action)
        ep.step_ms.append((time.perf_counter() - t0) * 1000)
        ep.actions.append(result.action)
        if recorder is not None:
            recorder.record(i, obs, result, goal=task.goal)
        if result.blocked:
            ep.blocked += 1
            break
        if result.answer is not None:
            ep.answer = result.answer
        if result.done:
            ep.status = result.goal_status
            break
    return ep
