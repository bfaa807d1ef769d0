"""Safety: flag sensitive actions, ask for confirmation, keep to an app allow-list, redact secrets.

A sensitive action is judged by what it touches: the target element's text, description and
resource id, and the app it is in (``send`` in Messages, ``delete`` anywhere, ``pay``, ``install``,
``sign in``). Such an action runs only when the confirmation callback approves it; otherwise the
device is not touched and the result says ``blocked``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from tools.android.actions import Action, InputText, KeyboardEnter, OpenApp, parse_action, resolve_app
from tools.android.device import ActionResult, BaseDevice
from tools.android.observation import Observation, UIElement

Category = Literal["send", "delete", "pay", "install", "login"]
REDACTED = "[secret]"
SUBMITS = ("send", "login", "pay")  # what ENTER in a form can trigger (it never deletes or installs)
LAUNCHER_PACKAGES = {"com.android.launcher3", "com.google.android.apps.nexuslauncher"}  # home is always allowed


@dataclass(frozen=True)
class SensitiveRule:
    """Flags actions whose target's label matches ``pattern`` (in ``packages``, or any app when empty)."""

    category: Category
    pattern: str
    packages: frozenset[str] = frozenset()

    def matches(self, label: str, package: str) -> bool:
        if self.packages and package not in self.packages:
            return False
        return re.search(self.pattern, label, re.I) is not None


DEFAULT_RULES = (
    SensitiveRule("send", r"\b(send|reply|post|share|submit)\b"),
    SensitiveRule("delete", r"\b(delete|erase|uninstall|wipe|clear data|factory reset)\b"),
    SensitiveRule("pay", r"\b(pay|buy|purchase|checkout|place order|transfer|subscribe)\b"),
    SensitiveRule("install", r"\b(install|update)\b", frozenset({"com.android.vending"})),
    SensitiveRule("install", r"\binstall\b"),
    SensitiveRule("login", r"\b(sign ?in|log ?in|login)\b"),
)


@dataclass
class ConfirmationRequest:
    """What the user is asked to approve."""

    category: Category
    action: dict
    description: str
    package: str


Confirm = Callable[[ConfirmationRequest], bool]


def deny_all(request: ConfirmationRequest) -> bool:
    return False


def target_element(action: Action, obs: Observation | None) -> UIElement | None:
    """The element an action touches: by index, else the smallest element under (x, y)."""
    if obs is None:
        return None
    index = getattr(action, "index", None)
    if index is not None:
        return obs.elements[index] if index < len(obs.elements) else None
    x, y = getattr(action, "x", None), getattr(action, "y", None)
    if x is None or y is None:
        return None
    hits = [e for e in obs.elements if e.bounds[0] <= x < e.bounds[2] and e.bounds[1] <= y < e.bounds[3]]
    return min(hits, key=lambda e: (e.bounds[2] - e.bounds[0]) * (e.bounds[3] - e.bounds[1]), default=None)


@dataclass
class SafetyPolicy:
    """Rules plus an optional allow-list of packages (``None`` allows every app)."""

    rules: tuple[SensitiveRule, ...] = DEFAULT_RULES
    allowed_packages: set[str] | None = None

    def check_app(self, package: str) -> str | None:
        """A reason to refuse working in ``package``, or None."""
        if self.allowed_packages is None or package in self.allowed_packages or package in LAUNCHER_PACKAGES:
            return None
        return f"app {package} is not on the allow-list ({', '.join(sorted(self.allowed_packages))})"

    def sensitive(self, action: Action, obs: Observation | None) -> tuple[Category, str] | None:
        """(category, description) when the action needs the user's approval."""
        if isinstance(action, KeyboardEnter):
            return self._enter_may_submit(obs)
        if isinstance(action, InputText):
            return None  # tapping a field and typing into it is not itself sensitive
        el = target_element(action, obs)
        if el is None:
            return None
        label = " ".join(filter(None, (el.text, el.content_desc, el.resource_id.rsplit("/", 1)[-1].replace("_", " "))))
        package = el.package or (obs.package if obs else "")
        for rule in self.rules:
            if rule.matches(label, package):
                return rule.category, f"{action.action_type} on '{el.label}' in {package}"
        return None


    def _enter_may_submit(self, obs: Observation | None) -> tuple[Category, str] | None:
        """ENTER in a focused field on a screen with a Send/Sign-in/Pay button may submit it (chat apps
        send on enter), so it needs the same approval as that button."""
        if obs is None or not any(e.focused and e.editable for e in obs.elements):
            return None
        for el in obs.elements:
            label = " ".join(filter(None, (el.text, el.content_desc)))
            for rule in self.rules:
                if rule.category in SUBMITS and el.clickable and rule.matches(label, el.package or obs.package):
                    return rule.category, f"keyboard_enter next to '{el.label}' in {obs.package}"
        return None


@dataclass
class GuardedDevice:
    """Wraps a device: enforces the allow-list and asks ``confirm`` before sensitive actions."""

    device: BaseDevice
    policy: SafetyPolicy = field(default_factory=SafetyPolicy)
    confirm: Confirm = deny_all
    requests: list[ConfirmationRequest] = field(default_factory=list)
    """Every confirmation asked for (approved or not), for audits and tests."""

    def observe(self) -> Observation:
        return self.device.observe()

    def screen_size(self) -> tuple[int, int]:
        return self.device.screen_size()

    def act(self, action: Action | dict | str) -> ActionResult:
        if not hasattr(action, "action_type"):
            action = parse_action(action, self.device.screen_size())
        obs = self.device.last_observation
        if getattr(action, "index", None) is None and getattr(action, "x", None) is not None or obs is None:
            # judge a coordinate target on the screen as it is now, not as it was at the last observe();
            # a fresh dump without a screenshot, so the caller's element indices stay valid
            obs = Observation.from_raw(b"", self.device.ui_dump(), self.device.screen_size())
        if isinstance(action, OpenApp):
            package = resolve_app(action.app_name, self.device.apps())
            reason = self.policy.check_app(package) if package else None
        else:
            reason = self.policy.check_app(obs.package) if obs and obs.package else None
        if reason:
            return ActionResult(action=action.to_json(), ok=False, blocked=True, message=reason)
        flagged = self.policy.sensitive(action, obs)
        if flagged is not None:
            category, description = flagged
            request = ConfirmationRequest(category, action.to_json(), description, obs.package if obs else "")
            self.requests.append(request)
            if not self.confirm(request):
                return ActionResult(action=action.to_json(), ok=False, blocked=True,
                                    message=f"{category} action not approved: {description}")
        return self.device.act(action)

    @property
    def last_observation(self) -> Observation | None:
        return self.device.last_observation


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret value in ``text`` (for logs, prompts and recordings)."""
    for value in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text
