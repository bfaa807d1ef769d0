"""Android GUI automation: action space, observation, ADB and websocket backends, a simulated phone.

Heavy parts (adbutils, websockets) load on first use of their modules; importing this package only
brings in the action schema and the observation parser.
"""

from tools.android.actions import Action, ActionError, SecretRef, parse_action, scale_point, validate_action
from tools.android.device import ActionResult, BaseDevice, Device, SecretStore
from tools.android.observation import Observation, ObservationError, UIElement, parse_ui_xml, set_of_mark

__all__ = [
    "Action", "ActionError", "ActionResult", "BaseDevice", "Device", "Observation", "ObservationError",
    "SecretRef", "SecretStore", "UIElement", "parse_action", "parse_ui_xml", "scale_point", "set_of_mark",
    "validate_action",
]
