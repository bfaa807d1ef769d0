"""The simulated apps: launcher, Settings (toggles, Accounts), Messages, Contacts, Clock.

Each screen is a function ``(phone, arg) -> list[Node]`` that lays its widgets out top to bottom and
attaches handlers that change :class:`~tools.android.sim.state.PhoneState` or the screen stack.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tools.android.sim.state import (
    CLOCK,
    CONTACTS,
    LAUNCHER,
    MESSAGES,
    SETTINGS,
    SIM_APPS,
    TOGGLES,
    Alarm,
    Contact,
    Message,
)
from tools.android.sim.widgets import Node

if TYPE_CHECKING:
    from tools.android.sim.phone import Phone

STATUS_H = 48  # status bar height at 720 px width; everything scales with the screen width
TITLE_H = 112
ROW_H = 120
PAD = 24


class Page:
    """A top-to-bottom layout cursor for one screen."""

    def __init__(self, phone: Phone, package: str, title: str | None) -> None:
        self.phone, self.package = phone, package
        self.u = phone.w / 720
        self.nodes: list[Node] = []
        self.y = self.px(STATUS_H)
        if title is not None:
            self.add("title", self.px(TITLE_H), text=title, rid=f"{package}:id/toolbar_title")

    def px(self, v: float) -> int:
        return int(round(v * self.u))

    def add(self, kind: str, height: int, *, x1: int | None = None, x2: int | None = None, advance: bool = True,
            **kw: Any) -> Node:
        x1 = self.px(PAD) if x1 is None else x1
        x2 = self.phone.w - self.px(PAD) if x2 is None else x2
        node = Node(kind, (x1, self.y, x2, self.y + height), package=self.package, **kw)
        self.nodes.append(node)
        if advance:
            self.y += height
        return node

    def edit(self, key: str, hint: str, *, password: bool = False, on_enter: Callable[[], None] | None = None,
             rid: str = "") -> Node:
        p = self.phone
        return self.add("edit", self.px(96), text=p.fields.get(key, ""), hint=hint, field=key, password=password,
                        focused=p.focus == key, on_enter=on_enter, rid=rid or f"{self.package}:id/{key}")

    def gap(self, v: float = 16) -> None:
        self.y += self.px(v)

    def bottom_button(self, text: str, on_tap: Callable[[], None], *, desc: str = "", rid: str = "") -> Node:
        h = self.px(100)
        node = Node("button", (self.px(PAD), self.phone.h - h - self.px(PAD), self.phone.w - self.px(PAD),
                               self.phone.h - self.px(PAD)), text=text, desc=desc, package=self.package,
                    rid=rid, on_tap=on_tap)
        self.nodes.append(node)
        return node


# --------------------------------------------------------------------------- launcher


def home(phone: Phone, arg: Any) -> list[Node]:
    page = Page(phone, LAUNCHER, None)
    size, cols = page.px(150), 4
    gap = (phone.w - cols * size) // (cols + 1)
    top = phone.h // 3
    for i, (label, package) in enumerate(SIM_APPS.items()):
        x1 = gap + (i % cols) * (size + gap)
        y1 = top + (i // cols) * (size + page.px(60))
        page.nodes.append(Node("icon", (x1, y1, x1 + size, y1 + size), text=label, desc=label, package=LAUNCHER,
                               rid=f"{LAUNCHER}:id/icon", on_tap=lambda p=package: phone.launch(p)))
    return page.nodes


# --------------------------------------------------------------------------- settings


def settings(phone: Phone, arg: Any) -> list[Node]:
    page = Page(phone, SETTINGS, "Settings")
    st = phone.state
    list_top = page.y
    rows: list[tuple[str, str, Callable[[], None], bool | None]] = [
        (key, label, lambda k=key: phone.toggle(k), st.toggles[key]) for key, label in TOGGLES.items()]
    rows.append(("accounts", "Accounts", lambda: phone.push("accounts"), None))
    row_h = page.px(ROW_H)
    content_h = row_h * len(rows)
    viewport = phone.h - list_top
    offset = phone.clamp_scroll("settings", content_h - viewport)
    page.nodes.append(Node("list", (0, list_top, phone.w, phone.h), package=SETTINGS, scrollable=True,
                           rid=f"{SETTINGS}:id/recycler_view"))
    for i, (key, label, tap, checked) in enumerate(rows):
        y1 = list_top + i * row_h - offset
        if y1 < list_top or y1 + row_h > phone.h:
            continue  # only rows fully inside the viewport are on screen, as RecyclerView recycles the rest
        kind = "switch" if checked is not None else "row"
        page.nodes.append(Node(kind, (page.px(PAD), y1, phone.w - page.px(PAD), y1 + row_h), text=label,
                               checked=checked, package=SETTINGS, on_tap=tap, rid=f"{SETTINGS}:id/{key}"))
    return page.nodes


def accounts(phone: Phone, arg: Any) -> list[Node]:
    page = Page(phone, SETTINGS, "Accounts")
    st = phone.state
    if st.account:
        page.add("text", page.px(90), text=f"Signed in as {st.account}")
        page.bottom_button("Sign out", phone.sign_out, rid=f"{SETTINGS}:id/sign_out")
        return page.nodes
    page.edit("email", "Email")
    page.gap()
    page.edit("password", "Password", password=True)
    page.bottom_button("Sign in", phone.sign_in, rid=f"{SETTINGS}:id/sign_in")
    return page.nodes


# --------------------------------------------------------------------------- messages


def messages(phone: Phone, arg: Any) -> list[Node]:
    page = Page(phone, MESSAGES, "Messages")
    for name, thread in phone.state.conversations.items():
        preview = thread[-1].text if thread else ""
        page.add("row", page.px(ROW_H), text=f"{name}: {preview}", desc=name, rid=f"{MESSAGES}:id/conversation",
                 on_tap=lambda n=name: phone.push("conversation", n))
    page.bottom_button("Start chat", lambda: phone.push("new_chat"), desc="Start chat", rid=f"{MESSAGES}:id/start_chat")
    return page.nodes


def new_chat(phone: Phone, arg: Any) -> list[Node]:
    page = Page(phone, MESSAGES, "New conversation")
    for c in phone.state.contacts:
        page.add("row", page.px(ROW_H), text=c.name, desc=c.phone, rid=f"{MESSAGES}:id/contact_row",
                 on_tap=lambda n=c.name: phone.open_conversation(n))
    return page.nodes


def conversation(phone: Phone, name: str) -> list[Node]:
    page = Page(phone, MESSAGES, name)
    page.nodes.append(Node("image", (phone.w - page.px(120), page.px(STATUS_H), phone.w - page.px(PAD),
                                     page.px(STATUS_H + TITLE_H)), desc="Delete conversation", package=MESSAGES,
                           rid=f"{MESSAGES}:id/delete", on_tap=lambda: phone.confirm_dialog(
                               f"Delete conversation with {name}?", "Delete", lambda: phone.delete_conversation(name))))
    for m in phone.state.conversations.get(name, [])[-8:]:
        mine = m.sender == "me"
        half = phone.w // 5
        text = m.text + (" \u2665" if m.liked else "")
        page.add("bubble", page.px(84), text=text, desc="liked" if m.liked else "",
                 x1=half if mine else None, x2=None if mine else phone.w - half, rid=f"{MESSAGES}:id/message_text",
                 on_double=lambda msg=m: phone.like(msg))
        page.gap(12)
    send_x = phone.w - page.px(150)
    bottom = phone.h - page.px(PAD)
    top = bottom - page.px(96)
    compose = "compose"
    page.nodes.append(Node("edit", (page.px(PAD), top, send_x - page.px(12), bottom), text=phone.fields.get(compose, ""),
                           hint="Text message", field=compose, focused=phone.focus == compose, package=MESSAGES,
                           rid=f"{MESSAGES}:id/compose_message_text"))
    page.nodes.append(Node("button", (send_x, top, phone.w - page.px(PAD), bottom), text="Send", desc="Send SMS",
                           package=MESSAGES, rid=f"{MESSAGES}:id/send_message_button",
                           on_tap=lambda: phone.send_message(name)))
    return page.nodes


# --------------------------------------------------------------------------- contacts


def contacts(phone: Phone, arg: Any) -> list[Node]:
    page = Page(phone, CONTACTS, "Contacts")
    for c in sorted(phone.state.contacts, key=lambda c: c.name):
        star = " \u2605" if c.starred else ""
        page.add("row", page.px(ROW_H), text=c.name + star, desc=c.name, rid=f"{CONTACTS}:id/contact_name",
                 on_tap=lambda n=c.name: phone.push("contact", n))
    page.bottom_button("Create contact", lambda: phone.push("new_contact"), desc="Create contact",
                       rid=f"{CONTACTS}:id/fab")
    return page.nodes


def contact(phone: Phone, name: str) -> list[Node]:
    c = phone.state.contact(name)
    if c is None:
        phone.pop()
        return phone.nodes()
    page = Page(phone, CONTACTS, c.name)
    page.add("text", page.px(90), text=f"Phone {c.phone}", rid=f"{CONTACTS}:id/phone")
    page.gap()
    label = "Remove from favourites" if c.starred else "Add to favourites"
    page.add("switch", page.px(ROW_H), text="Favourite", desc=label, checked=c.starred,
             rid=f"{CONTACTS}:id/star", on_tap=lambda: phone.star(c))
    page.gap()
    page.add("button", page.px(100), text="Delete", desc="Delete contact", rid=f"{CONTACTS}:id/delete",
             on_tap=lambda: phone.confirm_dialog(f"Delete {c.name}?", "Delete", lambda: phone.delete_contact(c)))
    return page.nodes


def new_contact(phone: Phone, arg: Any) -> list[Node]:
    page = Page(phone, CONTACTS, "Create contact")
    page.edit("name", "Name", on_enter=lambda: phone.set_focus("phone"))
    page.gap()
    page.edit("phone", "Phone")
    page.bottom_button("Save", phone.save_contact, rid=f"{CONTACTS}:id/save")
    return page.nodes


# --------------------------------------------------------------------------- clock


def clock(phone: Phone, arg: Any) -> list[Node]:
    page = Page(phone, CLOCK, "Alarms")
    for a in sorted(phone.state.alarms, key=lambda a: (a.hour, a.minute)):
        def ask_delete(a: Alarm = a) -> None:
            phone.confirm_dialog(f"Delete alarm {a.label}?", "Delete", lambda: phone.delete_alarm(a))

        row = page.add("switch", page.px(ROW_H), text=a.label, desc=f"{a.label} alarm", checked=a.enabled,
                       rid=f"{CLOCK}:id/onoff", on_tap=lambda a=a: phone.toggle_alarm(a))
        row.on_long = ask_delete
    page.bottom_button("Add alarm", lambda: phone.push("new_alarm"), desc="Add alarm", rid=f"{CLOCK}:id/fab")
    return page.nodes


def new_alarm(phone: Phone, arg: Any) -> list[Node]:
    page = Page(phone, CLOCK, "New alarm")
    page.edit("hour", "Hour (0-23)", on_enter=lambda: phone.set_focus("minute"))
    page.gap()
    page.edit("minute", "Minute (0-59)")
    page.bottom_button("Save", phone.save_alarm, rid=f"{CLOCK}:id/save")
    return page.nodes


SCREENS: dict[str, Callable[[Phone, Any], list[Node]]] = {
    "home": home, "settings": settings, "accounts": accounts, "messages": messages, "new_chat": new_chat,
    "conversation": conversation, "contacts": contacts, "contact": contact, "new_contact": new_contact,
    "clock": clock, "new_alarm": new_alarm,
}
ROOTS = {SETTINGS: "settings", MESSAGES: "messages", CONTACTS: "contacts", CLOCK: "clock"}
"""Package -> its launch screen."""

__all__ = ["SCREENS", "ROOTS", "Page", "Contact", "Message"]
