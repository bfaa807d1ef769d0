"""The simulated phone: screen stack, focus, text fields, touch and key dispatch, screenshots and dumps.

Thread-safe: the adb daemon serves each connection on its own thread, so every entry point takes
the phone's lock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from tools.android.sim import apps
from tools.android.sim.render import render_png
from tools.android.sim.state import (
    CLOCK,
    CONTACTS,
    LAUNCHER,
    MESSAGES,
    SETTINGS,
    SIM_APPS,
    Alarm,
    Contact,
    Message,
    PhoneState,
)
from tools.android.sim.widgets import Node, hierarchy_xml

DEFAULT_SIZE = (720, 1280)  # small enough to render and PNG-encode in a few ms; real phones are 1080x2400
TAP_SLOP = 24  # px: a swipe shorter than this is a tap or a press (ViewConfiguration touch slop, scaled)
LONG_PRESS_MIN_MS = 500  # Android's default long-press timeout
DOUBLE_TAP_S = 0.5  # Android's DOUBLE_TAP_TIMEOUT is 0.3 s; looser so two bridge round trips on a busy host count
EVENT_LOG = 1000  # input events kept for tests and debugging
SCREEN_PACKAGES = {"home": LAUNCHER, "settings": SETTINGS, "accounts": SETTINGS, "messages": MESSAGES,
                   "new_chat": MESSAGES, "conversation": MESSAGES, "contacts": CONTACTS, "contact": CONTACTS,
                   "new_contact": CONTACTS, "clock": CLOCK, "new_alarm": CLOCK}
KEYCODES = {"KEYCODE_HOME": 3, "KEYCODE_BACK": 4, "KEYCODE_ENTER": 66, "KEYCODE_DEL": 67, "HOME": 3, "BACK": 4,
            "ENTER": 66, "DEL": 67}


class Phone:
    """A small Android-like UI over :class:`PhoneState`."""

    def __init__(self, size: tuple[int, int] = DEFAULT_SIZE, state: PhoneState | None = None) -> None:
        self.w, self.h = size
        self.state = state or PhoneState()
        self.lock = threading.RLock()
        self.stack: list[tuple[str, Any]] = [("home", None)]
        self.fields: dict[str, str] = {}
        self.focus: str | None = None
        self.scroll: dict[str, int] = {}
        self.dialog: tuple[str, str, Callable[[], None]] | None = None
        self.version = 0
        self._last_tap: tuple[float, int, int] = (0.0, -1, -1)
        self._png: tuple[int, bytes] | None = None
        self.events: deque[str] = deque(maxlen=EVENT_LOG)
        """A log of input events (for tests and debugging)."""

    # ----------------------------------------------------------------- screen model
    @property
    def package(self) -> str:
        return SCREEN_PACKAGES[self.stack[-1][0]]

    def nodes(self) -> list[Node]:
        with self.lock:
            name, arg = self.stack[-1]
            nodes = apps.SCREENS[name](self, arg)
            if self.dialog is not None:
                nodes = nodes + self._dialog_nodes()
            return nodes

    def _dialog_nodes(self) -> list[Node]:
        assert self.dialog is not None
        message, ok, on_ok = self.dialog
        u = self.w / 720
        x1, x2 = int(60 * u), self.w - int(60 * u)
        y1 = self.h // 2 - int(150 * u)
        y2 = y1 + int(300 * u)
        mid = (x1 + x2) // 2
        by1 = y2 - int(110 * u)

        def ok_then_close() -> None:
            self.dialog = None
            on_ok()

        pkg = self.package
        return [
            Node("dialog", (x1, y1, x2, y2), package=pkg, rid="android:id/parentPanel"),
            Node("text", (x1 + int(30 * u), y1 + int(30 * u), x2 - int(30 * u), by1), text=message, package=pkg,
                 rid="android:id/message"),
            Node("button", (x1 + int(20 * u), by1, mid - int(10 * u), y2 - int(20 * u)), text="Cancel", package=pkg,
                 rid="android:id/button2", on_tap=self.close_dialog),
            Node("button", (mid + int(10 * u), by1, x2 - int(20 * u), y2 - int(20 * u)), text=ok, package=pkg,
                 rid="android:id/button1", on_tap=ok_then_close),
        ]

    def screenshot(self) -> bytes:
        with self.lock:
            if self._png is None or self._png[0] != self.version:
                self._png = (self.version, render_png(self.nodes(), (self.w, self.h), dark=self.state.toggles["dark_theme"],
                                                      status=self.status_line(), dialog=self.dialog is not None))
            return self._png[1]

    def status_line(self) -> str:
        t = self.state.toggles
        marks = [name for name, on in (("Wi-Fi", t["wifi"]), ("BT", t["bluetooth"]), ("\u2708", t["airplane"])) if on]
        return "12:00   " + "  ".join(marks)

    def dump_xml(self) -> str:
        with self.lock:
            return hierarchy_xml(self.nodes(), self.package, (self.w, self.h))

    # ----------------------------------------------------------------- input
    def _changed(self, event: str) -> None:
        self.version += 1
        self.events.append(event)

    def _hit(self, x: int, y: int) -> Node | None:
        nodes = self.nodes()
        if self.dialog is not None:
            nodes = nodes[-3:]  # modal: only the dialog's message and buttons take touches
        for node in reversed(nodes):
            if node.contains(x, y) and (node.clickable or node.on_long):
                return node
        return None

    def tap(self, x: int, y: int) -> None:
        with self.lock:
            now = time.monotonic()
            t0, x0, y0 = self._last_tap
            self._last_tap = (now, x, y)
            node = self._hit(x, y)
            self._changed(f"tap {x} {y}")
            if node is None:
                return
            double = now - t0 < DOUBLE_TAP_S and abs(x - x0) < TAP_SLOP and abs(y - y0) < TAP_SLOP
            if double and node.on_double:
                node.on_double()
                self._last_tap = (0.0, -1, -1)
            elif node.field is not None:
                self.focus = node.field
            elif node.on_tap:
                node.on_tap()

    def swipe(self, x1: int, y1: int, x2: int, y2: int, ms: int) -> None:
        with self.lock:
            self._changed(f"swipe {x1} {y1} {x2} {y2} {ms}")
            if abs(x2 - x1) < TAP_SLOP and abs(y2 - y1) < TAP_SLOP:
                if ms >= LONG_PRESS_MIN_MS:
                    node = self._hit(x1, y1)
                    if node is not None and node.on_long:
                        node.on_long()
                    return
                self.tap(x1, y1)
                return
            if self.dialog is None and abs(y2 - y1) > abs(x2 - x1):
                for node in self.nodes():
                    if node.scrollable and node.contains(x1, y1):
                        key = self.stack[-1][0]
                        self.scroll[key] = self.scroll.get(key, 0) + (y1 - y2)  # finger up -> content up
                        self.nodes()  # laying the screen out clamps the offset to the content
                        return

    def key(self, code: int | str) -> None:
        with self.lock:
            code = KEYCODES.get(str(code).upper(), code)
            code = int(code)
            self._changed(f"key {code}")
            if code == 3:
                self.go_home()
            elif code == 4:
                self.back()
            elif code == 66:
                target = next((n for n in self.nodes() if n.field == self.focus and n.on_enter), None)
                if target is not None and target.on_enter:
                    target.on_enter()
            elif code == 67 and self.focus is not None:
                self.fields[self.focus] = self.fields.get(self.focus, "")[:-1]

    def type_text(self, text: str) -> bool:
        """Text from ``input text`` or the IME into the focused field; False when nothing has focus."""
        with self.lock:
            self._changed(f"text {text!r}")
            if self.focus is None or self.dialog is not None:
                return False
            self.fields[self.focus] = self.fields.get(self.focus, "") + text
            return True

    def launch(self, package: str) -> bool:
        with self.lock:
            if package not in apps.ROOTS:
                return False
            self._changed(f"launch {package}")
            self.stack = [("home", None), (apps.ROOTS[package], None)]
            self._reset_screen()
            return True

    # ----------------------------------------------------------------- navigation
    def _reset_screen(self) -> None:
        self.fields, self.focus, self.dialog = {}, None, None

    def push(self, screen: str, arg: Any = None) -> None:
        self.stack.append((screen, arg))
        self._reset_screen()

    def pop(self) -> None:
        if len(self.stack) > 1:
            self.stack.pop()
        self._reset_screen()

    def back(self) -> None:
        if self.dialog is not None:
            self.dialog = None
        elif self.focus is not None:
            self.focus = None  # the first BACK hides the keyboard, as on a phone
        else:
            self.pop()

    def go_home(self) -> None:
        self.stack = [("home", None)]
        self._reset_screen()

    def set_focus(self, key: str | None) -> None:
        self.focus = key

    def clamp_scroll(self, key: str, max_offset: int) -> int:
        value = max(0, min(self.scroll.get(key, 0), max(0, max_offset)))
        self.scroll[key] = value
        return value

    def confirm_dialog(self, message: str, ok: str, on_ok: Callable[[], None]) -> None:
        self.dialog = (message, ok, on_ok)

    def close_dialog(self) -> None:
        self.dialog = None

    # ----------------------------------------------------------------- app logic
    def toggle(self, key: str) -> None:
        self.state.toggles[key] = not self.state.toggles[key]

    def open_conversation(self, name: str) -> None:
        self.state.conversations.setdefault(name, [])
        self.stack[-1] = ("conversation", name)
        self._reset_screen()

    def send_message(self, name: str) -> None:
        text = self.fields.get("compose", "")
        if text:
            self.state.conversations.setdefault(name, []).append(Message("me", text))
            self.fields["compose"] = ""

    def like(self, msg: Message) -> None:
        msg.liked = not msg.liked

    def delete_conversation(self, name: str) -> None:
        self.state.conversations.pop(name, None)
        self.pop()

    def star(self, c: Contact) -> None:
        c.starred = not c.starred

    def delete_contact(self, c: Contact) -> None:
        self.state.contacts = [x for x in self.state.contacts if x is not c]
        self.pop()

    def save_contact(self) -> None:
        name, number = self.fields.get("name", "").strip(), self.fields.get("phone", "").strip()
        if name and number:
            self.state.contacts.append(Contact(name, number))
            self.pop()

    def toggle_alarm(self, a: Alarm) -> None:
        a.enabled = not a.enabled

    def delete_alarm(self, a: Alarm) -> None:
        self.state.alarms = [x for x in self.state.alarms if x is not a]

    def save_alarm(self) -> None:
        try:
            hour, minute = int(self.fields.get("hour", "")), int(self.fields.get("minute", ""))
        except ValueError:
            return
        if 0 <= hour < 24 and 0 <= minute < 60:
            self.state.alarms.append(Alarm(hour, minute))
            self.pop()

    def sign_in(self) -> None:
        email, password = self.fields.get("email", "").strip(), self.fields.get("password", "")
        if email and password:
            self.state.account, self.state.last_password = email, password
            self._reset_screen()

    def sign_out(self) -> None:
        self.state.account = None

    def packages(self) -> list[str]:
        return [LAUNCHER, "com.android.adbkeyboard", *SIM_APPS.values()]
