"""Trajectory recording (one JSONL line + one screenshot per step) and replay.

Layout of a recording folder::

    steps.jsonl        {"step": 0, "goal": ..., "package": ..., "elements": [...], "action": {...},
                        "result": {...}, "screenshot": "step_000.png", "elapsed_ms": ..., "time": ...}
    step_000.png       the screen the action was chosen on
    step_000.som.png   the same with set-of-mark boxes (when ``marks=True``)

Secrets never reach the file: actions keep ``{"secret": name}`` and the element list is redacted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tools.android.device import ActionResult
from tools.android.observation import Observation
from tools.android.safety import redact

STEPS_FILE = "steps.jsonl"


class Recorder:
    """Writes a trajectory into ``folder`` as it happens."""

    def __init__(self, folder: str | Path, *, secrets: Iterable[str] = (), marks: bool = False) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.secrets = [s for s in secrets if s]
        self.marks = marks
        self._file = (self.folder / STEPS_FILE).open("a", encoding="utf-8")

    def record(self, step: int, obs: Observation, result: ActionResult, *, goal: str = "") -> None:
        shot = f"step_{step:03d}.png"
        (self.folder / shot).write_bytes(obs.screenshot_png)
        if self.marks:
            obs.marked_image().save(self.folder / f"step_{step:03d}.som.png")
        line = {
            "step": step, "goal": goal, "package": obs.package, "screen": list(obs.screen),
            "elements": [redact(e.describe(), self.secrets) for e in obs.elements],
            "action": result.action, "result": {k: v for k, v in asdict(result).items() if k != "action"},
            "screenshot": shot, "elapsed_ms": round(result.elapsed_ms, 2), "time": time.time(),
        }
        self._file.write(redact(json.dumps(line, ensure_ascii=False), self.secrets) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load(folder: str | Path) -> list[dict[str, Any]]:
    """The recorded steps, in order."""
    path = Path(folder) / STEPS_FILE
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def replay(folder: str | Path, device: Any, *, check_package: bool = True) -> list[ActionResult]:
    """Re-run a recording's actions on ``device`` (observing before each, so indices resolve).

    Raises:
        RuntimeError: when ``check_package`` and the device is in a different app than recorded.
    """
    results = []
    for step in load(folder):
        obs = device.observe()
        if check_package and step["package"] and obs.package != step["package"]:
            raise RuntimeError(f"step {step['step']}: device shows {obs.package}, recording had {step['package']}")
        results.append(device.act(step["action"]))
        if results[-1].done or results[-1].blocked:
            break
    return results
