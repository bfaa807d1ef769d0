"""Widgets of the simulated UI: one :class:`Node` per view, with bounds, flags and handlers.

Screens (``apps.py``) build a flat list of nodes from the phone's state each time the screen is drawn,
dumped or touched, so the screenshot, the ``uiautomator`` XML and the touch targets never disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

Handler = Callable[[], None]

CLASSES = {
    "title": "android.widget.TextView", "text": "android.widget.TextView", "bubble": "android.widget.TextView",
    "button": "android.widget.Button", "switch": "android.widget.Switch", "row": "android.widget.LinearLayout",
    "edit": "android.widget.EditText", "icon": "android.widget.TextView", "list": "androidx.recyclerview.widget.RecyclerView",
    "dialog": "android.widget.FrameLayout", "image": "android.widget.ImageButton",
}


@dataclass
class Node:
    kind: str
    bounds: tuple[int, int, int, int]
    text: str = ""
    rid: str = ""
    desc: str = ""
    package: str = ""
    hint: str = ""
    checked: bool | None = None
    focused: bool = False
    password: bool = False
    scrollable: bool = False
    on_tap: Handler | None = None
    on_long: Handler | None = None
    on_double: Handler | None = None
    on_enter: Handler | None = None
    field: str | None = None
    """EditText: the key of its value in the phone's field store."""

    @property
    def clickable(self) -> bool:
        return self.on_tap is not None or self.field is not None or self.on_double is not None

    def contains(self, x: int, y: int) -> bool:
        x1, y1, x2, y2 = self.bounds
        return x1 <= x < x2 and y1 <= y < y2

    def shown_text(self) -> str:
        """What the screen and the dump show: passwords as bullets (never the secret itself)."""
        return "\u2022" * len(self.text) if self.password else self.text

    def xml(self, index: int) -> str:
        x1, y1, x2, y2 = self.bounds
        b = lambda v: "true" if v else "false"  # noqa: E731
        attrs = {
            "index": str(index), "text": self.shown_text(), "resource-id": self.rid,
            "class": CLASSES.get(self.kind, "android.view.View"), "package": self.package,
            "content-desc": self.desc, "checkable": b(self.checked is not None), "checked": b(bool(self.checked)),
            "clickable": b(self.clickable), "enabled": "true", "focusable": b(self.clickable or self.field),
            "focused": b(self.focused), "scrollable": b(self.scrollable), "long-clickable": b(self.on_long),
            "password": b(self.password), "selected": "false", "bounds": f"[{x1},{y1}][{x2},{y2}]",
        }
        if self.hint:
            attrs["hint"] = self.hint
        return "<node " + " ".join(f"{k}={quoteattr(v)}" for k, v in attrs.items()) + " />"


def hierarchy_xml(nodes: list[Node], package: str, size: tuple[int, int]) -> str:
    """A ``uiautomator dump`` document: one root FrameLayout holding every node."""
    w, h = size
    root = (f'<node index="0" text="" resource-id="" class="android.widget.FrameLayout" package="{package}" '
            f'content-desc="" checkable="false" checked="false" clickable="false" enabled="true" focusable="false" '
            f'focused="false" scrollable="false" long-clickable="false" password="false" selected="false" '
            f'bounds="[0,0][{w},{h}]">')
    body = "".join(n.xml(i) for i, n in enumerate(nodes))
    return f"<?xml version='1.0' encoding='UTF-8' standalone='yes' ?><hierarchy rotation=\"0\">{root}{body}</node></hierarchy>"
