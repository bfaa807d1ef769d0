"""The device interface shared by the ADB and websocket backends.

A backend implements a handful of primitives (tap, swipe, key, text, launch, screenshot, UI dump,
screen size, packages); :class:`BaseDevice` turns AndroidWorld actions into those primitives, resolves
element indices against the last observation, types secrets by reference and times every step.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tools.android.actions import (
    Action,
    ActionError,
    Answer,
    Click,
    DoubleTap,
    InputText,
    KeyboardEnter,
    LongPress,
    NavigateBack,
    NavigateHome,
    OpenApp,
    Scroll,
    SecretRef,
    Status,
    Swipe,
    Wait,
    is_action,
    parse_action,
    resolve_app,
    validate_action,
)
from tools.android.observation import Observation

KEY_HOME = 3  # KeyEvent.KEYCODE_HOME
KEY_BACK = 4  # KeyEvent.KEYCODE_BACK
KEY_ENTER = 66  # KeyEvent.KEYCODE_ENTER
KEY_DEL = 67  # KeyEvent.KEYCODE_DEL
LONG_PRESS_MS = 1000  # a swipe that stays on one point this long is a long press for Android's input
SWIPE_MS = 300  # quick enough to fling a list, slow enough not to be taken for a tap
DOUBLE_TAP_GAP_S = 0.05  # well inside ViewConfiguration's 300 ms double-tap timeout
SCROLL_FRACTION = 0.5  # a scroll moves the finger across half of the target area

# Launcher labels of common apps -> packages (what `open_app` accepts besides a package name).
DEFAULT_APPS = {
    "Settings": "com.android.settings",
    "Messages": "com.google.android.apps.messaging",
    "Contacts": "com.google.android.contacts",
    "Clock": "com.google.android.deskclock",
    "Phone": "com.google.android.dialer",
    "Chrome": "com.android.chrome",
    "Camera": "com.android.camera2",
    "Files": "com.google.android.documentsui",
    "Calendar": "com.google.android.calendar",
}


@dataclass
class ActionResult:
    """What happened to one action."""

    action: dict[str, Any]
    ok: bool = True
    message: str = ""
    done: bool = False
    """A ``status`` action ended the episode."""
    goal_status: str | None = None
    answer: str | None = None
    blocked: bool = False
    """The safety guard refused the action (not approved)."""
    elapsed_ms: float = 0.0


@runtime_checkable
class Device(Protocol):
    """What an agent needs from a phone."""

    def observe(self) -> Observation: ...

    def act(self, action: Action | dict | str) -> ActionResult: ...

    def screen_size(self) -> tuple[int, int]: ...


@dataclass
class SecretStore:
    """Secrets typed by reference (``{"secret": "name"}``); values never appear in prompts or logs."""

    values: dict[str, str] = field(default_factory=dict)

    def resolve(self, ref: SecretRef) -> str:
        if ref.secret not in self.values:
            known = ", ".join(sorted(self.values)) or "none"
            raise ActionError(f"unknown secret {ref.secret!r} (known secrets: {known})")
        return self.values[ref.secret]


class BaseDevice(abc.ABC):
    """Runs actions through backend primitives; subclasses implement the primitives."""

    def __init__(self, *, apps: Mapping[str, str] | None = None, secrets: SecretStore | None = None) -> None:
        self._apps = dict(apps) if apps is not None else None
        self.secrets = secrets or SecretStore()
        self.last_observation: Observation | None = None
        self._size: tuple[int, int] | None = None

    # ----------------------------------------------------------------- primitives
    @abc.abstractmethod
    def _screen_size(self) -> tuple[int, int]: ...

    @abc.abstractmethod
    def screenshot(self) -> bytes: ...

    @abc.abstractmethod
    def ui_dump(self) -> str: ...

    @abc.abstractmethod
    def tap(self, x: int, y: int) -> None: ...

    @abc.abstractmethod
    def swipe(self, x1: int, y1: int, x2: int, y2: int, ms: int = SWIPE_MS) -> None: ...

    @abc.abstractmethod
    def key(self, code: int) -> None: ...

    @abc.abstractmethod
    def text(self, text: str) -> None: ...

    @abc.abstractmethod
    def launch(self, package: str) -> None: ...

    @abc.abstractmethod
    def packages(self) -> list[str]: ...

    # ----------------------------------------------------------------- derived
    def screen_size(self) -> tuple[int, int]:
        if self._size is None:
            self._size = self._screen_size()
        return self._size

    def apps(self) -> dict[str, str]:
        """Label -> package for the apps ``open_app`` may launch (installed ones only)."""
        if self._apps is None:
            installed = set(self.packages())
            self._apps = {label: pkg for label, pkg in DEFAULT_APPS.items() if pkg in installed}
            for pkg in sorted(installed):
                self._apps.setdefault(pkg, pkg)
        return self._apps

    def long_press(self, x: int, y: int) -> None:
        self.swipe(x, y, x, y, LONG_PRESS_MS)

    def double_tap(self, x: int, y: int) -> None:
        self.tap(x, y)
        time.sleep(DOUBLE_TAP_GAP_S)
        self.tap(x, y)

    def observe(self) -> Observation:
        obs = Observation.from_raw(self.screenshot(), self.ui_dump(), self.screen_size())
        self.last_observation = obs
        return obs

    def _target(self, action: Any) -> tuple[int, int]:
        if action.index is not None:
            obs = self.last_observation
            if obs is None:
                raise ActionError("an element index needs an observation first (call observe())")
            if action.index >= len(obs.elements):
                valid = f"0..{len(obs.elements) - 1}" if obs.elements else "none"
                raise ActionError(f"element index {action.index} does not exist (valid indices: {valid})")
            return obs.elements[action.index].center
        return action.x, action.y

    def _area(self, action: Any) -> tuple[int, int, int, int]:
        if action.index is not None:
            self._target(action)
            assert self.last_observation is not None
            return self.last_observation.elements[action.index].bounds
        w, h = self.screen_size()
        return 0, 0, w, h

    def _swipe_in(self, area: tuple[int, int, int, int], finger: str) -> None:
        x1, y1, x2, y2 = area
        cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
        dx = int((x2 - x1) * SCROLL_FRACTION / 2)
        dy = int((y2 - y1) * SCROLL_FRACTION / 2)
        start, end = {"up": ((cx, cy + dy), (cx, cy - dy)), "down": ((cx, cy - dy), (cx, cy + dy)),
                      "left": ((cx + dx, cy), (cx - dx, cy)), "right": ((cx - dx, cy), (cx + dx, cy))}[finger]
        self.swipe(*start, *end, SWIPE_MS)

    def act(self, action: Action | dict | str) -> ActionResult:
        """Run one action; bad actions raise :class:`ActionError` with a clear message."""
        t0 = time.perf_counter()
        if not is_action(action):
            action = parse_action(action, self.screen_size())
        n = len(self.last_observation.elements) if self.last_observation else None
        validate_action(action, self.screen_size(), n_elements=n, apps=None)
        result = ActionResult(action=action.to_json())
        match action:
            case Click():
                self.tap(*self._target(action))
            case DoubleTap():
                self.double_tap(*self._target(action))
            case LongPress():
                self.long_press(*self._target(action))
            case InputText():
                if action.has_target():
                    self.tap(*self._target(action))
                if action.clear_text:
                    self.clear_field(action.index)
                text = self.secrets.resolve(action.text) if isinstance(action.text, SecretRef) else action.text
                self.text(text)
            case KeyboardEnter():
                self.key(KEY_ENTER)
            case NavigateHome():
                self.key(KEY_HOME)
            case NavigateBack():
                self.key(KEY_BACK)
            case Scroll():
                # content moves opposite to the finger: scrolling down drags the finger up
                finger = {"down": "up", "up": "down", "left": "right", "right": "left"}[action.direction]
                self._swipe_in(self._area(action), finger)
            case Swipe():
                self._swipe_in(self._area(action), action.direction)
            case OpenApp():
                apps = self.apps()
                package = resolve_app(action.app_name, apps)
                if package is None:
                    raise ActionError(f"unknown app {action.app_name!r} (known: {', '.join(sorted(apps))})")
                self.launch(package)
            case Wait():
                time.sleep(action.seconds)
            case Status():
                result.done, result.goal_status = True, action.goal_status
            case Answer():
                result.answer = action.text
        result.elapsed_ms = (time.perf_counter() - t0) * 1000
        return result

    def clear_field(self, index: int | None = None, max_chars: int = 64) -> None:
        """Delete the field's text with DEL presses (``input`` has no 'clear'): the element at ``index``,
        else the focused field of the last observation, else ``max_chars`` presses."""
        obs = self.last_observation
        field = None
        if obs is not None:
            field = obs.elements[index] if index is not None else next(
                (e for e in obs.elements if e.focused and e.editable), None)
        count = len(field.text) if field is not None else max_chars
        for _ in range(count):
            self.key(KEY_DEL)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
