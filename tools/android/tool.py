"""The phone as one agent tool: a JSON-schema'd action in, the result and the next screen out.

Bad actions do not raise: the error text goes back to the model so it can correct itself, the way a
tool failure should read in a conversation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image

from tools.android.actions import ActionError, action_json_schema, parse_action
from tools.android.bridge import BridgeError
from tools.android.device import ActionResult
from tools.android.observation import Observation, ObservationError

DESCRIPTION = (
    "Act on the Android phone with one AndroidWorld JSON action (click/double_tap/long_press by element "
    "index or x,y pixels, input_text, keyboard_enter, navigate_home, navigate_back, scroll/swipe with a "
    "direction, open_app, wait, status complete|infeasible, answer). Returns the result and the new screen's "
    "numbered element list. Type secrets as {\"secret\": \"name\"}."
)


@dataclass
class ToolOutput:
    """What the model gets back."""

    text: str
    image: Image.Image | None = None
    """The set-of-mark screenshot of the screen after the action (None after an error)."""
    result: ActionResult | None = None
    error: str | None = None
    done: bool = False


class AndroidTool:
    """Wraps a :class:`~tools.android.device.Device` (ideally a ``GuardedDevice``) for the agent graph.

    Args:
        device: the phone.
        image_size: the size of the screenshots the model sees, when they are resized; pixel
            coordinates in actions are then scaled to the device.
    """

    name = "android"
    description = DESCRIPTION

    def __init__(self, device: Any, *, image_size: tuple[int, int] | None = None) -> None:
        self.device = device
        self.image_size = image_size

    @property
    def parameters(self) -> dict[str, Any]:
        return action_json_schema()

    def observe(self) -> tuple[Observation, ToolOutput]:
        obs = self.device.observe()
        image = obs.marked_image()
        if self.image_size is not None:
            image = image.resize(self.image_size)
        return obs, ToolOutput(text=obs.prompt_text(), image=image)

    def __call__(self, args: dict[str, Any] | str) -> ToolOutput:
        try:
            action = parse_action(args, self.device.screen_size(), image_size=self.image_size)
            result = self.device.act(action)
        except (ActionError, ObservationError, BridgeError) as e:
            return ToolOutput(text=f"error: {e}", error=str(e))
        if result.blocked:
            return ToolOutput(text=f"blocked: {result.message}", result=result, error=result.message)
        if result.done:
            return ToolOutput(text=f"episode finished: {result.goal_status}", result=result, done=True)
        _, out = self.observe()
        head = f"answer recorded: {result.answer}\n" if result.answer is not None else "ok\n"
        out.text, out.result = head + out.text, result
        return out
