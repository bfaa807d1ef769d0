"""Observation: a screenshot plus the UI tree from ``uiautomator dump`` -> elements -> a set-of-mark prompt.

``uiautomator dump`` writes ``<hierarchy><node .../></hierarchy>`` where every node carries
``bounds="[x1,y1][x2,y2]"``, ``text``, ``resource-id``, ``class``, ``package``, ``content-desc`` and
boolean flags as ``"true"``/``"false"``. The elements a model may act on are the visible nodes that are
clickable, editable or carry a label; they are numbered in document order, and that number is the
``index`` of an action.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFont
from pydantic import BaseModel

BOUNDS = re.compile(r"\[(-?\d+),(-?\d+)\]\[(-?\d+),(-?\d+)\]")
MARK_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#008080")  # distinct on white/dark


class ObservationError(ValueError):
    """A screenshot or UI dump that cannot be read."""


class UIElement(BaseModel):
    """One actionable or labelled node of the UI tree, in device pixels."""

    index: int
    bounds: tuple[int, int, int, int]
    """(x1, y1, x2, y2), exclusive right/bottom edge as uiautomator reports it."""
    text: str = ""
    resource_id: str = ""
    content_desc: str = ""
    class_name: str = ""
    package: str = ""
    clickable: bool = False
    long_clickable: bool = False
    checkable: bool = False
    checked: bool = False
    enabled: bool = True
    focused: bool = False
    scrollable: bool = False
    editable: bool = False

    @property
    def center(self) -> tuple[int, int]:
        x1, y1, x2, y2 = self.bounds
        return (x1 + x2) // 2, (y1 + y2) // 2

    @property
    def label(self) -> str:
        """What a person would call it: its text, else its description, else the id's last part."""
        return self.text or self.content_desc or self.resource_id.rsplit("/", 1)[-1]

    def describe(self) -> str:
        """One compact line for a prompt: ``[3] Switch "Wi-Fi" (clickable, checked=false)``."""
        kind = self.class_name.rsplit(".", 1)[-1] or "View"
        flags = [f for f, on in (("clickable", self.clickable), ("long-clickable", self.long_clickable),
                                 ("editable", self.editable), ("scrollable", self.scrollable),
                                 ("focused", self.focused)) if on]
        if self.checkable:
            flags.append(f"checked={str(self.checked).lower()}")
        if not self.enabled:
            flags.append("disabled")
        extra = f" ({', '.join(flags)})" if flags else ""
        return f'[{self.index}] {kind} "{self.label}"{extra}'


def _flag(node: ET.Element, name: str) -> bool:
    return node.get(name, "false") == "true"


def parse_ui_xml(xml: str | bytes, screen: tuple[int, int] | None = None) -> list[UIElement]:
    """Parse a ``uiautomator dump`` into the numbered list of actionable/labelled elements.

    Raises:
        ObservationError: the text is not XML, has no ``<hierarchy>``, or a node has unreadable bounds.
    """
    if isinstance(xml, bytes):
        xml = xml.decode("utf-8", errors="replace")
    start = xml.find("<?xml")
    if start < 0:
        start = xml.find("<hierarchy")
    if start < 0:
        raise ObservationError(f"UI dump has no <hierarchy>: {xml[:80]!r}")
    end = xml.rfind("</hierarchy>")
    body = xml[start:end + len("</hierarchy>")] if end >= 0 else xml[start:]
    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        raise ObservationError(f"UI dump is malformed XML: {e}") from None
    if root.tag != "hierarchy":
        raise ObservationError(f"UI dump root is <{root.tag}>, expected <hierarchy>")
    elements: list[UIElement] = []
    for node in root.iter("node"):
        m = BOUNDS.fullmatch(node.get("bounds", ""))
        if not m:
            raise ObservationError(f"node has unreadable bounds {node.get('bounds')!r}")
        x1, y1, x2, y2 = (int(v) for v in m.groups())
        if screen is not None:
            x1, y1 = max(x1, 0), max(y1, 0)
            x2, y2 = min(x2, screen[0]), min(y2, screen[1])
        if x2 <= x1 or y2 <= y1 or not _flag(node, "visible-to-user") and node.get("visible-to-user"):
            continue
        cls = node.get("class", "")
        editable = "EditText" in cls
        el = UIElement(
            index=len(elements), bounds=(x1, y1, x2, y2), text=node.get("text", ""),
            resource_id=node.get("resource-id", ""), content_desc=node.get("content-desc", ""),
            class_name=cls, package=node.get("package", ""), clickable=_flag(node, "clickable"),
            long_clickable=_flag(node, "long-clickable"), checkable=_flag(node, "checkable"),
            checked=_flag(node, "checked"), enabled=node.get("enabled", "true") == "true",
            focused=_flag(node, "focused"), scrollable=_flag(node, "scrollable"), editable=editable,
        )
        if el.clickable or el.long_clickable or el.checkable or el.editable or el.scrollable or el.text or el.content_desc:
            elements.append(el)
    return elements


def element_list(elements: list[UIElement]) -> str:
    """The compact element list a prompt carries, one line per element."""
    return "\n".join(el.describe() for el in elements)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def set_of_mark(image: Image.Image, elements: list[UIElement], screen: tuple[int, int] | None = None) -> Image.Image:
    """Draw a numbered box around every element (set-of-mark prompting). Boxes are scaled from device
    space to the image when the screenshot is not at device resolution."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    sx = out.width / screen[0] if screen else 1.0
    sy = out.height / screen[1] if screen else 1.0
    font = _font(max(12, out.width // 40))
    for el in elements:
        colour = MARK_COLOURS[el.index % len(MARK_COLOURS)]
        x1, y1, x2, y2 = el.bounds
        box = (x1 * sx, y1 * sy, x2 * sx - 1, y2 * sy - 1)
        draw.rectangle(box, outline=colour, width=2)
        tag = str(el.index)
        tx0, ty0, tx1, ty1 = draw.textbbox((box[0], box[1]), tag, font=font)
        draw.rectangle((tx0 - 2, ty0 - 2, tx1 + 2, ty1 + 2), fill=colour)
        draw.text((box[0], box[1]), tag, fill="white", font=font)
    return out


@dataclass
class Observation:
    """What one ``observe()`` returns: the raw screenshot and dump, the parsed elements, the app."""

    screenshot_png: bytes
    ui_xml: str
    elements: list[UIElement]
    screen: tuple[int, int]
    package: str = ""
    extra: dict = field(default_factory=dict)

    def image(self) -> Image.Image:
        return Image.open(io.BytesIO(self.screenshot_png)).convert("RGB")

    def marked_image(self) -> Image.Image:
        return set_of_mark(self.image(), self.elements, self.screen)

    def prompt_text(self) -> str:
        w, h = self.screen
        return f"screen {w}x{h}, app {self.package or 'unknown'}\n{element_list(self.elements)}"

    @classmethod
    def from_raw(cls, png: bytes, xml: str, screen: tuple[int, int]) -> Observation:
        elements = parse_ui_xml(xml, screen)
        package = next((e.package for e in elements if e.package), "")
        return cls(screenshot_png=png, ui_xml=xml, elements=elements, screen=screen, package=package)
