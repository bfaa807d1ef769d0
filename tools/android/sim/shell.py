"""A tiny ``/system/bin/sh`` for the simulator: the commands ADB tooling sends to a phone.

Supports ``;``, ``&&``, ``||``, a ``| grep`` filter and ``$?``, plus: ``input`` (tap, swipe, text,
keyevent), ``screencap``, ``uiautomator dump``, ``am broadcast`` (ADBKeyboard IME), ``am start``,
``am force-stop``, ``monkey``, ``wm size``, ``pm list packages``, ``getprop``, ``dumpsys window``,
``ime``, ``cat``, ``rm``, ``echo``, ``sleep``, ``true``/``false``.
"""

from __future__ import annotations

import base64
import binascii
import shlex
import time

from tools.android.sim.phone import Phone

DEFAULT_DUMP = "/sdcard/window_dump.xml"  # where a bare `uiautomator dump` writes
PROPS = {"ro.product.model": "OmniSim", "ro.product.name": "omni_sim", "ro.product.device": "omni_sim",
         "ro.product.manufacturer": "omni-agent", "ro.build.version.release": "14", "ro.build.version.sdk": "34",
         "ro.serialno": "OMNISIM0001"}
NOT_FOUND = 127  # POSIX shell: command not found
MAX_SLEEP_S = 5.0


