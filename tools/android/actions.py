"""The action space: AndroidWorld-compatible JSON actions, parsers for model outputs, scaling, validation.

An action is one pydantic model per ``action_type`` (the field names follow AndroidWorld's
``json_action.py``: ``index``, ``x``, ``y``, ``text``, ``direction``, ``app_name``, ``goal_status``).
Targets are absolute device pixels or an element index into the last observation.

Models answer in other coordinate spaces too; :func:`parse_action` accepts:

- AndroidWorld JSON (a dict or a JSON string, optionally fenced in markdown), pixels of the image the
  model saw (``image_size``) or of the device;
- Ming's calls ``click(x=0.384,y=0.082)`` (0..1 of the screen);
- UI-TARS calls ``click(start_box='(384,82)')`` / ``click(point='<point>384 82</point>')`` and AutoGLM
  calls ``do(action="Tap", element=[384,82])`` (0..1000 of the screen).

Whatever came in, the result is in device pixels.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

Space = Literal["pixels", "norm1", "norm1000"]
"""Coordinate spaces: device/image pixels, 0..1 (Ming) and 0..1000 (UI-TARS, AutoGLM)."""

COMMENT_KEYS = ("reasoning", "reason", "thought", "explanation")  # prose models put next to the action
NORM1000 = 1000  # UI-TARS and AutoGLM emit integer coordinates on a 0..1000 grid


class ActionError(ValueError):
    """An action that cannot be parsed or run; the message says why in words a model can act on."""


class SecretRef(BaseModel):
    """A secret typed by reference: ``{"secret": "bank_pin"}``; the value never reaches a model."""

    model_config = ConfigDict(extra="forbid")
    secret: str


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def to_json(self) -> dict[str, Any]:
        """AndroidWorld-style JSON (unset fields left out, ``action_type`` first)."""
        data = self.model_dump(exclude_none=True, mode="json")
        return {"action_type": data.pop("action_type"), **data}


class _Targeted(_Base):
    index: int | None = Field(None, ge=0, description="element index from the observation's list")
    x: int | None = Field(None, description="x in device pixels")
    y: int | None = Field(None, description="y in device pixels")

    def has_target(self) -> bool:
        return self.index is not None or (self.x is not None and self.y is not None)


class Click(_Targeted):
    action_type: Literal["click"] = "click"


class DoubleTap(_Targeted):
    action_type: Literal["double_tap"] = "double_tap"


class LongPress(_Targeted):
    action_type: Literal["long_press"] = "long_press"


class InputText(_Targeted):
    """Type text into the focused field, or tap the target field first when one is given."""

    action_type: Literal["input_text"] = "input_text"
    text: str | SecretRef
    clear_text: bool = False


class KeyboardEnter(_Base):
    action_type: Literal["keyboard_enter"] = "keyboard_enter"


class NavigateHome(_Base):
    action_type: Literal["navigate_home"] = "navigate_home"


class NavigateBack(_Base):
    action_type: Literal["navigate_back"] = "navigate_back"


Direction = Literal["up", "down", "left", "right"]


class Scroll(_Targeted):
    """Scroll the content (of the screen or of the target element). ``down`` reveals what is below,
    so the finger moves up."""

    action_type: Literal["scroll"] = "scroll"
    direction: Direction


class Swipe(_Targeted):
    """A finger swipe in ``direction`` (the finger's direction, not the content's)."""

    action_type: Literal["swipe"] = "swipe"
    direction: Direction


class OpenApp(_Base):
    action_type: Literal["open_app"] = "open_app"
    app_name: str


class Wait(_Base):
    action_type: Literal["wait"] = "wait"
    seconds: float = Field(1.0, ge=0, le=60)


class Status(_Base):
    action_type: Literal["status"] = "status"
    goal_status: Literal["complete", "infeasible"]


class Answer(_Base):
    action_type: Literal["answer"] = "answer"
    text: str


Action = Annotated[
    Click | DoubleTap | LongPress | InputText | KeyboardEnter | NavigateHome | NavigateBack | Scroll | Swipe
    | OpenApp | Wait | Status | Answer,
    Field(discriminator="action_type"),
]
ACTION_TYPES = ("click", "double_tap", "long_press", "input_text", "keyboard_enter", "navigate_home",
                "navigate_back", "scroll", "swipe", "open_app", "wait", "status", "answer")
_ADAPTER: TypeAdapter[Action] = TypeAdapter(Action)
TARGETED = (Click, DoubleTap, LongPress)


def is_action(obj: Any) -> bool:
    """True for a parsed action model (as opposed to a dict or text still to parse)."""
    return isinstance(obj, _Base)


def action_json_schema() -> dict[str, Any]:
    """The JSON schema of one action (for constrained decoding and tool descriptions)."""
    return _ADAPTER.json_schema()


# --------------------------------------------------------------------------- scaling


def scale_point(x: float, y: float, src: tuple[int, int], dst: tuple[int, int]) -> tuple[int, int]:
    """Map a point between two pixel spaces of the same screen (e.g. a resized screenshot -> device)."""
    sx, sy = dst[0] / src[0], dst[1] / src[1]
    return int(round(x * sx)), int(round(y * sy))


def denormalize(x: float, y: float, space: Space, screen: tuple[int, int]) -> tuple[int, int]:
    """Normalised coordinates -> device pixels (clamped to the last pixel so 1.0 / 1000 stay on screen)."""
    if space == "pixels":
        return int(round(x)), int(round(y))
    scale = 1.0 if space == "norm1" else float(NORM1000)
    w, h = screen
    px = min(int(round(x / scale * w)), w - 1)
    py = min(int(round(y / scale * h)), h - 1)
    return px, py


# --------------------------------------------------------------------------- parsing

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)
_CALL = re.compile(r"([A-Za-z_][A-Za-z_ ]*)\((.*)\)\s*$", re.S)
_NUMS = re.compile(r"-?\d+(?:\.\d+)?")

# AutoGLM's ``do(action=...)`` names -> AndroidWorld action types
_AUTOGLM = {"tap": "click", "double tap": "double_tap", "long press": "long_press", "type": "input_text",
            "type_name": "input_text", "back": "navigate_back", "home": "navigate_home", "launch": "open_app",
            "swipe": "swipe", "wait": "wait", "enter": "keyboard_enter"}
# call names (Ming, UI-TARS, AutoGLM, common aliases) -> AndroidWorld action types
_CALL_NAMES = {"click": "click", "tap": "click", "left_single": "click", "left_double": "double_tap",
               "double_click": "double_tap", "double_tap": "double_tap", "long_press": "long_press",
               "type": "input_text", "input_text": "input_text", "press_home": "navigate_home",
               "home": "navigate_home", "navigate_home": "navigate_home", "press_back": "navigate_back",
               "back": "navigate_back", "navigate_back": "navigate_back", "enter": "keyboard_enter",
               "press_enter": "keyboard_enter", "keyboard_enter": "keyboard_enter", "scroll": "scroll",
               "swipe": "swipe", "drag": "swipe", "open_app": "open_app", "launch": "open_app",
               "wait": "wait", "finished": "status", "finish": "status", "status": "status",
               "answer": "answer", "call_user": "answer"}


def _parse_call(text: str) -> tuple[str, dict[str, Any]]:
    m = _CALL.match(text.strip())
    if not m:
        raise ActionError(f"cannot parse action {text[:120]!r}: expected JSON or a call like click(x=0.5,y=0.5)")
    name, args = m.group(1).strip().lower(), m.group(2)
    try:
        call = ast.parse(f"f({args})", mode="eval").body
        assert isinstance(call, ast.Call)
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg}
        positional = [ast.literal_eval(a) for a in call.args]
    except (SyntaxError, ValueError, AssertionError) as e:
        raise ActionError(f"cannot parse the arguments of {name}(...): {e}") from None
    if positional:
        kwargs.setdefault("_args", positional)
    return name, kwargs


def _point(value: Any) -> tuple[float, float]:
    """A point from ``[x, y]``, ``'(x,y)'``, ``'<point>x y</point>'`` or a box ``(x1,y1,x2,y2)`` (centre)."""
    nums = [float(v) for v in value] if isinstance(value, list | tuple) else [float(v) for v in _NUMS.findall(str(value))]
    if len(nums) == 2:
        return nums[0], nums[1]
    if len(nums) == 4:
        return (nums[0] + nums[2]) / 2, (nums[1] + nums[3]) / 2
    raise ActionError(f"cannot read a point from {value!r}")


def _direction_between(a: tuple[float, float], b: tuple[float, float]) -> str:
    dx, dy = b[0] - a[0], b[1] - a[1]
    if abs(dx) > abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def _call_to_dict(name: str, kw: dict[str, Any]) -> tuple[dict[str, Any], Space | None]:
    """A parsed call -> (AndroidWorld dict with raw coordinates, the coordinate space they are in)."""
    space: Space | None = None
    if name == "do":
        raw = str(kw.pop("action", "")).strip().lower()
        if raw not in _AUTOGLM:
            raise ActionError(f"unknown AutoGLM action {raw!r} (known: {', '.join(sorted(_AUTOGLM))})")
        atype, space = _AUTOGLM[raw], "norm1000"
    elif name in _CALL_NAMES:
        atype = _CALL_NAMES[name]
    else:
        raise ActionError(f"unknown action {name!r} (known: {', '.join(ACTION_TYPES)})")
    out: dict[str, Any] = {"action_type": atype}
    point = None
    for key in ("element", "start_box", "point", "start_point", "start", "box", "coordinate"):
        if key in kw:
            point = _point(kw.pop(key))
            break
    if point is None and "x" in kw and "y" in kw:
        point = (float(kw.pop("x")), float(kw.pop("y")))
        if space is None and max(point) <= 1.0:
            space = "norm1"  # Ming: click(x=0.384,y=0.082)
    elif point is None and "_args" in kw and atype in ("click", "double_tap", "long_press"):
        point = _point(kw.pop("_args"))
    if point is not None:
        out["x"], out["y"] = point
        space = space or ("norm1" if max(point) <= 1.0 else "norm1000")
    end = next((kw.pop(k) for k in ("end", "end_box", "end_point") if k in kw), None)
    if atype in ("scroll", "swipe"):
        if "direction" in kw:
            out["direction"] = str(kw.pop("direction")).lower()
        elif end is not None and point is not None:
            out["direction"] = _direction_between(point, _point(end))
            if atype == "swipe" and name == "scroll":
                out["action_type"] = "scroll"
    for key in ("text", "content", "message"):
        if key in kw and atype in ("input_text", "answer"):
            out["text"] = str(kw.pop(key))
    if atype == "status":
        out["goal_status"] = str(kw.pop("goal_status", kw.pop("status", "complete")))
        msg = kw.pop("message", kw.pop("content", None))
        if msg and name in ("finish", "finished"):
            out["_answer"] = str(msg)
    if atype == "open_app":
        out["app_name"] = str(kw.pop("app", kw.pop("app_name", kw.pop("_args", [""])[0] if "_args" in kw else "")))
    if atype == "wait":
        seconds = kw.pop("duration", kw.pop("seconds", None))
        if seconds is not None:
            out["seconds"] = float(_NUMS.findall(str(seconds))[0])
    return out, space


def parse_action(
    obj: Any,
    screen: tuple[int, int] | None = None,
    *,
    image_size: tuple[int, int] | None = None,
    space: Space | None = None,
) -> Action:
    """Parse a model's action into a validated :data:`Action` in device pixels.

    Args:
        obj: a dict, a JSON string (markdown fences allowed), or a call string (Ming/UI-TARS/AutoGLM).
        screen: the device size ``(w, h)``; needed for normalised or image-space coordinates.
        image_size: the size of the screenshot the model saw, when its pixels are not device pixels.
        space: force the coordinate space (default: pixels for JSON, guessed for calls).

    Raises:
        ActionError: unknown action type, missing fields, or unreadable text.
    """
    guessed: Space | None = None
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(exclude_none=True)
    if isinstance(obj, str):
        text = obj.strip()
        fenced = _FENCE.search(text)
        if fenced:
            text = fenced.group(1).strip()
        if text.startswith("{"):
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise ActionError(f"action is not valid JSON: {e}") from None
        else:
            obj, guessed = _call_to_dict(*_parse_call(text))
    if not isinstance(obj, dict):
        raise ActionError(f"an action must be a JSON object, got {type(obj).__name__}")
    obj = dict(obj)
    if "action" in obj and "action_type" not in obj:
        obj["action_type"] = obj.pop("action")
    atype = obj.get("action_type")
    if isinstance(atype, str):
        obj["action_type"] = atype = atype.strip().lower()
    if atype not in ACTION_TYPES:
        raise ActionError(f"unknown action type {atype!r} (known: {', '.join(ACTION_TYPES)})")
    for key in ("_answer", *COMMENT_KEYS):
        obj.pop(key, None)
    space = space or guessed or "pixels"
    if obj.get("x") is not None and obj.get("y") is not None:
        x, y = float(obj["x"]), float(obj["y"])
        if space != "pixels":
            if screen is None:
                raise ActionError("normalised coordinates need the screen size")
            x, y = denormalize(x, y, space, screen)
        elif image_size is not None:
            if screen is None:
                raise ActionError("image coordinates need the screen size")
            x, y = scale_point(x, y, image_size, screen)
        obj["x"], obj["y"] = int(round(x)), int(round(y))
    try:
        return _ADAPTER.validate_python(obj)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'][1:]) or 'action'}: {err['msg']}"
                             for err in e.errors())
        raise ActionError(f"invalid {atype} action: {problems}") from None


def validate_action(
    action: Action,
    screen: tuple[int, int],
    *,
    n_elements: int | None = None,
    apps: dict[str, str] | None = None,
) -> None:
    """Check an action against the device: coordinates on screen, index in range, app known.

    Raises:
        ActionError: with a message naming the bad value and what would be valid.
    """
    w, h = screen
    if isinstance(action, _Targeted):
        if isinstance(action, TARGETED) and not action.has_target():
            raise ActionError(f"{action.action_type} needs an element index or x and y")
        if action.x is not None and action.y is not None and not (0 <= action.x < w and 0 <= action.y < h):
            raise ActionError(f"{action.action_type} at ({action.x}, {action.y}) is outside the {w}x{h} screen")
        if action.index is not None and n_elements is not None and action.index >= n_elements:
            valid = f"0..{n_elements - 1}" if n_elements else "none"
            raise ActionError(f"element index {action.index} does not exist (valid indices: {valid})")
    if isinstance(action, OpenApp) and apps is not None and resolve_app(action.app_name, apps) is None:
        raise ActionError(f"unknown app {action.app_name!r} (known: {', '.join(sorted(apps))})")


def resolve_app(name: str, apps: dict[str, str]) -> str | None:
    """App label or package -> package, case-insensitively (``apps`` maps label -> package)."""
    key = name.strip().lower()
    for label, package in apps.items():
        if key in (label.lower(), package.lower()):
            return package
    return None
