"""A simulated Android phone that speaks the adb wire protocol (and can join the websocket bridge)."""

from tools.android.sim.device import SimulatedDevice
from tools.android.sim.phone import Phone
from tools.android.sim.state import SIM_APPS, PhoneState

__all__ = ["SimulatedDevice", "Phone", "PhoneState", "SIM_APPS"]
