"""``omni-agent android devices|sim|do|tasks``: drive Android phones (or the simulator) from the shell."""

from __future__ import annotations

import argparse
import json
import sys
import time

from omni_agent.settings import Settings

EXIT_ERROR = 1


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    # No `common` parent: its --device (torch device) would clash with the phone's --device SERIAL.
    p = subparsers.add_parser("android", help="Android GUI automation: list devices, run the simulator, act",
                              description="Drive Android phones through adb, or the built-in simulated phone.")
    p.add_argument("--adb-port", type=int, default=None,
                   help="adb server port (default 5037 or ANDROID_ADB_SERVER_PORT)")
    sub = p.add_subparsers(dest="android_command", metavar="ACTION")

    d = sub.add_parser("devices", help="list the devices the adb server knows")
    d.set_defaults(func=run_devices)

    s = sub.add_parser("sim", help="run the simulated phone (adb wire protocol on 127.0.0.1)")
    s.add_argument("--port", type=int, default=0, help="TCP port for `adb connect` (default: a free one)")
    s.add_argument("--size", default="720x1280", help="screen size WxH (default 720x1280)")
    s.add_argument("--connect", action="store_true", help="also `adb connect` it on the adb server")
    s.add_argument("--bridge", metavar="WS_URL", help="also join this websocket device bridge as a phone")
    s.add_argument("--token", default="", help="token for --bridge")
    s.add_argument("--exit-after", type=float, default=None, metavar="S", help="stop after S seconds (scripts, tests)")
    s.set_defaults(func=run_sim)

    a = sub.add_parser("do", help="run one action (AndroidWorld JSON or a model's call) on a device")
    a.add_argument("action", help='e.g. \'{"action_type": "open_app", "app_name": "Settings"}\' or "click(x=0.5,y=0.2)"')
    a.add_argument("--device", "-s", dest="serial", default=None, metavar="SERIAL",
                   help="adb serial (host:port serials are `adb connect`-ed first); default: the only device")
    a.add_argument("--yes", action="store_true", help="approve sensitive actions (send, delete, pay, ...) without asking")
    a.add_argument("--observe", action="store_true", help="print the element list after the action")
    a.add_argument("--screenshot", metavar="PNG", help="save a set-of-mark screenshot after the action")
    a.set_defaults(func=run_do)

    t = sub.add_parser("tasks", help="list the simulator's task suite")
    t.set_defaults(func=run_tasks)
    p.set_defaults(func=lambda args, settings: (p.print_help(), 2)[1])


def run_devices(args: argparse.Namespace, settings: Settings) -> int:
    from tools.android.adb import AdbError, client, list_devices, start_server

    try:
        start_server(args.adb_port or client().port)
        devices = list_devices(args.adb_port)
    except (AdbError, OSError, RuntimeError) as e:
        print(f"omni-agent: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    if not devices:
        print("no devices (start the simulator with `omni-agent android sim --connect`)")
    for serial, state in devices:
        print(f"{serial}\t{state}")
    return 0


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h)


def run_sim(args: argparse.Namespace, settings: Settings) -> int:
    from tools.android.sim import SimulatedDevice

    sim = SimulatedDevice(_size(args.size)).start(args.port)
    print(f"simulator serial: {sim.serial}", flush=True)
    print(f"connect with:     adb connect {sim.serial}", flush=True)
    if args.connect:
        from tools.android.adb import client, start_server

        c = client(args.adb_port)
        start_server(c.port)
        print(c.connect(sim.serial, timeout=10), flush=True)
    if args.bridge:
        sim.join_bridge(args.bridge, args.token)
        print(f"joined bridge {args.bridge}", flush=True)
    try:
        deadline = None if args.exit_after is None else time.monotonic() + args.exit_after
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        sim.stop()
    return 0


def _ask(request) -> bool:
    if not sys.stdin.isatty():
        print(f"refused without --yes: {request.description} ({request.category})", file=sys.stderr)
        return False
    answer = input(f"Allow {request.category}: {request.description}? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def run_do(args: argparse.Namespace, settings: Settings) -> int:
    from dataclasses import asdict

    from omni_agent.preflight import check_phone
    from tools.android.actions import ActionError, parse_action
    from tools.android.adb import AdbDevice, AdbError
    from tools.android.observation import ObservationError
    from tools.android.safety import GuardedDevice

    serial = check_phone(args.serial, args.adb_port)  # one line when no phone answers, not a traceback
    try:
        device = AdbDevice(serial, port=args.adb_port)
        guarded = GuardedDevice(device, confirm=(lambda r: True) if args.yes else _ask)
        action = parse_action(args.action, device.screen_size())
        if getattr(action, "index", None) is not None or getattr(action, "x", None) is not None:
            device.observe()  # indices refer to this observation; coordinates need it for the safety check
        result = guarded.act(action)
        print(json.dumps(asdict(result), ensure_ascii=False))
        if args.observe or args.screenshot:
            obs = device.observe()
            if args.observe:
                print(obs.prompt_text())
            if args.screenshot:
                obs.marked_image().save(args.screenshot)
    except (ActionError, AdbError, ObservationError, OSError) as e:
        print(f"omni-agent: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    return 0 if result.ok else EXIT_ERROR


def run_tasks(args: argparse.Namespace, settings: Settings) -> int:
    from tools.android.tasks import TASKS

    for task in TASKS:
        mark = " (needs approval)" if task.sensitive else ""
        print(f"{task.name:22s} {task.goal}{mark}")
    return 0
