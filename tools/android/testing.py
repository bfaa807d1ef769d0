"""Helpers for tests and benchmarks: a private adb server, a simulator wired to adb and the bridge."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tools.android.adb import AdbDevice, kill_server, start_server
from tools.android.bridge import DeviceBridge, WsDevice
from tools.android.device import SecretStore
from tools.android.sim import SimulatedDevice
from tools.android.tasks import SECRETS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def adb_server(port: int | None = None) -> Iterator[int]:
    """An adb server on its own port (never the user's 5037), killed on exit."""
    port = port or free_port()
    start_server(port)
    try:
        yield port
    finally:
        kill_server(port)


@dataclass
class Rig:
    sim: SimulatedDevice
    adb_port: int
    bridge: DeviceBridge
    device_id: str

    def adb_device(self) -> AdbDevice:
        return AdbDevice(self.sim.serial, port=self.adb_port, secrets=SecretStore(dict(SECRETS)))

    def ws_device(self) -> WsDevice:
        return WsDevice(self.bridge, self.device_id, secrets=SecretStore(dict(SECRETS)))


@contextmanager
def rig(token: str = "test-token", device_id: str = "sim") -> Iterator[Rig]:
    """Simulator + private adb server + websocket bridge with the simulator joined."""
    sim = SimulatedDevice().start()
    bridge = DeviceBridge(token).start()
    try:
        with adb_server() as port:
            sim.join_bridge(bridge.url, token, name=device_id)
            bridge.wait_for_device(device_id)
            yield Rig(sim, port, bridge, device_id)
    finally:
        sim.stop()
        bridge.stop()
