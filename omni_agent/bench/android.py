"""``omni-agent bench android``: the task suite's oracles through both backends, and step latency.

Runs the simulated phone, a private adb server (its own port, killed afterwards) and a websocket
bridge on 127.0.0.1; every oracle trajectory runs through the ADB backend and through the bridge.
A step is one observe (screenshot + UI dump) plus one action, the unit an agent pays per decision.
"""

from __future__ import annotations

import statistics
from typing import Any

from omni_agent.bench import BenchContext, benchmark

QUICK_TASKS = ("wifi_on", "send_hello_alice", "alarm_0730")  # one per app kind, a sensitive one included


def run_suite(ctx: BenchContext) -> dict[str, Any]:
    from tools.android.safety import GuardedDevice
    from tools.android.tasks import TASKS, run_oracle
    from tools.android.testing import rig

    tasks = [t for t in TASKS if not ctx.quick or t.name in QUICK_TASKS]
    step_ms: dict[str, list[float]] = {"adb": [], "ws": []}
    solved, runs, failed = 0, 0, []
    with rig(token="bench", device_id="bench-sim") as r:
        for name, device in (("adb", r.adb_device()), ("ws", r.ws_device())):
            for task in tasks:
                r.sim.reset()
                guarded = GuardedDevice(device, confirm=lambda request: True)  # the oracle's user approves
                episode = run_oracle(guarded, task)
                step_ms[name].extend(episode.step_ms)
                runs += 1
                if task.check(r.sim.state, episode):
                    solved += 1
                else:
                    failed.append(f"{name}:{task.name}")
    result: dict[str, Any] = {
        "tasks": len(tasks),
        "oracle_success_rate": solved / runs if runs else 0.0,
        "step_ms_p50_adb": round(statistics.median(step_ms["adb"]), 2),
        "step_ms_p50_ws": round(statistics.median(step_ms["ws"]), 2),
        "steps": len(step_ms["adb"]) + len(step_ms["ws"]),
    }
    if failed:
        result["failed"] = ",".join(failed)
    return result


@benchmark("android", help="Android task suite: oracle success through adb and the websocket bridge, step latency")
def bench_android(ctx: BenchContext) -> dict[str, Any]:
    return run_suite(ctx)