class SimShell:
    """Runs command lines against a :class:`Phone`; a small file store backs ``cat``/``rm``."""

    def __init__(self, phone: Phone) -> None:
        self.phone = phone
        self.files: dict[str, bytes] = {}
        self.dump_failures = 0
        """Make the next N ``uiautomator dump`` calls fail as if the screen were animating."""

    def run(self, line: str) -> tuple[bytes, int]:
        """Run one command line; returns (stdout+stderr, exit status)."""
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        try:
            tokens = list(lexer)
        except ValueError as e:
            return f"/system/bin/sh: syntax error: {e}\n".encode(), 2
        out, rc = b"", 0
        cmd: list[str] = []
        op = ";"
        pipe_to: list[str] | None = None
        for tok in [*tokens, ";"]:
            if tok in (";", "&&", "||", "&"):
                if cmd:
                    run_it = op in (";", "&") or (op == "&&" and rc == 0) or (op == "||" and rc != 0)
                    if run_it:
                        chunk, rc = self._one(cmd, rc)
                        if pipe_to is not None:
                            chunk = _grep(chunk, pipe_to)
                        out += chunk
                cmd, op, pipe_to = [], tok, None
            elif tok == "|":
                pipe_to = []
            elif pipe_to is not None:
                pipe_to.append(tok)
            else:
                cmd.append(tok)
        return out, rc

    def _one(self, argv: list[str], last_rc: int) -> tuple[bytes, int]:
        argv = [a.replace("$?", str(last_rc)) for a in argv]
        name, args = argv[0], argv[1:]
        handler = getattr(self, "cmd_" + name.replace("-", "_"), None)
        if handler is None:
            return f"/system/bin/sh: {name}: inaccessible or not found\n".encode(), NOT_FOUND
        try:
            return handler(args)
        except (ValueError, IndexError) as e:
            return f"{name}: bad arguments {args!r}: {e}\n".encode(), 1

    # ----------------------------------------------------------------- coreutils
    def cmd_echo(self, args: list[str]) -> tuple[bytes, int]:
        return (" ".join(args) + "\n").encode(), 0

    def cmd_true(self, args: list[str]) -> tuple[bytes, int]:
        return b"", 0

    def cmd_false(self, args: list[str]) -> tuple[bytes, int]:
        return b"", 1

    def cmd_sleep(self, args: list[str]) -> tuple[bytes, int]:
        time.sleep(min(float(args[0]), MAX_SLEEP_S))
        return b"", 0

    def cmd_cat(self, args: list[str]) -> tuple[bytes, int]:
        out, rc = b"", 0
        for path in args:
            if path in self.files:
                out += self.files[path]
            else:
                out, rc = out + f"cat: {path}: No such file or directory\n".encode(), 1
        return out, rc

    def cmd_rm(self, args: list[str]) -> tuple[bytes, int]:
        for path in (a for a in args if not a.startswith("-")):
            self.files.pop(path, None)
        return b"", 0

    def cmd_getprop(self, args: list[str]) -> tuple[bytes, int]:
        if args:
            return (PROPS.get(args[0], "") + "\n").encode(), 0
        return "".join(f"[{k}]: [{v}]\n" for k, v in PROPS.items()).encode(), 0

    # ----------------------------------------------------------------- android tools
    def cmd_screencap(self, args: list[str]) -> tuple[bytes, int]:
        png = self.phone.screenshot()
        paths = [a for a in args if not a.startswith("-")]
        if paths:
            self.files[paths[0]] = png
            return b"", 0
        return png, 0

    def cmd_uiautomator(self, args: list[str]) -> tuple[bytes, int]:
        if not args or args[0] != "dump":
            return b"Usage: uiautomator dump [--compressed] [file]\n", 1
        if self.dump_failures > 0:
            self.dump_failures -= 1
            return b"ERROR: could not get idle state.\n", 1
        paths = [a for a in args[1:] if not a.startswith("-")]
        path = paths[0] if paths else DEFAULT_DUMP
        xml = self.phone.dump_xml().encode("utf-8")
        if path == "/dev/tty":
            return xml + b"UI hierchary dumped to: /dev/tty\n", 0
        self.files[path] = xml
        return f"UI hierchary dumped to: {path}\n".encode(), 0  # sic: uiautomator's own spelling

    def cmd_input(self, args: list[str]) -> tuple[bytes, int]:
        if args[:1] == ["-d"]:
            args = args[2:]
        if args and args[0] in ("touchscreen", "keyboard", "touchpad"):
            args = args[1:]
        sub, rest = args[0], args[1:]
        p = self.phone
        if sub == "tap":
            p.tap(int(float(rest[0])), int(float(rest[1])))
        elif sub in ("swipe", "draganddrop"):
            ms = int(rest[4]) if len(rest) > 4 else 300
            p.swipe(*(int(float(v)) for v in rest[:4]), ms)
        elif sub == "keyevent":
            for code in (r for r in rest if not r.startswith("--")):
                p.key(code)
        elif sub == "text":
            p.type_text(" ".join(rest).replace("%s", " "))
        else:
            return f"Error: Unknown command: {sub}\n".encode(), 1
        return b"", 0

    def cmd_am(self, args: list[str]) -> tuple[bytes, int]:
        sub = args[0]
        if sub == "broadcast":
            action = args[args.index("-a") + 1] if "-a" in args else ""
            extras = {args[i + 1]: args[i + 2] for i, a in enumerate(args) if a == "--es" and i + 2 < len(args)}
            header = f"Broadcasting: Intent {{ act={action} flg=0x400000 (has extras) }}\n"
            if action == "ADB_INPUT_B64":
                try:
                    text = base64.b64decode(extras.get("msg", ""), validate=True).decode("utf-8")
                except (binascii.Error, UnicodeDecodeError):
                    return (header + "Broadcast completed: result=0\n").encode(), 0
                self.phone.type_text(text)
            elif action == "ADB_INPUT_TEXT":
                self.phone.type_text(extras.get("msg", ""))
            elif action == "ADB_CLEAR_TEXT":
                with self.phone.lock:
                    if self.phone.focus:
                        self.phone.fields[self.phone.focus] = ""
                        self.phone.version += 1
            return (header + "Broadcast completed: result=-1\n").encode(), 0
        if sub == "start":
            comp = args[args.index("-n") + 1] if "-n" in args else ""
            package = comp.split("/", 1)[0]
            if not self.phone.launch(package):
                return f"Error: Activity class {{{comp}}} does not exist.\n".encode(), 1
            return f"Starting: Intent {{ cmp={comp} }}\n".encode(), 0
        if sub == "force-stop":
            if self.phone.package == args[1]:
                with self.phone.lock:
                    self.phone.go_home()
                    self.phone.version += 1
            return b"", 0
        return f"Error: unknown am command {sub}\n".encode(), 1

    def cmd_monkey(self, args: list[str]) -> tuple[bytes, int]:
        package = args[args.index("-p") + 1] if "-p" in args else ""
        if not self.phone.launch(package):
            return b"** No activities found to run, monkey aborted.\n", 252
        return b"  bash arg: -p\n  bash arg: " + package.encode() + b"\nEvents injected: 1\n## Network stats: elapsed time=5ms\n", 0

    def cmd_wm(self, args: list[str]) -> tuple[bytes, int]:
        if args[:1] == ["size"]:
            return f"Physical size: {self.phone.w}x{self.phone.h}\n".encode(), 0
        if args[:1] == ["density"]:
            return b"Physical density: 320\n", 0
        return b"", 1

    def cmd_pm(self, args: list[str]) -> tuple[bytes, int]:
        if args[:2] == ["list", "packages"]:
            return "".join(f"package:{p}\n" for p in self.phone.packages()).encode(), 0
        return b"", 1

    def cmd_ime(self, args: list[str]) -> tuple[bytes, int]:
        if args[:1] == ["set"]:
            return f"Input method {args[1]} selected for user #0\n".encode(), 0
        return b"com.android.adbkeyboard/.AdbIME\n", 0

    def cmd_dumpsys(self, args: list[str]) -> tuple[bytes, int]:
        if args[:1] == ["display"]:
            w, h = self.phone.w, self.phone.h
            return f"  mDisplayInfo: real {w} x {h}, orientation=0, rotation 0\n".encode(), 0
        pkg = self.phone.package
        return (f"  mCurrentFocus=Window{{1 u0 {pkg}/{pkg}.MainActivity}}\n"
                f"  mFocusedApp=ActivityRecord{{2 u0 {pkg}/.MainActivity t1}}\n").encode(), 0


def _grep(data: bytes, argv: list[str]) -> bytes:
    if not argv or argv[0] != "grep":
        return data
    pattern = [a for a in argv[1:] if not a.startswith("-")]
    if not pattern:
        return data
    return b"".join(line for line in data.splitlines(keepends=True) if pattern[0].encode() in line)
