"""Checks a command runs before it builds a model, and the lines it prints while it does.

A newcomer's mistake (a wrong ``--model-path``, ``--device cuda`` on a CPU machine, an output file
in a folder that does not exist, a busy port) should cost one readable line and a non-zero exit, not
a 30 s model build followed by a traceback. Each ``check_*`` raises :class:`PreflightError` with that
line; ``omni_agent.cli.main`` prints it as ``omni-agent: error: ...`` and exits with its code.

The two other helpers keep a user informed: :func:`random_weights_notice` says once per process
that the weights are random, and :func:`building` reports a model build as it starts and ends.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EXIT_PREFLIGHT = 2  # like argparse and settings errors: the command line asked for something impossible


class PreflightError(Exception):
    """A problem found before any model is built; the message is one line for the user."""

    def __init__(self, message: str, exit_code: int = EXIT_PREFLIGHT) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --------------------------------------------------------------------------------------------------
# files


def check_input_file(path: str | Path, what: str) -> Path:
    """``path`` is a readable file (``what`` names it in the message: "input wav", "image")."""
    p = Path(path)
    if not p.exists():
        raise PreflightError(f"{what} {path} does not exist")
    if not p.is_file():
        raise PreflightError(f"{what} {path} is not a file")
    return p


def check_output_file(path: str | Path, flag: str) -> Path:
    """``path`` can be written: its folder exists and it is not itself a folder."""
    p = Path(path)
    folder = p.parent
    if not folder.is_dir():
        raise PreflightError(f"{flag} {path}: folder {folder} does not exist (create it first)")
    if p.is_dir():
        raise PreflightError(f"{flag} {path} is a folder; give a file name")
    return p


def check_positive(value: int, flag: str) -> int:
    if value < 1:
        raise PreflightError(f"{flag} must be at least 1 (got {value})")
    return value


# --------------------------------------------------------------------------------------------------
# model and device

# What each part reads from a checkpoint folder in Ming's release layout.
PARTS = {
    "thinker": ("config.json",),
    "talker": ("talker",),
    "image": ("mlp", "connector", "transformer", "vae", "scheduler"),
}


def check_model_path(settings: Any, *parts: str) -> None:
    """``--model-path`` (when given) is a folder holding what ``parts`` need (see :data:`PARTS`)."""
    path = settings.model.path
    if not path:
        return
    p = Path(path).expanduser()
    if not p.exists():
        raise PreflightError(f"--model-path {path} does not exist")
    if not p.is_dir():
        raise PreflightError(f"--model-path {path} is not a folder (expected Ming's checkpoint layout)")
    for part in parts or ("thinker",):
        missing = [name for name in PARTS[part] if not (p / name).exists()]
        if missing:
            raise PreflightError(f"--model-path {path} has no {', '.join(missing)} (the {part} of Ming's "
                                 "checkpoint layout); refusing to fall back to random weights")


def check_device(settings: Any, flag: str = "--device") -> None:
    """The torch device parses and exists on this machine (CUDA/MPS available, index in range)."""
    import torch

    name = settings.model.device
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise PreflightError(f"{flag} {name!r} is not a torch device (try cpu, cuda or cuda:0)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise PreflightError(f"{flag} {name}: CUDA is not available ({why}); use {flag} cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise PreflightError(f"{flag} {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise PreflightError(f"{flag} {name}: MPS is not available on this machine; use {flag} cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise PreflightError(f"{flag} {name}: device type {dev.type!r} is not supported (cpu, cuda, mps)")


def check_model(settings: Any, *parts: str, device_flag: str = "--device") -> None:
    """The checks every model-building command shares: the checkpoint folder, then the device."""
    check_model_path(settings, *parts)
    check_device(settings, device_flag)


# --------------------------------------------------------------------------------------------------
# network and phones


def check_port_free(host: str, port: int) -> None:
    """Nothing listens on ``host:port`` (0 picks a free port and always passes)."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            s.bind((host, port))
        except OSError as e:
            raise PreflightError(f"cannot listen on {host}:{port}: {e.strerror or e} "
                                 "(another server is running there? pick one with --port, or --port 0)") from None


def check_task(name: str) -> Any:
    """The simulator task ``name`` exists; returns it."""
    from tools.android.tasks import TASKS

    for task in TASKS:
        if task.name == name:
            return task
    raise PreflightError(f"unknown task {name!r} (known: {', '.join(t.name for t in TASKS)}; "
                         "`omni-agent android tasks` lists them)")


def check_phone(serial: str | None, adb_port: int | None = None) -> str:
    """A phone answers over adb: ``serial`` (``host:port`` serials are connected first), or the only
    device when ``serial`` is None. Returns the serial."""
    from tools.android.adb import AdbError, client, start_server

    hint = "start one with `omni-agent android sim --connect`, or check `adb devices`"
    try:
        c = client(adb_port)
        start_server(c.port)
        if serial and ":" in serial:
            out = c.connect(serial, timeout=10)
            if "connected" not in out:
                raise PreflightError(f"no phone reachable at {serial}: adb connect said {out.strip()!r} ({hint})")
        devices = {d.serial: d.state for d in c.list()}
    except PreflightError:
        raise
    except (AdbError, OSError, RuntimeError) as e:
        raise PreflightError(f"no phone reachable: adb failed: {str(e).splitlines()[0]} ({hint})") from None
    if serial is None:
        if len(devices) != 1:
            raise PreflightError(f"no phone chosen: {len(devices)} attached; pass --device SERIAL ({hint})")
        serial = next(iter(devices))
    if devices.get(serial) != "device":
        state = devices.get(serial)
        why = f"its state is {state!r}" if state else "adb does not list it"
        raise PreflightError(f"no phone reachable at {serial}: {why} ({hint})")
    return serial


# --------------------------------------------------------------------------------------------------
# what the user is told while things run

_told_random = False  # process-wide on purpose: a command that runs others (demo) says it once


def random_weights_notice(settings: Any, command: str) -> bool:
    """Say once per process that the weights are random (no ``--model-path``). Returns whether it did."""
    global _told_random
    if settings.model.path or _told_random:
        return False
    _told_random = True
    print(f"omni-agent {command}: weights are RANDOM ('{settings.model.preset}' preset, seed {settings.model.seed}; "
          "no --model-path): every path is real, the answers, speech and images are gibberish by design",
          file=sys.stderr, flush=True)
    return True


@contextlib.contextmanager
def building(what: str) -> Iterator[None]:
    """Report a model build: a line when it starts and one with its time when it ends."""
    print(f"building {what} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    yield
    print(f"built {what} in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)


def model_label(settings: Any) -> str:
    """``tiny preset (random weights)`` or the checkpoint path, for banners and progress lines."""
    m = settings.model
    return f"checkpoint {m.path}" if m.path else f"'{m.preset}' preset (random weights, seed {m.seed})"
