"""The simulated device: a :class:`Phone`, its shell and an adb daemon on 127.0.0.1."""

from __future__ import annotations

from tools.android.sim.adbd import AdbDaemon
from tools.android.sim.phone import DEFAULT_SIZE, Phone
from tools.android.sim.shell import SimShell
from tools.android.sim.state import PhoneState


class SimulatedDevice:
    """A phone for tests and demos that ``adb connect`` and ``adbutils`` drive unchanged.

    Example:
        >>> sim = SimulatedDevice().start()          # doctest: +SKIP
        >>> sim.serial                               # doctest: +SKIP
        '127.0.0.1:40231'                            # then: adb connect 127.0.0.1:40231
    """

    def __init__(self, size: tuple[int, int] = DEFAULT_SIZE, state: PhoneState | None = None) -> None:
        self.phone = Phone(size, state)
        self.shell = SimShell(self.phone)
        self.daemon: AdbDaemon | None = None
        self._bridge = None

    @property
    def state(self) -> PhoneState:
        """The data a task checker reads (settings, messages, contacts, alarms, account)."""
        return self.phone.state

    @property
    def size(self) -> tuple[int, int]:
        return self.phone.w, self.phone.h

    def start(self, port: int = 0) -> SimulatedDevice:
        """Start the adb daemon (``port`` 0 picks a free one)."""
        if self.daemon is None:
            self.daemon = AdbDaemon(self.shell.run, port, files=self.shell.files).start()
        return self

    @property
    def port(self) -> int:
        if self.daemon is None:
            raise RuntimeError("the simulator's adb daemon is not started (call start())")
        return self.daemon.port

    @property
    def serial(self) -> str:
        """What to ``adb connect`` to."""
        return f"127.0.0.1:{self.port}"

    def reset(self, state: PhoneState | None = None) -> None:
        """Back to the home screen with fresh (or the given) data."""
        with self.phone.lock:
            self.phone.state = state or PhoneState()
            self.phone.go_home()
            self.phone.scroll.clear()
            self.phone.version += 1

    def join_bridge(self, url: str, token: str, *, name: str = "omni-sim"):
        """Connect to a websocket device bridge as a phone-side agent (runs in a background thread)."""
        from tools.android.bridge_client import BridgeAgent

        self._bridge = BridgeAgent(self, url, token, name=name).start()
        return self._bridge

    def stop(self) -> None:
        if self._bridge is not None:
            self._bridge.stop()
            self._bridge = None
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None

    def __enter__(self) -> SimulatedDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
