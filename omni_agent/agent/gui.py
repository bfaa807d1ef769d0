"""GUI mode: the phone as the agent's environment (observe node + one action tool).

:class:`GuiEnv` wraps a ``tools.android.device.Device`` (ADB, websocket bridge, or the simulator
through real adb): ``observe`` takes the screenshot and UI dump, numbers the elements and draws the
set-of-mark boxes; ``tool()`` is the ``android_action`` tool whose arguments are the AndroidWorld
action union (the same pydantic models the device runs). Risky actions (pay, delete, send, install,
log in) are flagged by the Android safety rules and go through the guard node's confirmation.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pydantic import RootModel

from omni_agent.agent.tools import Tool, ToolContext, ToolResult
from tools.android.actions import Action

KEEP_SCREENS = 8  # screenshots kept in memory for the model (older steps are only in the trajectory)


class GuiAction(RootModel[Action]):
    """One AndroidWorld action (``{"action_type": "click", "index": 3}``)."""


def gui_action_schema() -> dict[str, Any]:
    """The action union's JSON schema with ``action_type`` required in every branch.

    Pydantic marks the discriminator optional (it has a default); a constrained decoder must emit
    it, or the union cannot tell the branches apart.
    """
    schema = GuiAction.model_json_schema()
    for branch in schema.get("$defs", {}).values():
        if "action_type" in branch.get("properties", {}):
            branch["required"] = ["action_type", *[r for r in branch.get("required", []) if r != "action_type"]]
    schema.pop("discriminator", None)
    return schema


RiskFn = Callable[[Any, Any], "str | None"]
"""``risk(action, observation) -> reason | None``."""


def safety_risk(policy: Any = None) -> RiskFn:
    """Risk from the Android safety rules (``tools.android.safety.SafetyPolicy``): send, delete, pay,
    install and log-in actions need the user's confirmation."""
    from tools.android.safety import SafetyPolicy

    policy = policy or SafetyPolicy()

    def risk(action: Any, obs: Any) -> str | None:
        flagged = policy.sensitive(action, obs)
        return None if flagged is None else f"{flagged[0]}: {flagged[1]}"

    return risk


class GuiEnv:
    """A device seen by the agent graph.

    Args:
        device: A ``tools.android.device.Device`` (``observe()``, ``act()``, ``screen_size()``).
        artifacts: Artifact store; with ``save_screens`` every marked screenshot is stored there.
        save_screens: Keep each step's set-of-mark screenshot as an artifact (for the trajectory).
        policy: ``tools.android.safety.SafetyPolicy`` (rules and app allow-list); default rules when None.
        risk: Override ``risk(action, observation) -> reason | None`` (default: ``policy``'s rules).
        recorder: ``tools.android.trajectory.Recorder``: one JSONL line + screenshot per action.
        goal: The task's goal, written into the recording.
        model_max_side: Downscale screenshots for the model to this longest side (None: as is).
    """

    def __init__(self, device: Any, *, artifacts: Any = None, save_screens: bool = False, policy: Any = None,
                 risk: RiskFn | None = None, recorder: Any = None, goal: str = "",
                 model_max_side: int | None = 640):
        from tools.android.safety import SafetyPolicy

        self.device = device
        self.artifacts = artifacts
        self.save_screens = save_screens and artifacts is not None
        self.policy = policy or SafetyPolicy()
        self.risk = risk or safety_risk(self.policy)
        self.recorder = recorder
        self.goal = goal
        self.steps = 0
        self.model_max_side = model_max_side
        self.last = None
        self._images: OrderedDict[str, Any] = OrderedDict()
        self.observe_ms: list[float] = []
        self.act_ms: list[float] = []

    async def observe(self, step: int) -> dict[str, Any]:
        """Screenshot + elements; returns the JSON-able observation kept in the graph state."""
        t0 = time.perf_counter()
        obs = await asyncio.to_thread(self._observe_sync)  # adb round trips and PNG work
        self.observe_ms.append((time.perf_counter() - t0) * 1000)
        image, screen_id = obs.pop("_image"), obs["screenshot"]
        self._images[screen_id] = image
        while len(self._images) > KEEP_SCREENS:
            self._images.popitem(last=False)
        obs["step"] = step
        return obs

    def _observe_sync(self) -> dict[str, Any]:
        from tools.android.observation import element_list

        obs = self.device.observe()
        self.last = obs
        marked = obs.marked_image()
        if self.model_max_side and max(marked.size) > self.model_max_side:
            k = self.model_max_side / max(marked.size)
            marked = marked.resize((max(1, round(marked.width * k)), max(1, round(marked.height * k))))
        if self.save_screens:
            screen_id = self.artifacts.put_image(marked, kind="screenshot").id
        else:
            screen_id = "screen_" + uuid.uuid4().hex[:16]
        return {"elements": element_list(obs.elements), "screenshot": screen_id, "size": list(obs.screen),
                "package": obs.package, "n_elements": len(obs.elements), "_image": marked}

    def images_for(self, observation: dict[str, Any]) -> dict[str, Any]:
        sid = observation.get("screenshot")
        if sid in self._images:
            return {sid: self._images[sid]}
        if sid and self.artifacts is not None and self.artifacts.valid_id(sid):
            return {sid: self.artifacts.load_image(sid)}
        return {}

    def _approval(self, args: GuiAction) -> str | None:
        return self.risk(args.root, self.last)

    def _allowed(self, action: Any) -> None:
        from tools.android.actions import ActionError, OpenApp, resolve_app

        if isinstance(action, OpenApp) and hasattr(self.device, "apps"):
            package = resolve_app(action.app_name, self.device.apps())
        else:
            package = self.last.package if self.last is not None else ""
        reason = self.policy.check_app(package) if package else None
        if reason:
            raise ActionError(reason)

    def _act(self, args: GuiAction, ctx: ToolContext) -> ToolResult:
        t0 = time.perf_counter()
        self._allowed(args.root)  # the app allow-list: a refusal is reported to the model
        obs = self.last
        result = self.device.act(args.root)  # ActionError (bad index, unknown app) -> reported to the model
        self.act_ms.append((time.perf_counter() - t0) * 1000)
        if self.recorder is not None and obs is not None:
            self.recorder.record(self.steps, obs, result, goal=self.goal)
        self.steps += 1
        data: dict[str, Any] = {}
        text = f"done: {result.action}"
        if result.message:
            text += f" ({result.message})"
        if result.done:
            data["status"] = result.goal_status
            text = f"task marked {result.goal_status}"
        if result.answer is not None:
            data["answer"] = result.answer
            text = f"answered: {result.answer}"
        return ToolResult(text, is_error=not result.ok, data=data)

    def tool(self) -> Tool:
        """The ``android_action`` tool (one AndroidWorld action per call)."""
        return Tool(
            name="android_action",
            description=("Act on the phone: one AndroidWorld action. Target elements by their [index] in the "
                         'observation. Finish with {"action_type": "status", "goal_status": "complete"} '
                         "(or infeasible)."),
            args_model=GuiAction, parameters=gui_action_schema(), fn=self._act, approval=self._approval)
