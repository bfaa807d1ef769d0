"""Draw the simulated screen with Pillow: one look per widget kind, light and dark themes."""

from __future__ import annotations

import io
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from tools.android.sim.widgets import Node

PNG_LEVEL = 1  # zlib level 1: a 720x1280 UI screenshot encodes in a few ms and stays small (flat colours)
LIGHT = {"bg": "#fafafa", "fg": "#1f1f1f", "muted": "#757575", "card": "#ffffff", "line": "#e0e0e0",
         "accent": "#1a73e8", "on_accent": "#ffffff", "status": "#e8eaed", "bubble_me": "#d3e3fd",
         "bubble": "#eeeeee", "icon": "#4285f4", "scrim": "#00000066"}
DARK = {"bg": "#121212", "fg": "#e8eaed", "muted": "#9aa0a6", "card": "#1e1e1e", "line": "#3c4043",
        "accent": "#8ab4f8", "on_accent": "#202124", "status": "#000000", "bubble_me": "#394457",
        "bubble": "#2d2e31", "icon": "#8ab4f8", "scrim": "#00000099"}


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType
        return ImageFont.load_default()


def _text(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], text: str, colour: str, size: int,
          *, centre: bool = False) -> None:
    x1, y1, x2, y2 = box
    f = font(size)
    while text and draw.textlength(text, font=f) > (x2 - x1) - 8 and len(text) > 3:
        text = text[:-4] + "\u2026"
    tw = draw.textlength(text, font=f)
    x = (x1 + x2 - tw) / 2 if centre else x1 + 16
    draw.text((x, (y1 + y2) / 2), text, fill=colour, font=f, anchor="lm")


def render_png(nodes: list[Node], size: tuple[int, int], *, dark: bool, status: str, dialog: bool) -> bytes:
    w, h = size
    c = DARK if dark else LIGHT
    u = w / 720
    img = Image.new("RGB", size, c["bg"])
    draw = ImageDraw.Draw(img, "RGBA")
    draw.rectangle((0, 0, w, int(48 * u)), fill=c["status"])
    _text(draw, (0, 0, w, int(48 * u)), status, c["fg"], int(22 * u))
    body = int(30 * u)
    for n in nodes:
        box = n.bounds
        if dialog and n.kind == "dialog":
            draw.rectangle((0, 0, w, h), fill=c["scrim"])
        match n.kind:
            case "title":
                _text(draw, box, n.text, c["fg"], int(40 * u))
                draw.line((0, box[3] - 1, w, box[3] - 1), fill=c["line"], width=1)
            case "icon":
                draw.rounded_rectangle(box, radius=int(36 * u), fill=c["icon"])
                _text(draw, box, n.text[:1], c["on_accent"], int(60 * u), centre=True)
                _text(draw, (box[0] - 20, box[3], box[2] + 20, box[3] + int(44 * u)), n.text, c["fg"], int(24 * u),
                      centre=True)
            case "row" | "switch":
                draw.line((box[0], box[3] - 1, box[2], box[3] - 1), fill=c["line"], width=1)
                _text(draw, (box[0], box[1], box[2] - int(130 * u), box[3]), n.text, c["fg"], body)
                if n.checked is not None:
                    tw, th = int(88 * u), int(44 * u)
                    cy = (box[1] + box[3]) // 2
                    track = (box[2] - tw - 8, cy - th // 2, box[2] - 8, cy + th // 2)
                    draw.rounded_rectangle(track, radius=th // 2, fill=c["accent"] if n.checked else c["line"])
                    kx = track[2] - th // 2 if n.checked else track[0] + th // 2
                    draw.ellipse((kx - th // 2 + 4, cy - th // 2 + 4, kx + th // 2 - 4, cy + th // 2 - 4), fill="#ffffff")
            case "edit":
                colour = c["accent"] if n.focused else c["line"]
                draw.rounded_rectangle(box, radius=int(12 * u), outline=colour, width=3 if n.focused else 2, fill=c["card"])
                shown = n.shown_text() or n.hint
                _text(draw, box, shown + ("|" if n.focused else ""), c["fg"] if n.text else c["muted"], body)
            case "button" | "image":
                draw.rounded_rectangle(box, radius=int(24 * u), fill=c["accent"])
                _text(draw, box, n.text or ("\U0001F5D1" if "Delete" in n.desc else n.desc), c["on_accent"], body,
                      centre=True)
            case "bubble":
                mine = box[0] > w // 10
                draw.rounded_rectangle(box, radius=int(24 * u), fill=c["bubble_me"] if mine else c["bubble"])
                _text(draw, box, n.text, c["fg"], body)
            case "dialog":
                draw.rounded_rectangle(box, radius=int(24 * u), fill=c["card"])
            case "text":
                _text(draw, box, n.text, c["fg"], body)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=PNG_LEVEL)
    return buf.getvalue()
