"""The simulated phone's data: settings, messages, contacts, alarms, account. Task checkers read it."""

from __future__ import annotations

from dataclasses import dataclass, field

LAUNCHER = "com.android.launcher3"
SETTINGS = "com.android.settings"
MESSAGES = "com.google.android.apps.messaging"
CONTACTS = "com.google.android.contacts"
CLOCK = "com.google.android.deskclock"
IME = "com.android.adbkeyboard"

SIM_APPS = {"Settings": SETTINGS, "Messages": MESSAGES, "Contacts": CONTACTS, "Clock": CLOCK}
"""Launcher label -> package of the apps the simulator ships."""

# Settings rows in screen order: key -> label (more rows than fit on one screen, so some tasks scroll)
TOGGLES = {
    "wifi": "Wi-Fi",
    "bluetooth": "Bluetooth",
    "airplane": "Airplane mode",
    "mobile_data": "Mobile data",
    "location": "Location",
    "dnd": "Do not disturb",
    "battery_saver": "Battery saver",
    "nfc": "NFC",
    "auto_rotate": "Auto-rotate screen",
    "dark_theme": "Dark theme",
}


@dataclass
class Message:
    sender: str
    """``"me"`` or the contact's name."""
    text: str
    liked: bool = False


@dataclass
class Contact:
    name: str
    phone: str
    starred: bool = False


@dataclass
class Alarm:
    hour: int
    minute: int
    enabled: bool = True

    @property
    def label(self) -> str:
        return f"{self.hour:02d}:{self.minute:02d}"


@dataclass
class PhoneState:
    """Everything a task can change; the initial values are the tasks' starting point."""

    toggles: dict[str, bool] = field(default_factory=lambda: {
        "wifi": False, "bluetooth": True, "airplane": False, "mobile_data": True, "location": True,
        "dnd": False, "battery_saver": False, "nfc": False, "auto_rotate": True, "dark_theme": False})
    conversations: dict[str, list[Message]] = field(default_factory=lambda: {
        "Alice": [Message("Alice", "Are we still on for lunch?")],
        "Bob": [Message("Bob", "Call me when you land")],
        "Carol": [Message("Carol", "Your parcel is at the door")],
    })
    contacts: list[Contact] = field(default_factory=lambda: [
        Contact("Alice", "555-0101"), Contact("Bob", "555-0102"), Contact("Carol", "555-0103")])
    alarms: list[Alarm] = field(default_factory=lambda: [Alarm(6, 0), Alarm(8, 15)])
    account: str | None = None
    """The signed-in account's e-mail (Settings > Accounts)."""
    last_password: str | None = None
    """What was typed into the password field at sign-in (so a checker can verify the secret went in)."""

    def contact(self, name: str) -> Contact | None:
        return next((c for c in self.contacts if c.name.lower() == name.lower()), None)

    def sent(self, name: str) -> list[str]:
        return [m.text for m in self.conversations.get(name, []) if m.sender == "me"]

    def summary(self) -> dict:
        """A JSON-able snapshot for checkers across process boundaries."""
        return {
            "toggles": dict(self.toggles),
            "conversations": {k: [vars(m) for m in v] for k, v in self.conversations.items()},
            "contacts": [vars(c) for c in self.contacts],
            "alarms": [vars(a) for a in self.alarms],
            "account": self.account,
        }
