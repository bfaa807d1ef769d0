"""ADB backend: a phone (or the simulator) behind a real ``adb`` server, driven through ``adbutils``.

Pitfalls handled here:

- ``input text`` is ASCII-only, treats ``%s`` as a space and goes through the device shell, so text is
  shell-quoted and spaces become ``%s``; anything non-ASCII goes through an ADBKeyboard-style IME as
  a base64 broadcast (``am broadcast -a ADB_INPUT_B64 --es msg <b64>``).
- ``uiautomator dump`` fails with ``ERROR: could not get idle state`` while the screen animates; it
  is retried a few times.
- A long press is a swipe that stays on one point for ``LONG_PRESS_MS``.
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Mapping

import adbutils

from tools.android.device import BaseDevice, SecretStore
from tools.android.observation import ObservationError

DUMP_PATH = "/sdcard/window_dump.xml"  # uiautomator's own default location
DUMP_RETRIES = 4  # "could not get idle state" usually clears within a second of animations
DUMP_RETRY_S = 0.3
IME_ACTION = "ADB_INPUT_B64"  # ADBKeyboard (senzhk/ADBKeyBoard) broadcast carrying base64 UTF-8 text
SHELL_TIMEOUT_S = 20.0
DEFAULT_ADB_PORT = 5037  # adb's own default server port
_WM = re.compile(r"(Override|Physical) size: (\d+)x(\d+)")


class AdbError(RuntimeError):
    """The adb server or the device refused a command."""


def escape_input_text(text: str) -> str:
    """Quote ASCII text for ``adb shell input text`` (spaces -> ``%s``, shell-quoted)."""
    if not text.isascii():
        raise ValueError("input text is ASCII-only; use the IME for Unicode")
    return shlex.quote(text.replace(" ", "%s"))


def adb_binary() -> str:
    path = shutil.which("adb")
    if path is None:
        raise AdbError("the `adb` binary is not installed (Debian/Ubuntu: apt-get install adb)")
    return path


def start_server(port: int = DEFAULT_ADB_PORT) -> None:
    """Start an adb server on ``port`` (a no-op when one is running there)."""
    subprocess.run([adb_binary(), "-P", str(port), "start-server"], check=True, capture_output=True, timeout=30)


def kill_server(port: int = DEFAULT_ADB_PORT) -> None:
    subprocess.run([adb_binary(), "-P", str(port), "kill-server"], capture_output=True, timeout=30)


def client(port: int | None = None) -> adbutils.AdbClient:
    port = port or int(os.environ.get("ANDROID_ADB_SERVER_PORT", DEFAULT_ADB_PORT))
    return adbutils.AdbClient(host="127.0.0.1", port=port, socket_timeout=SHELL_TIMEOUT_S)


def list_devices(port: int | None = None) -> list[tuple[str, str]]:
    """(serial, state) of every device the adb server knows."""
    return [(d.serial, d.state) for d in client(port).list()]


class AdbDevice(BaseDevice):
    """A device reached through the adb server.

    Args:
        serial: the adb serial (``emulator-5554``, ``127.0.0.1:5555``, ...). A ``host:port`` serial
            is ``adb connect``-ed first.
        port: the adb server's port (default 5037 or ``ANDROID_ADB_SERVER_PORT``).
    """

    def __init__(self, serial: str | None = None, *, port: int | None = None,
                 apps: Mapping[str, str] | None = None, secrets: SecretStore | None = None) -> None:
        super().__init__(apps=apps, secrets=secrets)
        self.client = client(port)
        if serial and ":" in serial:
            out = self.client.connect(serial, timeout=10)
            if "connected" not in out:
                raise AdbError(f"adb connect {serial} failed: {out}")
        devices = [d for d in self.client.device_list()]
        if serial is None:
            if len(devices) != 1:
                raise AdbError(f"{len(devices)} devices attached; pass a serial ({[d.serial for d in devices]})")
            serial = devices[0].serial
        self.serial = serial
        self.dev = self.client.device(serial)

    def shell(self, cmd: str, *, binary: bool = False, timeout: float = SHELL_TIMEOUT_S) -> str | bytes:
        try:
            if binary:
                return self.dev.shell(cmd, encoding=None, timeout=timeout)
            return self.dev.shell(cmd, timeout=timeout)
        except adbutils.AdbError as e:
            raise AdbError(f"adb shell {cmd[:60]!r} on {self.serial}: {e}") from None

    def _screen_size(self) -> tuple[int, int]:
        out = str(self.shell("wm size"))
        sizes = {kind: (int(w), int(h)) for kind, w, h in _WM.findall(out)}
        size = sizes.get("Override") or sizes.get("Physical")
        if size is None:
            raise AdbError(f"unexpected `wm size` output: {out!r}")
        return size

    def screenshot(self) -> bytes:
        png = self.shell("screencap -p", binary=True)
        assert isinstance(png, bytes)
        if not png.startswith(b"\x89PNG"):
            raise AdbError(f"screencap did not return a PNG: {png[:60]!r}")
        return png

    def ui_dump(self) -> str:
        last = ""
        for attempt in range(DUMP_RETRIES):
            out = str(self.shell(f"uiautomator dump {DUMP_PATH} && cat {DUMP_PATH}"))
            if "<hierarchy" in out:
                return out[out.find("<?xml") if "<?xml" in out else out.find("<hierarchy"):]
            last = out.strip()
            if attempt + 1 < DUMP_RETRIES:
                time.sleep(DUMP_RETRY_S)
        raise ObservationError(f"uiautomator dump failed {DUMP_RETRIES} times: {last[:200]}")

    def tap(self, x: int, y: int) -> None:
        self.shell(f"input tap {x} {y}")

    def double_tap(self, x: int, y: int) -> None:
        # one shell line: two separate round trips through the adb server can exceed the 300 ms double-tap window
        self.shell(f"input tap {x} {y}; input tap {x} {y}")

    def swipe(self, x1: int, y1: int, x2: int, y2: int, ms: int = 300) -> None:
        self.shell(f"input swipe {x1} {y1} {x2} {y2} {ms}")

    def key(self, code: int) -> None:
        self.shell(f"input keyevent {code}")

    def text(self, text: str) -> None:
        lines = text.split("\n")
        for i, line in enumerate(lines):
            if i:
                self.key(66)  # KEYCODE_ENTER between lines: `input text` cannot carry a newline
            if not line:
                continue
            if line.isascii():
                self.shell(f"input text {escape_input_text(line)}")
            else:
                b64 = base64.b64encode(line.encode("utf-8")).decode("ascii")
                out = str(self.shell(f"am broadcast -a {IME_ACTION} --es msg {b64}"))
                if "Broadcast completed" not in out:
                    raise AdbError("the IME did not take the text: is ADBKeyboard installed and selected? "
                                   "(adb shell ime set com.android.adbkeyboard/.AdbIME)")

    def launch(self, package: str) -> None:
        out = str(self.shell(f"monkey -p {shlex.quote(package)} -c android.intent.category.LAUNCHER 1"))
        if "No activities found" in out or "monkey aborted" in out.lower():
            raise AdbError(f"cannot launch {package}: {out.strip()[:200]}")

    def packages(self) -> list[str]:
        out = str(self.shell("pm list packages"))
        return [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("package:")]

    def state(self) -> dict:
        """Device facts for logs: serial, size, current package."""
        return {"serial": self.serial, "size": self.screen_size()}
